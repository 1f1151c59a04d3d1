"""The steps of `carechain demo` on a running 4-validator network, each narrated and checked.

Hospital A runs node 0, hospital B node 1, hospital C node 2; the patient's phone talks to
node 3. Everything goes through the nodes' HTTP APIs and the validators' consensus."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from carechain.cli.demo.ledger import (
    AGENT_RULES,
    Ledger,
    agent_rules,
    print_timeline,
    put_reading,
    read_inline,
    reading,
    replay,
)
from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError
from carechain.consensus.ledger.apply import TxStatus
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.ledger.bodies import PutRecord
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import Emergency, EmergencyStatus, RecordEntry
from carechain.consensus.ledger.state import Table
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Tx, TxSignature
from carechain.node.audit.access_report import fhir_bundle, timeline
from carechain.node.wallet import builders
from carechain.node.wallet.agent_rules import decide
from carechain.node.wallet.client import ApiRequestError, Client, RemoteState

CGM_REPORT_BYTES = 3 * 1024 * 1024
VAULT_TYPES = ("glucose", "cgm", "blood-pressure")


@dataclasses.dataclass
class Story:
    """What the steps share: the checks, the cast, the network's clients."""

    check: Callable[[bool, str], None]
    say: Callable[[str], None]
    step: Callable[[str], None]
    patient: tuple[crypto.PrivateKey, crypto.PrivateKey]
    hospital: dict[str, crypto.PrivateKey]
    trusted: crypto.PrivateKey
    ledger: Ledger
    clients: dict[str, Client]  # "A", "B", "C", "patient"
    kill: Callable[[str], None]
    vaults: dict[str, bytes] = dataclasses.field(default_factory=dict)
    glucose_records: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    grant_id: bytes = b""
    cgm: tuple[bytes, str, bytes] = (b"", "", b"")

    @property
    def patient_account(self) -> bytes:
        return crypto.account_id(self.patient[0].public_key)

    @property
    def chain_id(self) -> str:
        return self.ledger.chain_id

    def rejection(self, tx: Tx, client: Client | None = None) -> str:
        try:
            (client or self.ledger.client).submit(tx)
        except ApiRequestError as exc:
            return exc.code
        return "accepted"


def vaults(story: Story) -> None:
    story.step(
        "The patient registers with two keys and opens glucose, CGM and blood-pressure vaults"
    )
    p1, p2 = story.patient
    keys = (p1.public_key, p2.public_key)
    ledger = story.ledger
    height = ledger.commit(
        builders.register_patient(story.chain_id, keys, ledger.expiry()).signed(p1, p2)
    )
    story.say(f"patient account {crypto.encode_address(story.patient_account)} (height {height})")
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
        ledger.commit(draft.signed(p1, p2))
        vault_id = vault_id_of(story.patient_account, data_type)
        story.vaults[data_type] = vault_id
        ledger.epoch_keys[(vault_id, 1)] = epoch_key
    story.check(
        all(ledger.vault(v).epoch == 1 for v in story.vaults.values()),
        "three patient-controlled vaults exist, hospital A on their team",
    )
    glucose = ledger.vault(story.vaults["glucose"])
    story.check(
        {story.trusted.public_key, story.hospital["A"].public_key} <= set(glucose.members),
        "the epoch key is sealed to the patient, hospital A and the trusted party (escrow)",
    )


def home_readings(story: Story) -> None:
    story.step("Self-measured readings arrive from home (signed by both patient keys)")
    p1, p2 = story.patient
    for index in range(3):
        plaintext = reading("glucose", index)
        tx, record_id = put_reading(story.ledger, story.vaults["glucose"], plaintext)
        story.ledger.commit(tx.signed_by(p1).signed_by(p2))
        story.glucose_records.append((record_id, plaintext))
        story.say(plaintext.decode())
    for index in range(2):
        tx, _ = put_reading(story.ledger, story.vaults["blood-pressure"], reading("bp", index))
        story.ledger.commit(tx.signed_by(p1).signed_by(p2))
    story.check(
        story.ledger.vault(story.vaults["glucose"]).record_count == 3
        and story.ledger.vault(story.vaults["blood-pressure"]).record_count == 2,
        "3 glucose and 2 blood-pressure records are committed, encrypted",
    )


def _synthetic_cgm(size: int) -> Iterator[bytes]:
    """A deterministic stand-in for a CGM export: a reading every 5 minutes, as CSV."""
    produced, minute = 0, 0
    while produced < size:
        line = f"2026-11-{1 + (minute // 1440) % 28:02d},{minute % 1440},{90 + minute * 7 % 110}\n"
        chunk = (line * 512).encode()[: size - produced]
        produced += len(chunk)
        minute += 5
        yield chunk


def _run_agent(story: Story, expected: bytes, timeout_s: float = 20) -> list[str]:
    """The patient's agent: watch the patient's node until the `expected` partial arrives (it
    travels by gossip from the node it was submitted to), then co-sign every partial awaiting
    the patient's key that its rules allow; returns its decisions."""
    client, key = story.clients["patient"], story.patient[0]
    patient_keys = frozenset(k.public_key for k in story.patient)
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = client.partials(awaiting=key.public_key)
        if any(p["id"] == expected.hex() for p in waiting) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    decisions = []
    for partial in waiting:
        tx = Tx.decode(bytes.fromhex(partial["tx"]))
        decision = decide(agent_rules(story.hospital["A"].public_key), tx, patient_keys)
        decisions.append(f"{tx.kind} {tx.id.hex()[:8]}: {decision.reason}")
        if decision.sign:
            signature = TxSignature(key.public_key, key.sign(crypto.Purpose.TX, tx.chain_id, tx.id))
            client.cosign(tx.id, signature)
    return decisions


def cgm_report(story: Story) -> None:
    story.step("Hospital A files a 3 MB CGM report; the patient's agent co-signs it by rule")
    ledger, hospital_a, node_a = story.ledger, story.hospital["A"], story.clients["A"]
    vault_id = story.vaults["cgm"]
    plaintext = b"".join(_synthetic_cgm(CGM_REPORT_BYTES))
    data_key = crypto.new_data_key()
    ciphertext = b"".join(crypto.encrypt_stream(data_key, [plaintext]))
    content_id = node_a.blob_put(ciphertext)
    story.say(f"{len(plaintext):,} bytes encrypted and stored at hospital A as blob {content_id}")
    record_id = next(ledger.record_ids).to_bytes(16, "big")
    body = PutRecord(
        record_id,
        "cgm",
        content_id,
        len(plaintext),
        1,
        crypto.encrypt_small(ledger.epoch_keys[(vault_id, 1)], data_key),
        b"",
        ledger.time_ms(),
    )
    draft = builders.TxDraft(
        story.chain_id, "record.put", vault_id, ledger.nonce(vault_id), ledger.expiry(), body
    )
    partial = draft.signed(hospital_a)
    submitted = node_a.submit(partial)
    story.check(
        submitted["status"] == "partial",
        "signed by hospital A alone, it waits as a partial transaction",
    )
    for line in _run_agent(story, partial.id):
        story.say(f"agent: {line}")
    status = node_a.wait_committed(partial.id)
    story.check(
        True, f"the agent applied its rule ({AGENT_RULES}); committed at height {status['height']}"
    )
    story.cgm = (record_id, content_id, plaintext)
    unsolicited, _ = put_reading(ledger, story.vaults["glucose"], b"glucose 9.9 mmol/L")
    from_b = unsolicited.signed_by(story.hospital["B"])
    story.clients["B"].submit(from_b)
    decisions = _run_agent(story, from_b.id)
    time.sleep(0.5)
    still = story.clients["B"].tx_status(from_b.id)["status"]
    story.check(
        still == "partial" and any("no rule matches" in d for d in decisions),
        "a glucose record hospital B initiates is not co-signed: no rule covers it",
    )


def _receipt(
    story: Story, reader: str, vault_id: bytes, record_id: bytes, grant_id: bytes = b""
) -> Tx:
    key = story.hospital[reader]
    draft = builders.receipt(
        story.chain_id,
        key.public_key,
        story.ledger.nonce(crypto.account_id(key.public_key)),
        story.ledger.expiry(),
        vault=vault_id,
        record_id=record_id,
        grant_id=grant_id,
    )
    return draft.signed(key)


def grant_and_read(story: Story) -> None:
    story.step("Hospital B is granted 30 days of glucose access and reads the records")
    ledger, vault_id, b = story.ledger, story.vaults["glucose"], story.hospital["B"]
    now = ledger.time_ms()
    draft = builders.grant(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        grantee=b.public_key,
        epoch_key=ledger.epoch_keys[(vault_id, 1)],
        valid_from_ms=now - 1000,
        valid_until_ms=now + 30 * builders.DAY_MS,
        purpose="TREAT",
    )
    grant = draft.signed(*story.patient)
    ledger.commit(grant)
    story.grant_id = grant.id
    read = [read_inline(ledger, vault_id, rid, b) for rid, _ in story.glucose_records]
    story.check(
        read == [text for _, text in story.glucose_records], "hospital B decrypts all 3 readings"
    )
    for record_id, _ in story.glucose_records:  # each uses B's next nonce: one after another
        receipt = _receipt(story, "B", vault_id, record_id, grant.id)
        story.clients["B"].submit(receipt)
        story.clients["B"].wait_committed(receipt.id)
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
    ledger.commit(draft.signed(*story.patient))
    ledger.epoch_keys[(vault_id, 2)] = new_key
    tx, record_id = put_reading(ledger, vault_id, b"glucose 6.3 mmol/L (after revocation)")
    ledger.commit(tx.signed_by(story.patient[0]).signed_by(story.patient[1]))
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
    code = story.rejection(
        _receipt(story, "B", vault_id, record_id, story.grant_id), story.clients["B"]
    )
    story.check(code == "grant_revoked", f"B's read receipt for it is refused: {code}")
    text = read_inline(ledger, vault_id, record_id, story.hospital["A"])
    story.check(text.startswith(b"glucose 6.3"), "team hospital A still reads it")


def emergency(story: Story) -> None:
    story.step(
        "Emergency: hospital C asks, the trusted party co-signs, C reads the CGM report held at A"
    )
    ledger, vault_id, c, node_c = (
        story.ledger,
        story.vaults["cgm"],
        story.hospital["C"],
        story.clients["C"],
    )
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
    request = draft.signed(c)
    story.check(ledger.check(request) is TxStatus.PARTIAL, "hospital C alone cannot open the vault")
    node_c.submit(request)
    trusted = story.trusted
    signature = TxSignature(
        trusted.public_key, trusted.sign(crypto.Purpose.TX, request.chain_id, request.id)
    )
    node_c.cosign(request.id, signature)
    node_c.wait_committed(request.id)
    _read_in_emergency(story, request)
    _review_emergency(story, request)


def _read_in_emergency(story: Story, request: Tx) -> None:
    """Hospital C, under the open emergency, fetches the CGM report from hospital A's node,
    decrypts it and files its read receipt."""
    ledger, vault_id, c, node_c = (
        story.ledger,
        story.vaults["cgm"],
        story.hospital["C"],
        story.clients["C"],
    )
    record_id, content_id, plaintext = story.cgm
    entry = ledger.state().load(Table.RECORD, vault_id + record_id, RecordEntry)
    assert entry is not None
    blob_request = BlobRequest(
        story.chain_id, c.public_key, vault_id, record_id, content_id, ledger.time_ms()
    ).signed_by(c)
    ciphertext = node_c.blob_fetch(blob_request.encode())
    story.check(
        len(ciphertext) > CGM_REPORT_BYTES,
        "hospital C's node fetched the blob from hospital A's node",
    )
    epoch_key = crypto.unseal(ledger.sealed_epoch_key(vault_id, 1, c.public_key) or b"", c)
    data_key = crypto.decrypt_small(epoch_key, entry.sealed_data_key)
    story.check(
        b"".join(crypto.decrypt_stream(data_key, [ciphertext])) == plaintext,
        "C decrypts the 3 MB report",
    )
    receipt = _receipt(story, "C", vault_id, record_id, request.id)
    node_c.submit(receipt)
    node_c.wait_committed(receipt.id)


def _review_emergency(story: Story, request: Tx) -> None:
    """The access shows as unreviewed until the patient reviews it; hospital B, with no
    grant and no emergency, is refused the same blob."""
    ledger, vault_id = story.ledger, story.vaults["cgm"]
    record_id, content_id, _ = story.cgm
    status = ledger.state().load(Table.EMERGENCY, request.id, Emergency)
    story.check(
        status is not None and status.status is EmergencyStatus.UNREVIEWED,
        "the access shows as unreviewed",
    )
    review = builders.review_emergency(
        story.chain_id,
        vault_id,
        ledger.nonce(vault_id),
        ledger.expiry(),
        emergency_id=request.id,
        verdict=EmergencyStatus.APPROPRIATE,
        note="patient confirms the emergency",
    )
    ledger.commit(review.signed(*story.patient))
    status = ledger.state().load(Table.EMERGENCY, request.id, Emergency)
    story.check(
        status is not None and status.status is EmergencyStatus.APPROPRIATE,
        "the patient reviewed it",
    )
    unauthorised = BlobRequest(
        story.chain_id,
        story.hospital["B"].public_key,
        vault_id,
        record_id,
        content_id,
        ledger.time_ms(),
    ).signed_by(story.hospital["B"])
    try:
        story.clients["B"].blob_fetch(unauthorised.encode())
        story.check(False, "hospital B, without a grant, is refused the CGM blob")
    except ApiRequestError as exc:
        story.check(
            exc.code == "not_authorised", "hospital B, without a grant, is refused the CGM blob"
        )


def validator_down(story: Story) -> None:
    story.step("Hospital B's validator is killed; the other three keep committing")
    before = int(story.clients["A"].status()["height"])
    story.kill("B")
    p1, p2 = story.patient
    tx, _ = put_reading(story.ledger, story.vaults["blood-pressure"], reading("bp", 9))
    story.ledger.client = story.clients["A"]
    height = story.ledger.commit(tx.signed_by(p1).signed_by(p2))
    story.check(
        height > before, f"a new reading committed at height {height} with 3 of 4 validators"
    )


def audit(story: Story, names: dict[bytes, str]) -> None:
    story.step("An auditor replays the chain from genesis and prints the patient's access timeline")
    data_types = ChainContext.from_genesis(story.ledger.genesis).data_types
    events = timeline(RemoteState(story.ledger.client), story.patient_account, data_types)
    print_timeline(events, names)
    kinds = [event.kind for event in events]
    story.check(
        kinds.count("read") == 5 and kinds.count("grant") == 1 and kinds.count("emergency") == 1,
        "the timeline shows 1 grant (revoked), 5 reads and 1 reviewed emergency",
    )
    bundle = fhir_bundle(events, story.patient_account)
    story.check(
        len(bundle["entry"]) == 7, "it exports as 7 FHIR resources: 1 Consent, 6 AuditEvents"
    )
    blocks, problems = replay(story.ledger)
    story.check(not problems, f"all {blocks} blocks: certificates verify, state roots reproduce")
