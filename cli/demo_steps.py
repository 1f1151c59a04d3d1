"""The steps of `carechain demo` after genesis, each narrated and checked."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from carechain.cli.demo_ledger import (
    AGENT_RULES,
    Ledger,
    agent_rules,
    fetch_blob,
    print_timeline,
    put_reading,
    read_inline,
    reading,
    replay_roots,
    store_blob,
    timeline,
)
from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import TxStatus
from carechain.consensus.ledger.bodies import PutRecord
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import Emergency, EmergencyStatus, RecordEntry
from carechain.consensus.ledger.state import Table
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Tx, Vote, VoteType
from carechain.node import builders
from carechain.node.agent_rules import decide

CGM_REPORT_BYTES = 3 * 1024 * 1024
VAULT_TYPES = ("glucose", "cgm", "blood-pressure")


@dataclasses.dataclass
class Story:
    """What the steps share: the scenario recorder, the cast and the ledger."""

    scenario: object  # cli.demo.Scenario (kept loose to avoid an import cycle)
    patient: tuple[crypto.PrivateKey, crypto.PrivateKey]
    hospital: dict[str, crypto.PrivateKey]
    trusted: crypto.PrivateKey
    ledger: Ledger
    vaults: dict[str, bytes] = dataclasses.field(default_factory=dict)
    glucose_records: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    grant_id: bytes = b""
    cgm: tuple[bytes, str, bytes] = (b"", "", b"")  # record id, content id, plaintext

    def step(self, title: str) -> None:
        self.scenario.step(title)  # type: ignore[attr-defined]

    def say(self, text: str) -> None:
        self.scenario.say(text)  # type: ignore[attr-defined]

    def check(self, ok: bool, claim: str) -> None:
        self.scenario.check(ok, claim)  # type: ignore[attr-defined]

    @property
    def patient_account(self) -> bytes:
        return crypto.account_id(self.patient[0].public_key)

    @property
    def chain_id(self) -> str:
        return self.ledger.chain.chain.chain_id

    def commit(self, tx: Tx) -> None:
        self.ledger.chain.commit(tx)

    def rejection(self, tx: Tx) -> str:
        try:
            self.ledger.chain.commit(tx)
        except TxRejected as reason:
            return reason.code
        return "accepted"


def vaults(story: Story) -> None:
    story.step(
        "The patient registers with two keys and opens glucose, CGM and blood-pressure vaults"
    )
    p1, p2 = story.patient
    keys = (p1.public_key, p2.public_key)
    ledger = story.ledger
    story.commit(builders.register_patient(story.chain_id, keys, ledger.expiry()).signed(p1, p2))
    team = [story.hospital["A"].public_key]
    for data_type in VAULT_TYPES:
        draft, epoch_key = builders.create_vault(
            story.chain_id,
            story.patient_account,
            ledger.nonce(story.patient_account),
            ledger.expiry(),
            data_type=data_type,
            template=Template.PATIENT_CONTROLLED,
            team=team,
            members={*keys, *team, story.trusted.public_key},
        )
        story.commit(draft.signed(p1, p2))
        vault_id = vault_id_of(story.patient_account, data_type)
        story.vaults[data_type] = vault_id
        ledger.epoch_keys[(vault_id, 1)] = epoch_key
    story.say(f"patient account {crypto.encode_address(story.patient_account)}")
    story.check(
        all(ledger.vault(v).epoch == 1 for v in story.vaults.values()),
        "three patient-controlled vaults exist at epoch 1, hospital A on their team",
    )
    glucose = ledger.vault(story.vaults["glucose"])
    story.check(
        story.trusted.public_key in glucose.members
        and story.hospital["A"].public_key in glucose.members,
        "the epoch key is sealed to the patient's keys, hospital A and the trusted party (escrow)",
    )


def home_readings(story: Story) -> None:
    story.step("Self-measured readings arrive from home (signed by both patient keys)")
    p1, p2 = story.patient
    for index in range(3):
        plaintext = reading("glucose", index)
        tx, record_id = put_reading(story.ledger, story.vaults["glucose"], plaintext)
        story.commit(tx.signed_by(p1).signed_by(p2))
        story.glucose_records.append((record_id, plaintext))
        story.say(plaintext.decode())
    for index in range(2):
        tx, _ = put_reading(story.ledger, story.vaults["blood-pressure"], reading("bp", index))
        story.commit(tx.signed_by(p1).signed_by(p2))
    story.check(
        story.ledger.vault(story.vaults["glucose"]).record_count == 3
        and story.ledger.vault(story.vaults["blood-pressure"]).record_count == 2,
        "3 glucose and 2 blood-pressure records are on chain, encrypted",
    )


def _synthetic_cgm(size: int) -> Iterator[bytes]:
    """A deterministic stand-in for a CGM export: a reading every 5 minutes, as CSV."""
    produced, minute = 0, 0
    while produced < size:
        line = (
            f"2026-11-{1 + (minute // 1440) % 28:02d},{minute % 1440},{90 + (minute * 7) % 110}\n"
        )
        chunk = (line * 512).encode()[: size - produced]
        produced += len(chunk)
        minute += 5
        yield chunk


def cgm_report(story: Story) -> None:
    story.step("Hospital A files a 3 MB CGM report; the patient's agent co-signs it by rule")
    ledger, hospital_a = story.ledger, story.hospital["A"]
    vault_id = story.vaults["cgm"]
    plaintext = b"".join(_synthetic_cgm(CGM_REPORT_BYTES))
    record_id = next(ledger.record_ids).to_bytes(16, "big")
    epoch_key = ledger.epoch_keys[(vault_id, 1)]
    data_key = crypto.new_data_key()
    ciphertext = b"".join(crypto.encrypt_stream(data_key, [plaintext]))
    content_id = store_blob(ledger, ciphertext)
    story.say(f"{len(plaintext):,} bytes encrypted and stored as blob {content_id}")
    body = PutRecord(
        record_id,
        "cgm",
        content_id,
        len(plaintext),
        1,
        crypto.encrypt_small(epoch_key, data_key),
        b"",
        ledger.chain.time_ms,
    )
    draft = builders.TxDraft(
        story.chain_id, "record.put", vault_id, ledger.nonce(vault_id), ledger.expiry(), body
    )
    partial = draft.signed(hospital_a)
    story.check(
        ledger.chain.classify(partial).status is TxStatus.PARTIAL,
        "signed by hospital A alone, the report is a partial transaction",
    )
    patient_keys = frozenset(k.public_key for k in story.patient)
    decision = decide(agent_rules(hospital_a.public_key), partial, patient_keys)
    story.say(f"agent: {decision.reason}")
    story.check(decision.sign, f"the agent's rule ({AGENT_RULES}) matches")
    complete = partial.signed_by(story.patient[0])
    story.check(
        ledger.chain.classify(complete).status is TxStatus.COMPLETE, "co-signed, it is complete"
    )
    story.commit(complete)
    story.cgm = (record_id, content_id, plaintext)
    unsolicited, _ = put_reading(ledger, story.vaults["glucose"], b"glucose 9.9 mmol/L")
    from_b = unsolicited.signed_by(story.hospital["B"])
    refused = decide(agent_rules(hospital_a.public_key), from_b, patient_keys)
    story.check(
        not refused.sign and ledger.chain.classify(from_b).status is TxStatus.PARTIAL,
        f"a glucose record hospital B initiates is not co-signed ({refused.reason})",
    )


def _receipt(
    story: Story, reader: str, vault_id: bytes, record_id: bytes, grant_id: bytes = b""
) -> Tx:
    key = story.hospital[reader]
    account = crypto.account_id(key.public_key)
    draft = builders.receipt(
        story.chain_id,
        key.public_key,
        story.ledger.nonce(account),
        story.ledger.expiry(),
        vault=vault_id,
        record_id=record_id,
        grant_id=grant_id,
    )
    return draft.signed(key)


def grant_and_read(story: Story) -> None:
    story.step("Hospital B is granted 30 days of glucose access and reads the records")
    ledger, vault_id, b = story.ledger, story.vaults["glucose"], story.hospital["B"]
    draft = builders.grant(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        grantee=b.public_key,
        epoch_key=ledger.epoch_keys[(vault_id, 1)],
        valid_from_ms=ledger.chain.time_ms,
        valid_until_ms=ledger.chain.time_ms + 30 * builders.DAY_MS,
        purpose="TREAT",
    )
    grant = draft.signed(*story.patient)
    story.commit(grant)
    story.grant_id = grant.id
    read = [read_inline(ledger, vault_id, rid, b) for rid, _ in story.glucose_records]
    story.check(
        read == [text for _, text in story.glucose_records], "hospital B decrypts all 3 readings"
    )
    for record_id, _ in story.glucose_records:
        story.commit(_receipt(story, "B", vault_id, record_id, grant.id))
    story.check(
        ledger.vault(vault_id).receipt_count == 3, "3 read receipts by hospital B are on chain"
    )


def revoke(story: Story) -> None:
    story.step("The patient revokes hospital B; the epoch rotates; a new record is unreadable by B")
    ledger, vault_id, b = story.ledger, story.vaults["glucose"], story.hospital["B"]
    old_key = crypto.unseal(ledger.sealed_epoch_key(vault_id, 1, b.public_key) or b"", b)
    readers = {
        *(k.public_key for k in story.patient),
        story.hospital["A"].public_key,
        story.trusted.public_key,
    }
    draft, new_key = builders.revoke(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        grant_id=story.grant_id,
        new_epoch=2,
        remaining_members=readers,
    )
    story.commit(draft.signed(*story.patient))
    ledger.epoch_keys[(vault_id, 2)] = new_key
    tx, record_id = put_reading(ledger, vault_id, b"glucose 6.3 mmol/L (after revocation)")
    story.commit(tx.signed_by(story.patient[0]).signed_by(story.patient[1]))
    entry = ledger.state().load(Table.RECORD, vault_id + record_id, RecordEntry)
    story.check(entry is not None and entry.epoch == 2, "the new record is under epoch 2")
    story.check(
        ledger.sealed_epoch_key(vault_id, 2, b.public_key) is None, "no epoch-2 key is sealed to B"
    )
    try:
        crypto.decrypt_small(old_key, entry.sealed_data_key if entry else b"")
        story.check(False, "B's old epoch key cannot open the new record")
    except DecodeError:
        story.check(True, "B's old epoch key cannot open the new record's data key")
    code = story.rejection(_receipt(story, "B", vault_id, record_id, story.grant_id))
    story.check(code == "grant_revoked", f"B's read receipt for it is rejected: {code}")
    text = read_inline(ledger, vault_id, record_id, story.hospital["A"])
    story.check(text.startswith(b"glucose 6.3"), "team hospital A still reads it")


def emergency(story: Story) -> None:
    story.step(
        "Emergency: hospital C and the trusted party open the CGM vault, then it is reviewed"
    )
    ledger, vault_id, c = story.ledger, story.vaults["cgm"], story.hospital["C"]
    draft = builders.open_emergency(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        hospital=c.public_key,
        epoch_key=ledger.epoch_keys[(vault_id, 1)],
        reason="unconscious",
        duration_ms=4 * 3_600_000,
        note="admitted unconscious to the emergency department",
    )
    code = story.rejection(draft.signed(c))
    story.check(code == "policy_not_satisfied", f"hospital C alone is refused: {code}")
    opened = draft.signed(c, story.trusted)
    story.commit(opened)
    record_id, content_id, plaintext = story.cgm
    entry = ledger.state().load(Table.RECORD, vault_id + record_id, RecordEntry)
    assert entry is not None
    ciphertext = fetch_blob(ledger, content_id)
    story.check(len(ciphertext) > CGM_REPORT_BYTES, "the blob is fetched, every chunk verified")
    epoch_key = crypto.unseal(ledger.sealed_epoch_key(vault_id, 1, c.public_key) or b"", c)
    data_key = crypto.decrypt_small(epoch_key, entry.sealed_data_key)
    story.check(
        b"".join(crypto.decrypt_stream(data_key, [ciphertext])) == plaintext,
        "hospital C decrypts the 3 MB CGM report",
    )
    story.commit(_receipt(story, "C", vault_id, record_id, opened.id))
    status = ledger.state().load(Table.EMERGENCY, opened.id, Emergency)
    story.check(
        status is not None and status.status is EmergencyStatus.UNREVIEWED,
        "the access shows as unreviewed",
    )
    review = builders.review_emergency(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        emergency_id=opened.id,
        verdict=EmergencyStatus.APPROPRIATE,
        note="patient confirms the emergency",
    )
    story.commit(review.signed(*story.patient))
    status = ledger.state().load(Table.EMERGENCY, opened.id, Emergency)
    story.check(
        status is not None and status.status is EmergencyStatus.APPROPRIATE,
        "the patient reviewed it",
    )


def signatures(story: Story, validator: crypto.PrivateKey) -> None:
    story.step("Signatures are domain-separated")
    vote = Vote(
        story.chain_id, VoteType.PRECOMMIT, 1, 0, b"\x01" * 32, validator.public_key
    ).signed_by(validator)
    replayed = crypto.verify(
        validator.public_key, crypto.Purpose.TX, story.chain_id, b"\x01" * 32, vote.signature
    )
    story.check(
        vote.signature_valid() and not replayed,
        "a validator's vote cannot pass as a transaction signature",
    )


def audit(story: Story, genesis: Genesis, names: dict[bytes, str]) -> None:
    story.step("The patient's access timeline, and a replay of every block")
    vault_names = {v: t for t, v in story.vaults.items()}
    events = timeline(story.ledger, vault_names, names)
    print_timeline(events)
    kinds = [kind for _, kind, _ in events]
    story.check(
        kinds.count("read") == 4 and kinds.count("grant") == 1 and kinds.count("emergency") == 1,
        "the timeline shows 1 grant (revoked), 4 reads and 1 reviewed emergency",
    )
    blocks, mismatches = replay_roots(story.ledger, genesis)
    story.check(not mismatches, f"re-executing all {blocks} blocks reproduces every state root")
    story.ledger.chain.store.verify()
    story.check(True, "the LevelDB state verifies against its root by a full scan")
