"""The demo's step for a lost key: the patient loses key 2 and gets control back with key 1 and
the trusted party; the lost key counts for nothing afterwards, the new one reads the old
records, and hospital B, revoked earlier, still reads nothing new."""

from __future__ import annotations

from carechain.cli.demo.ledger import put_reading, read_inline
from carechain.cli.demo.steps import Story
from carechain.consensus import crypto
from carechain.consensus.ledger.records import Account, Recovery, Vault
from carechain.consensus.ledger.state import Table
from carechain.node.wallet import builders
from carechain.node.wallet.recovery_actions import recovery_handovers


def recovery(story: Story) -> None:
    story.step("The patient loses key 2 and gets control back with key 1 and the trusted party")
    ledger, patient = story.ledger, story.patient_account
    key1, lost = story.patient
    replacement = crypto.PrivateKey.generate()
    start = builders.start_recovery(
        story.chain_id, patient, ledger.nonce(patient), ledger.expiry(),
        lost=lost.public_key, replacement=replacement.public_key,
    )  # fmt: skip
    hospitals_only = start.signed(story.hospital["A"], story.hospital["B"])
    story.check(
        ledger.check(hospitals_only).value == "partial",
        "hospitals A and B together could only leave it waiting: it needs the trusted party",
    )
    ledger.commit(start.signed(key1, story.trusted))
    pending = ledger.state().load(Table.RECOVERY, patient, Recovery)
    story.check(
        pending is not None and pending.fast,
        "key 1 and the trusted party start it: the patient is there, so no waiting window",
    )
    assert pending is not None
    vaults = [ledger.vault(vault_id) for vault_id in sorted(story.vaults.values())]
    handovers = recovery_handovers(
        ledger.state(), vaults, pending, [key1, story.trusted], ledger.time_ms()
    )
    finish = builders.finish_recovery(
        story.chain_id, patient, ledger.nonce(patient), ledger.expiry(),
        [handover for handover, _ in handovers.values()],
    )  # fmt: skip
    height = ledger.commit(finish.signed(key1, story.trusted))
    account = ledger.state().load(Table.ACCOUNT, patient, Account)
    story.check(
        account is not None and account.keys == (key1.public_key, replacement.public_key),
        f"finished at height {height}: the new key holds key 2's place in the account and in "
        f"all {len(vaults)} vaults, each moved to a new epoch",
    )
    for vault_id, (handover, epoch_key) in handovers.items():
        ledger.epoch_keys[(vault_id, handover.new_epoch)] = epoch_key
    glucose = story.vaults["glucose"]
    first_record, first_text = story.glucose_records[0]
    text = read_inline(ledger, glucose, first_record, replacement)
    story.check(text == first_text, "the new key reads the first reading, from epoch 1")
    story.patient = (key1, replacement)
    tx, _ = put_reading(ledger, glucose, b"glucose 5.8 mmol/L (after the recovery)")
    story.check(
        ledger.check(tx.signed_by(key1).signed_by(lost)).value == "partial",
        "a reading signed with key 1 and the lost key would only wait: that key counts no more",
    )
    ledger.commit(tx.signed_by(key1).signed_by(replacement))
    vault = ledger.state().load(Table.VAULT, glucose, Vault)
    b = story.hospital["B"].public_key
    story.check(
        vault is not None
        and ledger.sealed_epoch_key(glucose, vault.epoch, b) is None
        and ledger.sealed_epoch_key(glucose, vault.epoch, lost.public_key) is None,
        "signed with key 1 and the new key it commits; neither hospital B (revoked) nor the "
        "lost key holds the key to it",
    )
