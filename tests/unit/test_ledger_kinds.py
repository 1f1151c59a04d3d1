"""Every transaction kind: the accepted path and each rejection with its reason code."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from carechain.consensus import crypto
from carechain.consensus.genesis import ConsensusParams, Institution, InstitutionKind
from carechain.consensus.ledger.bodies import (
    AttestErasure,
    CreateVault,
    EraseRecord,
    RegisterPatient,
    SetPolicy,
)
from carechain.consensus.ledger.context import epoch_key_key
from carechain.consensus.ledger.errors import REASONS, TxRejected
from carechain.consensus.ledger.governance import validator_set, validator_set_at
from carechain.consensus.ledger.policy import OperationClass, Policy, Template, k_of
from carechain.consensus.ledger.records import (
    Access,
    Emergency,
    EmergencyStatus,
    Grant,
    InstitutionAction,
    InstitutionState,
    RecordEntry,
    ValidatorAction,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx, TxSignature, Validator, Vote, VoteType
from carechain.consensus.wire import pack
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, DAY_MS, World
from carechain.tests.strategies import deterministic_key


def test_every_reason_code_is_documented_and_unknown_codes_are_a_bug() -> None:
    assert all(text for text in REASONS.values())
    with pytest.raises(AssertionError):
        TxRejected("no_such_code", "x")


# --- envelope -----------------------------------------------------------------------------------


def _registration(world: World, **changes: object) -> Tx:
    draft = builders.register_patient(CHAIN_ID, world.patient_keys, world.expiry())
    tx = dataclasses.replace(draft.unsigned(), **changes)  # type: ignore[arg-type]
    return tx.signed_by(world.p1).signed_by(world.p2)


ENVELOPE: list[tuple[str, Callable[[World], Tx]]] = [
    ("wrong_chain", lambda w: _registration(w, chain_id="carechain-other")),
    ("expired", lambda w: _registration(w, expiry_ms=w.time_ms)),
    ("expiry_too_far", lambda w: _registration(w, expiry_ms=w.time_ms + 400 * DAY_MS)),
    ("unknown_kind", lambda w: _registration(w, kind="record.steal")),
    ("bad_body", lambda w: _registration(w, body=pack([1, "not keys"]))),
    ("bad_body", lambda w: _registration(w, body=b"\xcc\x05")),
    ("bad_nonce", lambda w: _registration(w, nonce=2)),
    (
        "non_canonical_signatures",
        lambda w: dataclasses.replace(
            _registration(w), signatures=tuple(reversed(_registration(w).signatures))
        ),
    ),
    (
        "bad_signature",
        lambda w: _registration(w).with_signature(
            TxSignature(deterministic_key(99).public_key, bytes(64))
        ),
    ),
    (
        "policy_not_satisfied",
        lambda w: builders.register_patient(CHAIN_ID, w.patient_keys, w.expiry()).signed(w.p1),
    ),
]


@pytest.mark.parametrize(
    ("code", "make"), ENVELOPE, ids=[f"{c}-{i}" for i, (c, _) in enumerate(ENVELOPE)]
)
def test_envelope_rejections(code: str, make: Callable[[World], Tx]) -> None:
    world = World()
    assert world.reject(make(world)).code == code


def test_oversize_transaction_is_rejected() -> None:
    world = World(params=ConsensusParams(max_tx_bytes=300))
    assert world.reject(_registration(world)).code == "oversize"


def test_a_replayed_transaction_is_rejected() -> None:
    world = World()
    vault = world.create_vault()
    tx = world.record_draft(vault).signed(world.p1, world.hospital["A"])
    world.block(tx)
    assert world.reject(tx).code == "bad_nonce"


def test_a_rejected_transaction_changes_nothing() -> None:
    world = World()
    vault = world.create_vault()
    root = world.store.root
    bad = world.record_draft(vault).signed(world.hospital["A"])
    with pytest.raises(Exception, match="policy_not_satisfied"):
        world.block(bad)
    assert world.store.root == root
    assert world.vault(vault).record_count == 0


# --- accounts and policies ----------------------------------------------------------------------


def test_patient_registration_and_its_rejections() -> None:
    world = World()
    world.register()
    assert world.nonce(world.patient) == 2
    again = builders.register_patient(CHAIN_ID, world.patient_keys, world.expiry())
    assert world.reject(again.signed(world.p1, world.p2)).code == "account_exists"
    other = World()
    swapped = builders.TxDraft(
        CHAIN_ID,
        "account.register",
        other.patient,
        1,
        other.expiry(),
        RegisterPatient((other.p2.public_key, other.p1.public_key)),
    )
    assert other.reject(swapped.signed(other.p1, other.p2)).code == "bad_account"
    same = builders.register_patient(
        CHAIN_ID, (other.p1.public_key, other.p1.public_key), other.expiry()
    )
    assert other.reject(same.signed(other.p1)).code == "bad_account"
    hospital_key = other.hospital["A"]
    as_hospital = builders.register_patient(
        CHAIN_ID, (other.p1.public_key, hospital_key.public_key), other.expiry()
    )
    assert other.reject(as_hospital.signed(other.p1, hospital_key)).code == "bad_account"
    owned = builders.register_patient(
        CHAIN_ID, (hospital_key.public_key, other.p2.public_key), other.expiry()
    )
    assert other.reject(owned.signed(hospital_key, other.p2)).code == "account_exists"


def _set_policy(world: World, account: bytes, policy: Policy, *signers: crypto.PrivateKey) -> Tx:
    draft = builders.TxDraft(
        CHAIN_ID,
        "policy.set",
        account,
        world.nonce(account),
        world.expiry(),
        SetPolicy(OperationClass.WRITE, policy),
    )
    return draft.signed(*signers)


def test_policy_change_by_the_patient() -> None:
    world = World()
    vault = world.create_vault()
    only_patient = k_of(2, list(world.patient_keys))
    world.block(_set_policy(world, vault, only_patient, world.p1, world.p2))
    hospital_and_patient = world.record_draft(vault).signed(world.p1, world.hospital["A"])
    assert world.reject(hospital_and_patient).code == "policy_not_satisfied"


BAD_POLICIES = [
    ("threshold above children", Policy(3, (b"\x01" * 32, b"\x02" * 32))),
    ("depth 4", k_of(1, [k_of(1, [k_of(1, [k_of(1, [b"\x01" * 32])])])])),
    ("33 keys", Policy(1, tuple(bytes([i]) * 32 for i in range(32)), (k_of(1, [b"\xff" * 32]),))),
    ("repeated key", Policy(1, (b"\x01" * 32, b"\x01" * 32))),
]


@pytest.mark.parametrize(("case", "policy"), BAD_POLICIES, ids=[c for c, _ in BAD_POLICIES])
def test_bad_policies_are_rejected(case: str, policy: Policy) -> None:
    world = World()
    vault = world.create_vault()
    assert world.reject(_set_policy(world, vault, policy, world.p1, world.p2)).code == "bad_policy"


def test_policy_change_needs_the_admin_policy() -> None:
    world = World()
    vault = world.create_vault()
    tx = _set_policy(
        world, vault, k_of(1, [world.hospital["A"].public_key]), world.p1, world.hospital["A"]
    )
    assert world.reject(tx).code == "policy_not_satisfied"


# --- vaults ------------------------------------------------------------------------------------


def _vault_draft(world: World, **changes: object) -> builders.TxDraft:
    members = {*world.patient_keys, world.hospital["A"].public_key, world.trusted.public_key}
    draft, _ = builders.create_vault(
        CHAIN_ID,
        world.patient,
        world.nonce(world.patient),
        world.expiry(),
        data_type="cgm",
        template=Template.PATIENT_CONTROLLED,
        team=[world.hospital["A"].public_key],
        members=members,
    )
    body = dataclasses.replace(draft.body, **changes)  # type: ignore[type-var]
    return dataclasses.replace(draft, body=body)


VAULT_REJECTIONS: list[tuple[str, Callable[[World], Tx]]] = [
    ("unknown_data_type", lambda w: _vault_draft(w, data_type="horoscope").signed(w.p1, w.p2)),
    ("policy_not_satisfied", lambda w: _vault_draft(w).signed(w.p1, w.hospital["A"])),
    (
        "bad_members",
        lambda w: _vault_draft(
            w,
            sealed_epoch_keys=_vault_draft(w).body.sealed_epoch_keys[1:],  # type: ignore[attr-defined]
        ).signed(w.p1, w.p2),
    ),
    (
        "bad_members",
        lambda w: _vault_draft(
            w,
            sealed_epoch_keys=(
                *_vault_draft(w).body.sealed_epoch_keys,  # type: ignore[attr-defined]
                *builders.seal_epoch_key(b"k" * 32, [w.hospital["B"].public_key]),
            ),
        ).signed(w.p1, w.p2),
    ),
    (
        "unknown_institution",
        lambda w: _vault_draft(w, team=(deterministic_key(77).public_key,)).signed(w.p1, w.p2),
    ),
    ("not_authorised", lambda w: _vault_draft(w, team=(w.trusted.public_key,)).signed(w.p1, w.p2)),
]


@pytest.mark.parametrize(
    ("code", "make"),
    VAULT_REJECTIONS,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(VAULT_REJECTIONS)],
)
def test_vault_creation_rejections(code: str, make: Callable[[World], Tx]) -> None:
    world = World()
    world.register()
    assert world.reject(make(world)).code == code


def test_one_vault_per_data_type() -> None:
    world = World()
    world.create_vault("cgm")
    assert world.reject(_vault_draft(world).signed(world.p1, world.p2)).code == "vault_exists"


def test_a_hospital_account_cannot_create_vaults() -> None:
    world = World()
    hospital = world.hospital["A"]
    draft = builders.TxDraft(
        CHAIN_ID,
        "vault.create",
        crypto.account_id(hospital.public_key),
        1,
        world.expiry(),
        CreateVault("glucose", Template.PATIENT_CONTROLLED, (), ()),
    )
    assert world.reject(draft.signed(hospital)).code == "bad_account"


# --- records ------------------------------------------------------------------------------------


def test_record_put_by_patient_and_team_hospital_is_readable_by_members() -> None:
    world = World()
    vault = world.create_vault()
    record_id = world.put_record(vault, world.p1, world.hospital["A"], plaintext=b"6.1 mmol/L")
    state = Overlay(world.store)
    entry = state.load(Table.RECORD, vault + record_id, RecordEntry)
    assert entry is not None
    assert entry.author == world.hospital["A"].public_key
    sealed = state.get(Table.EPOCH_KEY, epoch_key_key(vault, 1, world.hospital["A"].public_key))
    assert sealed is not None
    assert (
        builders.open_inline_record(
            entry.inline_ciphertext, entry.sealed_data_key, sealed, world.hospital["A"]
        )
        == b"6.1 mmol/L"
    )


HELLO = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # "hello world"
RECORD_REJECTIONS: list[tuple[str, Callable[[World, bytes], Tx]]] = [
    ("policy_not_satisfied", lambda w, v: w.record_draft(v).signed(w.hospital["A"])),
    ("policy_not_satisfied", lambda w, v: w.record_draft(v).signed(w.p1)),
    (
        "data_type_mismatch",
        lambda w, v: dataclasses.replace(
            w.record_draft(v),
            body=dataclasses.replace(w.record_draft(v).body, data_type="cgm"),  # type: ignore[type-var]
        ).signed(w.p1, w.p2),
    ),
    (
        "stale_epoch",
        lambda w, v: dataclasses.replace(
            w.record_draft(v),
            body=dataclasses.replace(w.record_draft(v).body, epoch=2),  # type: ignore[type-var]
        ).signed(w.p1, w.p2),
    ),
    (
        "bad_body",
        lambda w, v: dataclasses.replace(
            w.record_draft(v),
            body=dataclasses.replace(w.record_draft(v).body, content_id="bafkreixyz"),  # type: ignore[type-var]
        ).signed(w.p1, w.p2),
    ),
    *(
        (
            "bad_content_id",
            lambda w, v, text=text: dataclasses.replace(
                w.record_draft(v),
                body=dataclasses.replace(
                    w.record_draft(v).body,
                    content_id=text,
                    inline_ciphertext=b"",
                ),
            ).signed(w.p1, w.p2),
        )
        for text in (
            "bafkreixyz",  # too short
            HELLO.upper(),  # another multibase (B: upper-case base32)
            "b" + HELLO[1:].upper(),  # not lower-case
            HELLO[:-1] + "f",  # non-zero trailing bits: a second spelling of one id
            HELLO.replace("bafkre", "bafyre"),  # dag-cbor: not a codec of content ids
        )
    ),
    (
        "unknown_account",
        lambda w, v: dataclasses.replace(w.record_draft(v), account=b"\x07" * 20).signed(
            w.p1, w.p2
        ),
    ),
]


@pytest.mark.parametrize(
    ("code", "make"),
    RECORD_REJECTIONS,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(RECORD_REJECTIONS)],
)
def test_record_put_rejections(code: str, make: Callable[[World, bytes], Tx]) -> None:
    world = World()
    vault = world.create_vault()
    assert world.reject(make(world, vault)).code == code


def test_duplicate_record_id_is_rejected() -> None:
    world = World()
    vault = world.create_vault()
    first = world.record_draft(vault)
    world.block(first.signed(world.p1, world.p2))
    again = dataclasses.replace(first, nonce=world.nonce(vault))
    assert world.reject(again.signed(world.p1, world.p2)).code == "duplicate_record"


def test_a_write_grant_lets_a_non_team_hospital_add_records() -> None:
    world = World()
    vault = world.create_vault()
    assert (
        world.reject(world.record_draft(vault).signed(world.hospital["B"])).code
        == "policy_not_satisfied"
    )
    world.grant(vault, "B", access=Access.READ_WRITE)
    world.block(world.record_draft(vault).signed(world.hospital["B"]))
    assert world.vault(vault).record_count == 1


def test_epoch_rotation_seals_to_current_members_only() -> None:
    world = World()
    vault = world.create_vault()
    members = world.readers(vault)
    draft, key = builders.rotate_epoch(
        CHAIN_ID, vault, world.nonce(vault), world.expiry(), new_epoch=2, members=members
    )
    world.block(draft.signed(world.p1, world.p2))
    assert world.vault(vault).epoch == 2
    world.epoch_keys[(vault, 2)] = key
    world.put_record(vault)
    skipped, _ = builders.rotate_epoch(
        CHAIN_ID, vault, world.nonce(vault), world.expiry(), new_epoch=4, members=members
    )
    assert world.reject(skipped.signed(world.p1, world.p2)).code == "stale_epoch"


# --- grants and revocation ------------------------------------------------------------------------


GRANT_REJECTIONS: list[tuple[str, Callable[[World, bytes], Tx]]] = [
    ("policy_not_satisfied", lambda w, v: w.grant_draft(v).signed(w.p1, w.hospital["A"])),
    ("bad_grant", lambda w, v: w.grant_draft(v, valid_until_ms=w.time_ms - 1).signed(w.p1, w.p2)),
    (
        "bad_grant",
        lambda w, v: w.grant_draft(
            v, valid_from_ms=w.time_ms + DAY_MS, valid_until_ms=w.time_ms + 1
        ).signed(w.p1, w.p2),
    ),
    ("bad_grant", lambda w, v: w.grant_draft(v, purpose="MARKETING").signed(w.p1, w.p2)),
    (
        "bad_grant",
        lambda w, v: w.grant_draft(v, record_from_ms=10, record_until_ms=5).signed(w.p1, w.p2),
    ),
]


@pytest.mark.parametrize(
    ("code", "make"),
    GRANT_REJECTIONS,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(GRANT_REJECTIONS)],
)
def test_grant_rejections(code: str, make: Callable[[World, bytes], Tx]) -> None:
    world = World()
    vault = world.create_vault()
    assert world.reject(make(world, vault)).code == code


def test_grant_to_an_unregistered_institution_is_rejected() -> None:
    world = World()
    vault = world.create_vault()
    draft = world.grant_draft(vault)
    body = dataclasses.replace(draft.body, grantee=deterministic_key(55).public_key)  # type: ignore[type-var]
    assert (
        world.reject(dataclasses.replace(draft, body=body).signed(world.p1, world.p2)).code
        == "unknown_institution"
    )


def _revoke(
    world: World,
    vault: bytes,
    grant_id: bytes,
    members: frozenset[bytes] | set[bytes],
    epoch: int | None = None,
) -> tuple[Tx, bytes]:
    draft, key = builders.revoke(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        grant_id=grant_id,
        new_epoch=epoch or world.vault(vault).epoch + 1,
        remaining_members=members,
    )
    return draft.signed(world.p1, world.p2), key


@pytest.mark.security
def test_revocation_rotates_and_excludes_the_grantee() -> None:
    world = World()
    vault = world.create_vault()
    grant_id = world.grant(vault, "B")
    b_key = world.hospital["B"].public_key
    assert b_key in world.vault(vault).members
    with_b, _ = _revoke(world, vault, grant_id, world.readers(vault) | {b_key})
    assert world.reject(with_b).code == "bad_members"
    wrong_epoch, _ = _revoke(world, vault, grant_id, world.readers(vault), epoch=5)
    assert world.reject(wrong_epoch).code == "stale_epoch"
    tx, _ = _revoke(world, vault, grant_id, world.readers(vault))
    world.block(tx)
    state = Overlay(world.store)
    assert world.vault(vault).epoch == 2
    assert b_key not in world.vault(vault).members
    assert state.get(Table.EPOCH_KEY, epoch_key_key(vault, 2, b_key)) is None
    grant = state.load(Table.GRANT, grant_id, Grant)
    assert grant is not None
    assert grant.revoked_height == world.height
    again, _ = _revoke(world, vault, grant_id, world.readers(vault))
    assert world.reject(again).code == "grant_revoked"
    unknown, _ = _revoke(world, vault, b"\x09" * 32, world.readers(vault))
    assert world.reject(unknown).code == "unknown_grant"


# --- receipts ------------------------------------------------------------------------------------


def test_receipts_follow_the_right_to_read() -> None:
    world = World()
    vault = world.create_vault()
    record_id = world.put_record(vault, record_time_ms=world.time_ms - DAY_MS)
    world.block(world.receipt("A", vault, record_id))  # the team reads by right
    assert world.reject(world.receipt("B", vault, record_id)).code == "not_authorised"
    grant_id = world.grant(vault, "B", valid_until_ms=world.time_ms + 10_000)
    world.block(world.receipt("B", vault, record_id, grant_id))
    assert world.vault(vault).receipt_count == 2
    assert world.reject(world.receipt("C", vault, record_id, grant_id)).code == "not_authorised"
    assert world.reject(world.receipt("B", vault, b"\x00" * 16, grant_id)).code == "unknown_record"


@pytest.mark.security
def test_an_expired_grant_stops_at_the_exact_block_time() -> None:
    world = World()
    vault = world.create_vault()
    record_id = world.put_record(vault)
    until = world.time_ms + 5_000
    grant_id = world.grant(vault, "B", valid_until_ms=until)  # block time now until - 4000
    tx = world.receipt("B", vault, record_id, grant_id)
    world.block(tx, advance_ms=until - 1 - world.time_ms)  # one ms before the end: allowed
    late = world.receipt("B", vault, record_id, grant_id)
    assert world.reject(late, advance_ms=1).code == "grant_expired"  # exactly at the end


def test_grant_not_yet_valid_and_record_window() -> None:
    world = World()
    vault = world.create_vault()
    old = world.put_record(vault, record_time_ms=1_000)
    recent = world.put_record(vault, record_time_ms=world.time_ms)
    later = world.grant(
        vault, "B", valid_from_ms=world.time_ms + DAY_MS, valid_until_ms=world.time_ms + 2 * DAY_MS
    )
    assert world.reject(world.receipt("B", vault, recent, later)).code == "grant_not_yet_valid"
    windowed = world.grant(vault, "C", record_from_ms=world.time_ms - DAY_MS)
    assert world.reject(world.receipt("C", vault, old, windowed)).code == "outside_record_window"
    world.block(world.receipt("C", vault, recent, windowed))


# --- emergency -----------------------------------------------------------------------------------


def _emergency(world: World, vault: bytes, *signers: crypto.PrivateKey, **changes: object) -> Tx:
    vault_state = world.vault(vault)
    options: dict[str, object] = {"reason": "unconscious", "duration_ms": 3_600_000}
    options.update(changes)
    draft = builders.open_emergency(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        hospital=world.hospital["C"].public_key,
        epoch_key=world.epoch_keys[(vault, vault_state.epoch)],
        **options,  # type: ignore[arg-type]
    )
    return draft.signed(*(signers or (world.hospital["C"], world.trusted)))


def test_emergency_access_open_read_and_review() -> None:
    world = World()
    vault = world.create_vault()
    record_id = world.put_record(vault)
    opened = _emergency(world, vault)
    world.block(opened)
    emergency = Overlay(world.store).load(Table.EMERGENCY, opened.id, Emergency)
    assert emergency is not None
    assert emergency.status is EmergencyStatus.UNREVIEWED
    assert emergency.trusted_party == world.trusted.public_key
    world.block(world.receipt("C", vault, record_id, opened.id))
    review = builders.review_emergency(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        emergency_id=opened.id,
        verdict=EmergencyStatus.INAPPROPRIATE,
        note="not an emergency",
    )
    world.block(review.signed(world.p1, world.p2))
    assert world.reject(world.receipt("C", vault, record_id, opened.id)).code == "grant_revoked"
    twice = dataclasses.replace(review, nonce=world.nonce(vault))
    assert world.reject(twice.signed(world.trusted)).code == "already_reviewed"


EMERGENCY_REJECTIONS: list[tuple[str, Callable[[World, bytes], Tx]]] = [
    ("policy_not_satisfied", lambda w, v: _emergency(w, v, w.hospital["C"])),
    ("policy_not_satisfied", lambda w, v: _emergency(w, v, w.hospital["C"], w.hospital["A"])),
    ("not_authorised", lambda w, v: _emergency(w, v, w.trusted)),
    ("bad_reason", lambda w, v: _emergency(w, v, reason="curiosity")),
    ("emergency_too_long", lambda w, v: _emergency(w, v, duration_ms=73 * 3_600_000)),
]


@pytest.mark.parametrize(
    ("code", "make"),
    EMERGENCY_REJECTIONS,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(EMERGENCY_REJECTIONS)],
)
@pytest.mark.security
def test_emergency_rejections(code: str, make: Callable[[World, bytes], Tx]) -> None:
    world = World()
    vault = world.create_vault()
    assert world.reject(make(world, vault)).code == code


def test_emergency_review_of_unknown_id_and_by_a_hospital() -> None:
    world = World()
    vault = world.create_vault()
    opened = _emergency(world, vault)
    world.block(opened)
    unknown = builders.review_emergency(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        emergency_id=b"\x01" * 32,
        verdict=EmergencyStatus.APPROPRIATE,
    )
    assert world.reject(unknown.signed(world.trusted)).code == "unknown_emergency"
    by_hospital = builders.review_emergency(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        emergency_id=opened.id,
        verdict=EmergencyStatus.APPROPRIATE,
    )
    assert world.reject(by_hospital.signed(world.hospital["C"])).code == "policy_not_satisfied"
    world.block(by_hospital.signed(world.trusted))


# --- erasure -------------------------------------------------------------------------------------


def test_erasure_and_attestations() -> None:
    world = World()
    vault = world.create_vault()
    record_id = world.put_record(vault)
    hospital = world.hospital["A"]
    account = crypto.account_id(hospital.public_key)

    def attest() -> Tx:
        body = AttestErasure(vault, record_id)
        return builders.TxDraft(
            CHAIN_ID, "erasure.attest", account, world.nonce(account), world.expiry(), body
        ).signed(hospital)

    assert world.reject(attest()).code == "record_not_erased"
    erase = builders.TxDraft(
        CHAIN_ID, "record.erase", vault, world.nonce(vault), world.expiry(), EraseRecord(record_id)
    )
    assert world.reject(erase.signed(world.p1, hospital)).code == "policy_not_satisfied"
    world.block(erase.signed(world.p1, world.p2))
    world.block(attest())
    assert world.reject(attest()).code == "already_attested"
    assert world.reject(world.receipt("A", vault, record_id)).code == "record_erased"
    again = builders.TxDraft(
        CHAIN_ID, "record.erase", vault, world.nonce(vault), world.expiry(), EraseRecord(record_id)
    )
    assert world.reject(again.signed(world.p1, world.p2)).code == "record_erased"


# --- governance ----------------------------------------------------------------------------------


def _governance(world: World, draft: builders.TxDraft, signers: int) -> Tx:
    return draft.signed(*world.validator_keys[:signers])


def test_validator_added_by_governance_takes_effect_two_heights_later() -> None:
    world = World()
    newcomer = deterministic_key(40)
    addition = builders.change_validator(
        CHAIN_ID,
        1,
        world.expiry(),
        ValidatorAction.ADD,
        Validator("v4", newcomer.public_key, newcomer.public_key, 10),
    )
    assert world.reject(_governance(world, addition, 2)).code == "policy_not_satisfied"
    world.block(_governance(world, addition, 3))
    decided = world.height
    assert len(validator_set(world.store).validators) == 4
    assert len(validator_set_at(world.store, decided + 1).validators) == 4
    assert len(validator_set_at(world.store, decided + 2).validators) == 5
    world.block()
    assert len(validator_set(world.store).validators) == 4
    world.block()
    assert world.height == decided + 2
    assert len(validator_set(world.store).validators) == 5
    duplicate = builders.change_validator(
        CHAIN_ID,
        2,
        world.expiry(),
        ValidatorAction.ADD,
        Validator("v4", newcomer.public_key, newcomer.public_key, 10),
    )
    assert world.reject(_governance(world, duplicate, 4)).code == "bad_governance"
    # five validators: ceil(10/3) = 4 signatures now
    removal = builders.change_validator(
        CHAIN_ID,
        2,
        world.expiry(),
        ValidatorAction.REMOVE,
        validator_set(world.store).validators[0],
    )
    assert world.reject(_governance(world, removal, 3)).code == "policy_not_satisfied"
    world.block(_governance(world, removal, 4))


def test_institutions_registered_and_revoked_by_governance() -> None:
    world = World()
    lab_key = deterministic_key(41)
    lab = Institution("lab-x", InstitutionKind.LAB, lab_key.public_key)
    register = builders.change_institution(
        CHAIN_ID, 1, world.expiry(), InstitutionAction.REGISTER, lab
    )
    world.block(_governance(world, register, 3))
    assert (
        Overlay(world.store).load(Table.INSTITUTION, lab_key.public_key, InstitutionState) is None
    )
    world.block()
    world.block()
    state = Overlay(world.store).load(Table.INSTITUTION, lab_key.public_key, InstitutionState)
    assert state is not None
    assert state.active
    twice = builders.change_institution(
        CHAIN_ID, 2, world.expiry(), InstitutionAction.REGISTER, lab
    )
    assert world.reject(_governance(world, twice, 3)).code == "institution_exists"
    revoke_b = builders.change_institution(
        CHAIN_ID,
        2,
        world.expiry(),
        InstitutionAction.REVOKE,
        Institution("hospital-B", InstitutionKind.HOSPITAL, world.hospital["B"].public_key),
    )
    world.block(_governance(world, revoke_b, 3))
    world.block()
    world.block()
    vault = world.create_vault()
    assert (
        world.reject(world.grant_draft(vault, "B").signed(world.p1, world.p2)).code
        == "unknown_institution"
    )
    not_active = builders.change_institution(
        CHAIN_ID,
        3,
        world.expiry(),
        InstitutionAction.REVOKE,
        Institution("nobody", InstitutionKind.HOSPITAL, deterministic_key(42).public_key),
    )
    assert world.reject(_governance(world, not_active, 3)).code == "unknown_institution"


def test_governance_rejects_unknown_validators_and_acts_only_through_its_account() -> None:
    world = World()
    removal = builders.change_validator(
        CHAIN_ID,
        1,
        world.expiry(),
        ValidatorAction.SET_POWER,
        Validator("ghost", deterministic_key(43).public_key, deterministic_key(43).public_key, 5),
    )
    assert world.reject(_governance(world, removal, 3)).code == "bad_governance"
    world.register()
    elsewhere = dataclasses.replace(
        removal, account=world.patient, nonce=world.nonce(world.patient)
    )
    assert world.reject(_governance(world, elsewhere, 3)).code == "bad_account"


# --- evidence ------------------------------------------------------------------------------------


def _votes(world: World, second_hash: bytes = b"\x02" * 32) -> tuple[Vote, Vote]:
    key = world.validator_keys[1]
    first = Vote(CHAIN_ID, VoteType.PRECOMMIT, 3, 0, b"\x01" * 32, key.public_key).signed_by(key)
    second = dataclasses.replace(first, block_hash=second_hash).signed_by(key)
    return first, second


def test_equivocation_evidence_is_recorded_once() -> None:
    world = World()
    first, second = _votes(world)
    tx = builders.report_equivocation(CHAIN_ID, world.expiry(), first, second)
    world.block(tx)
    recorded = [e for t, _, e in world.store.entries() if t is Table.EVIDENCE]
    assert len(recorded) == 1
    assert (
        world.reject(builders.report_equivocation(CHAIN_ID, world.expiry(), second, first)).code
        == "duplicate_evidence"
    )


EVIDENCE_REJECTIONS: list[tuple[str, Callable[[World], Tx]]] = [
    (
        "bad_evidence",
        lambda w: builders.report_equivocation(CHAIN_ID, w.expiry(), *_votes(w, b"\x01" * 32)),
    ),
    (
        "bad_evidence",
        lambda w: builders.report_equivocation(
            CHAIN_ID,
            w.expiry(),
            _votes(w)[0],
            dataclasses.replace(_votes(w)[1], signature=bytes(64)),
        ),
    ),
    (
        "bad_evidence",
        lambda w: builders.report_equivocation(
            CHAIN_ID,
            w.expiry(),
            _votes(w)[0],
            dataclasses.replace(_votes(w)[1], round=1).signed_by(w.validator_keys[1]),
        ),
    ),
    (
        "bad_account",
        lambda w: dataclasses.replace(
            builders.report_equivocation(CHAIN_ID, w.expiry(), *_votes(w)), nonce=1
        ),
    ),
]


@pytest.mark.parametrize(
    ("code", "make"),
    EVIDENCE_REJECTIONS,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(EVIDENCE_REJECTIONS)],
)
def test_evidence_rejections(code: str, make: Callable[[World], Tx]) -> None:
    world = World()
    assert world.reject(make(world)).code == code
