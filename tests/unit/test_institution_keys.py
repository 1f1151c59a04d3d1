"""An institution's planned key rotation: the new key stands for the institution (teams,
grants, policies and sealed keys keep naming it by its first key), the key it rotated from
counts for nothing, it reseals only its own epoch key copies, and every refusal has its code.
Then the same from the institution's and the patient's wallets, against a ledger in one
process: a rotated hospital reads old and new records with its new key, its read receipts
commit, and a grant made after the rotation is sealed to the new key."""

from __future__ import annotations

from pathlib import Path

import pytest

from carechain.consensus import crypto
from carechain.consensus.codec import EncodeError
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger import apply
from carechain.consensus.ledger.blob_access import BlobAccessDenied, BlobRequest, authorise
from carechain.consensus.ledger.bodies import ResealedKey
from carechain.consensus.ledger.context import RETIRED, epoch_key_key, key_changes
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import InstitutionAction, InstitutionState, RecordEntry
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.context import FlowContext
from carechain.node.wallet.institution_actions import reseal, rotate_key
from carechain.node.wallet.patient_actions import grant_access, read_record
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key
from carechain.tests.world_node import WorldNode

NEW = deterministic_key(601)
NEWER = deterministic_key(602)


def _rotation(world: World, name: str, new: bytes, *signers: crypto.PrivateKey) -> Tx:
    account = crypto.account_id(world.hospital[name].public_key)
    draft = builders.rotate_institution_key(
        CHAIN_ID, account, world.nonce(account), world.expiry(), new
    )
    return draft.signed(*signers)


def _reseal(world: World, name: str, keys: list[ResealedKey], signer: crypto.PrivateKey) -> Tx:
    account = crypto.account_id(world.hospital[name].public_key)
    return builders.reseal(CHAIN_ID, account, world.nonce(account), world.expiry(), keys).signed(
        signer
    )


def _state(world: World, name: str) -> InstitutionState:
    found = Overlay(world.store).load(
        Table.INSTITUTION, world.hospital[name].public_key, InstitutionState
    )
    assert found is not None
    return found


def test_after_a_rotation_the_new_key_acts_for_the_hospital_and_the_old_one_for_nobody() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    a = world.hospital["A"]
    world.block(_rotation(world, "A", NEW.public_key, a, NEW))
    assert _state(world, "A").current_key == NEW.public_key
    assert Overlay(world.store).get(Table.INSTITUTION_KEY, NEW.public_key) == a.public_key
    assert Overlay(world.store).get(Table.INSTITUTION_KEY, a.public_key) == RETIRED
    assert key_changes(Overlay(world.store)).rotations == 1
    record = world.put_record(vault, world.p1, NEW)  # a team hospital's write, by its new key
    entry = Overlay(world.store).load(Table.RECORD, vault + record, RecordEntry)
    assert entry is not None
    assert entry.author == a.public_key, "the record names the hospital, not its key"
    assert world.reject(world.record_draft(vault).signed(world.p1, a)).code == (
        "policy_not_satisfied"
    )
    receipt = world.receipt("A", vault, record)
    assert world.reject(receipt).code == "policy_not_satisfied", "signed by the retired key"
    by_new = builders.receipt(
        CHAIN_ID, a.public_key, world.nonce(crypto.account_id(a.public_key)), world.expiry(),
        vault=vault, record_id=record,
    )  # fmt: skip
    world.block(by_new.signed(NEW))
    for reader, allowed in ((NEW, True), (a, False)):
        request = BlobRequest(CHAIN_ID, reader.public_key, vault, record, "inline", world.time_ms)
        if allowed:
            authorise(world.store, CHAIN_ID, request.signed_by(reader), world.time_ms)
        else:
            with pytest.raises(BlobAccessDenied, match="rotated away"):
                authorise(world.store, CHAIN_ID, request.signed_by(reader), world.time_ms)


def test_a_hospital_reseals_only_its_own_copies_with_its_key_now() -> None:
    world = World()
    glucose = world.create_vault(team=("A",))
    cgm = world.create_vault("cgm", team=("B",))
    a = world.hospital["A"]
    world.block(_rotation(world, "A", NEW.public_key, a, NEW))
    epoch_key = world.epoch_keys[(glucose, 1)]
    own = ResealedKey(glucose, 1, crypto.seal(epoch_key, NEW.public_key))
    assert world.reject(_reseal(world, "A", [own], a)).code == "policy_not_satisfied"
    not_held = ResealedKey(cgm, 1, crypto.seal(world.epoch_keys[(cgm, 1)], NEW.public_key))
    refused = world.reject(_reseal(world, "A", [own, not_held], NEW))
    assert refused.code == "unknown_epoch_key", "it never adds itself a copy"
    twice = world.reject(_reseal(world, "A", [own, own], NEW))
    assert twice.code == "bad_body"
    world.block(_reseal(world, "A", [own], NEW))
    sealed = Overlay(world.store).get(Table.EPOCH_KEY, epoch_key_key(glucose, 1, a.public_key))
    assert sealed is not None
    assert crypto.unseal(sealed, NEW) == epoch_key


def test_rotation_refusals_and_a_second_rotation() -> None:
    world = World()
    world.create_vault(team=("A",))
    a, b = world.hospital["A"], world.hospital["B"]
    for taken in (b.public_key, world.p2.public_key, a.public_key):
        assert world.reject(_rotation(world, "A", taken, a)).code in (
            "key_in_use",
            "policy_not_satisfied",
        )
    assert world.reject(_rotation(world, "A", b.public_key, a, b)).code == "key_in_use"
    assert world.reject(_rotation(world, "A", NEW.public_key, NEW)).code == "policy_not_satisfied"
    assert world.reject(_rotation(world, "A", NEW.public_key, a)).code == "policy_not_satisfied"
    world.block(_rotation(world, "A", NEW.public_key, a, NEW))
    again = world.reject(_rotation(world, "A", NEWER.public_key, a, NEWER))
    assert again.code == "policy_not_satisfied", "the retired key cannot rotate again"
    world.block(_rotation(world, "A", NEWER.public_key, NEW, NEWER))
    state = Overlay(world.store)
    assert state.get(Table.INSTITUTION_KEY, NEW.public_key) == RETIRED
    assert state.get(Table.INSTITUTION_KEY, NEWER.public_key) == a.public_key
    vault = world.create_vault("cgm", team=("A",))
    world.put_record(vault, world.p1, NEWER)
    assert world.reject(world.record_draft(vault).signed(world.p1, NEW)).code == (
        "policy_not_satisfied"
    )
    # a key that served an institution serves nobody else, ever
    register = builders.change_institution(
        CHAIN_ID, world.nonce(GOVERNANCE_ACCOUNT), world.expiry(), InstitutionAction.REGISTER,
        Institution("lab", InstitutionKind.LAB, NEW.public_key),
    )  # fmt: skip
    assert world.reject(register.signed(*world.validator_keys[:3])).code == "key_in_use"
    patient = builders.register_patient(
        CHAIN_ID, (NEW.public_key, deterministic_key(603).public_key), world.expiry()
    )
    assert world.reject(patient.signed(NEW, deterministic_key(603))).code == "bad_account"


def test_revoking_a_rotated_hospital_silences_its_key_now() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_rotation(world, "A", NEW.public_key, world.hospital["A"], NEW))
    world.govern_institution(InstitutionAction.REVOKE, "A")
    assert world.reject(world.record_draft(vault).signed(world.p1, NEW)).code == (
        "policy_not_satisfied"
    )
    assert world.reject(_rotation(world, "A", NEWER.public_key, NEW, NEWER)).code == (
        "unknown_institution"
    )


def test_a_rotated_hospital_reads_old_and_new_records_through_its_wallet(tmp_path: Path) -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    old_record = world.put_record(vault, plaintext=b"before the rotation")
    context = FlowContext(tmp_path, WorldNode(world), None)
    a = world.hospital["A"]
    context.send(rotate_key(context, a, NEW))
    done = reseal(context, a, NEW, batch=1)
    assert (done["resealed"], done["unopened"]) == (1, 0)
    assert reseal(context, a, NEW)["resealed"] == 0, "run again, it has nothing to do"
    assert read_record(context, NEW, vault, old_record) == b"before the rotation"
    with pytest.raises(InvalidInput, match="rotated away from") as refused:
        read_record(context, a, vault, old_record)
    assert refused.value.code == "key_retired"
    # the patient grants B after B rotated: the grant is sealed to B's new key
    b = world.hospital["B"]
    context.send(rotate_key(context, b, NEWER))
    context.send(grant_access(context, [world.p1, world.p2], vault, b.public_key,
                              days=30, purpose="TREAT"))  # fmt: skip
    new_record = world.put_record(vault, world.p1, world.p2, plaintext=b"after the grant")
    grant = Overlay(world.store).get(Table.GRANT_INDEX, vault + b.public_key)
    assert grant is not None
    grant_id = grant[-32:]
    assert read_record(context, NEWER, vault, new_record, grant_id=grant_id) == b"after the grant"
    receipts = world.vault(vault).receipt_count
    assert receipts == 2, "each institution's read committed its receipt first"


def test_a_key_governance_is_about_to_register_is_not_taken_by_a_rotation() -> None:
    world = World()
    lab = deterministic_key(604)
    register = builders.change_institution(
        CHAIN_ID, world.nonce(GOVERNANCE_ACCOUNT), world.expiry(), InstitutionAction.REGISTER,
        Institution("lab", InstitutionKind.LAB, lab.public_key),
    )  # fmt: skip
    world.block(register.signed(*world.validator_keys[:3]))
    a = world.hospital["A"]
    assert world.reject(_rotation(world, "A", lab.public_key, a, lab)).code == "key_in_use"
    second_key = world.p2.public_key  # key 2 of a patient: never an institution's
    world.register()
    patient_key = builders.change_institution(
        CHAIN_ID, world.nonce(GOVERNANCE_ACCOUNT), world.expiry(), InstitutionAction.REGISTER,
        Institution("clinic", InstitutionKind.CLINIC, second_key),
    )  # fmt: skip
    assert world.reject(patient_key.signed(*world.validator_keys[:3])).code == "bad_account"


def test_a_state_bound_a_change_would_break_is_a_refusal_never_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def outgrown(*_: object) -> None:
        raise EncodeError("KeyList.keys: at most 4096 items")

    world = World()
    vault = world.create_vault(team=("A",))
    monkeypatch.setitem(apply.PROCESSES, "record.put", outgrown)
    refused = world.reject(world.record_draft(vault).signed(world.p1, world.p2))
    assert refused.code == "state_limit"
