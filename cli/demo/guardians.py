"""The demo's step for those who act for others: a carer becomes the patient's guardian and
co-signs a reading hospital A files, and hospital A renews its key without losing what it
reads (its copies of epoch keys resealed to the new key, the old key counting for nothing)."""

from __future__ import annotations

from carechain.cli.demo.ledger import put_reading, read_inline
from carechain.cli.demo.steps import Story
from carechain.consensus import crypto
from carechain.consensus.ledger.records import GuardianScope, RecordEntry
from carechain.consensus.ledger.state import Table
from carechain.node.wallet import builders
from carechain.node.wallet.client import RemoteState
from carechain.node.wallet.institution_actions import copies_to_reseal
from carechain.node.wallet.recovery_actions import all_epoch_keys, epoch_key_of


def guardian_and_renewed_key(story: Story) -> None:
    story.step("A carer becomes the patient's guardian; hospital A renews its key")
    ledger, patient = story.ledger, story.patient_account
    key1, key2 = story.patient
    carer = crypto.PrivateKey.generate()
    vaults = [ledger.vault(vault_id) for vault_id in sorted(story.vaults.values())]
    state = ledger.state()
    epoch_keys = {vault.vault_id: all_epoch_keys(state, vault, [key1]) for vault in vaults}
    named = builders.add_guardian(
        story.chain_id, patient, ledger.nonce(patient), ledger.expiry(),
        guardian=carer.public_key, scope=GuardianScope.COSIGN, epoch_keys=epoch_keys,
    )  # fmt: skip
    ledger.commit(named.signed(key1, key2))
    story.check(
        all(ledger.sealed_epoch_key(v.vault_id, v.epoch, carer.public_key) for v in vaults),
        f"the patient names a carer as a cosign guardian: every epoch key of its {len(vaults)} "
        "vaults is sealed to the carer",
    )
    glucose = story.vaults["glucose"]
    text = b"glucose 6.2 mmol/L (filed by hospital A, co-signed by the carer)"
    tx, record = put_reading(ledger, glucose, text)
    a = story.hospital["A"]
    ledger.commit(tx.signed_by(a).signed_by(carer))
    story.check(
        read_inline(ledger, glucose, record, carer) == text,
        "hospital A files a reading and the carer co-signs it for the patient, then reads it",
    )
    grant = builders.grant(
        story.chain_id, glucose, ledger.nonce(glucose), ledger.expiry(),
        grantee=story.hospital["C"].public_key,
        epoch_key=epoch_key_of(ledger.state(), ledger.vault(glucose), ledger.vault(glucose).epoch,
                               [key1]),
        valid_from_ms=ledger.time_ms(), valid_until_ms=ledger.time_ms() + 86_400_000,
    )  # fmt: skip
    story.check(
        ledger.check(grant.signed(carer)).value == "partial",
        "the carer alone cannot grant access: it stands for one patient key, not two",
    )

    renewed = crypto.PrivateKey.generate()
    hospital_a = crypto.account_id(a.public_key)
    rotation = builders.rotate_institution_key(
        story.chain_id, hospital_a, ledger.nonce(hospital_a), ledger.expiry(), renewed.public_key
    )
    ledger.commit(rotation.signed(a, renewed))
    copies, _ = copies_to_reseal(RemoteState(ledger.client), a.public_key, a, renewed)
    resealed = builders.reseal(
        story.chain_id, hospital_a, ledger.nonce(hospital_a), ledger.expiry(), copies
    )
    ledger.commit(resealed.signed(renewed))
    entry = ledger.state().load(Table.RECORD, glucose + record, RecordEntry)
    assert entry is not None
    copy = ledger.sealed_epoch_key(glucose, entry.epoch, a.public_key)
    assert copy is not None
    opened = builders.open_inline_record(
        entry.inline_ciphertext, entry.sealed_data_key, copy, renewed
    )
    story.check(
        opened == text,
        f"hospital A renews its key: its {len(copies)} epoch key copies are resealed to the new "
        "key, which reads the carer's reading; teams and grants still name hospital A",
    )
    old_key_tx, _ = put_reading(ledger, glucose, b"glucose 6.0 mmol/L")
    story.check(
        ledger.check(old_key_tx.signed_by(a).signed_by(key1)).value == "partial",
        "a reading signed with key 1 and hospital A's old key would only wait: that key is retired",
    )
