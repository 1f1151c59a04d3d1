"""Guardians on the ledger: what a cosign and a full guardian stand for, what no guardian ever
does (change who controls the account), a guardian who steps down, every refusal, and a
minor's account: its guardian controls it until a handover makes it an adult's."""

from __future__ import annotations

import itertools

from carechain.consensus import crypto
from carechain.consensus.ledger.bodies import SetPolicy
from carechain.consensus.ledger.context import epoch_key_key
from carechain.consensus.ledger.policy import OperationClass, Template, k_of
from carechain.consensus.ledger.records import Account, GuardianScope, RecordEntry
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key

GUARDIAN = deterministic_key(700)
SECOND = deterministic_key(701)
CHILD = (deterministic_key(710), deterministic_key(711))


def _account(world: World, patient: bytes) -> Account:
    found = Overlay(world.store).load(Table.ACCOUNT, patient, Account)
    assert found is not None
    return found


def _vault_ids(world: World, patient: bytes) -> list[bytes]:
    return sorted(v for _, v in world.store.table_entries(Table.PATIENT_VAULT, patient))


def _add(
    world: World,
    key: crypto.PrivateKey,
    scope: GuardianScope,
    *signers: crypto.PrivateKey,
    patient: bytes | None = None,
    drop_vault: bool = False,
) -> Tx:
    patient = world.patient if patient is None else patient
    epoch_keys = {
        vault: [world.epoch_keys[(vault, e)] for e in range(1, world.vault(vault).epoch + 1)]
        for vault in _vault_ids(world, patient)[1 if drop_vault else 0 :]
    }
    draft = builders.add_guardian(
        CHAIN_ID, patient, world.nonce(patient), world.expiry(),
        guardian=key.public_key, scope=scope, epoch_keys=epoch_keys,
    )  # fmt: skip
    return draft.signed(*signers)


def _remove(
    world: World,
    key: crypto.PrivateKey | None,
    *signers: crypto.PrivateKey,
    patient: bytes | None = None,
) -> Tx:
    """A removal (or, with `key` None, the handover), each vault's next epoch sealed to who
    reads it once the guardian(s) are gone."""
    patient = world.patient if patient is None else patient
    account = _account(world, patient)
    gone = account.guardian_keys if key is None else {key.public_key}
    new_epochs = {}
    for vault_id in _vault_ids(world, patient):
        vault = world.vault(vault_id)
        new_epochs[vault_id] = (vault.epoch + 1, set(vault.members) - gone)
    draft, keys = builders.remove_guardians(
        CHAIN_ID, patient, world.nonce(patient), world.expiry(),
        guardian=None if key is None else key.public_key, new_epochs=new_epochs,
    )  # fmt: skip
    for vault_id, epoch_key in keys.items():
        world.epoch_keys[(vault_id, world.vault(vault_id).epoch + 1)] = epoch_key
    return draft.signed(*signers)


def test_a_cosign_guardian_cosigns_a_hospitals_write_and_reads_but_administers_nothing_alone() -> (
    None
):
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_add(world, GUARDIAN, GuardianScope.COSIGN, world.p1, world.p2))
    (guardian,) = _account(world, world.patient).guardians
    assert (guardian.key, guardian.scope) == (GUARDIAN.public_key, GuardianScope.COSIGN)
    assert GUARDIAN.public_key in world.vault(vault).members
    sealed = Overlay(world.store).get(Table.EPOCH_KEY, epoch_key_key(vault, 1, GUARDIAN.public_key))
    assert sealed is not None
    assert crypto.unseal(sealed, GUARDIAN) == world.epoch_keys[(vault, 1)], "it reads"
    world.put_record(vault, GUARDIAN, world.hospital["A"])  # co-signs the hospital's reading
    alone = world.grant_draft(vault, "B").signed(GUARDIAN)
    assert world.reject(alone).code == "policy_not_satisfied", "one key's worth, not two"
    assert world.reject(world.record_draft(vault).signed(GUARDIAN)).code == ("policy_not_satisfied")
    world.block(world.grant_draft(vault, "B").signed(world.p1, GUARDIAN))  # with the patient
    without_it = world.rotate(vault, set(world.vault(vault).members) - {GUARDIAN.public_key})
    assert world.reject(without_it).code == "bad_members", "new epochs are sealed to it"


def test_a_full_guardian_acts_for_the_patient_but_never_changes_who_controls_it() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_add(world, GUARDIAN, GuardianScope.FULL, world.p1, world.p2))
    world.block(world.grant_draft(vault, "B").signed(GUARDIAN))
    world.put_record(vault, GUARDIAN)
    set_policy = builders.TxDraft(
        CHAIN_ID, "policy.set", world.patient, world.nonce(world.patient), world.expiry(),
        SetPolicy(OperationClass.ADMIN, k_of(1, [GUARDIAN.public_key])),
    ).signed(GUARDIAN)  # fmt: skip
    assert world.reject(set_policy).code == "policy_not_satisfied"
    another = _add(world, SECOND, GuardianScope.FULL, GUARDIAN)
    assert world.reject(another).code == "policy_not_satisfied"
    recovery = builders.start_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
        lost=world.p2.public_key, replacement=SECOND.public_key,
    ).signed(GUARDIAN, world.trusted)  # fmt: skip
    assert world.reject(recovery).code == "policy_not_satisfied", "no takeover by recovery"
    # a guardian steps down by itself: every vault moves to an epoch it does not hold
    world.block(_remove(world, GUARDIAN, GUARDIAN))
    assert _account(world, world.patient).guardians == ()
    assert world.vault(vault).epoch == 2
    assert GUARDIAN.public_key not in world.vault(vault).members
    assert world.reject(world.grant_draft(vault, "C").signed(GUARDIAN)).code == (
        "policy_not_satisfied"
    )


def test_guardian_refusals() -> None:
    world = World()
    world.create_vault(team=("A",))
    world.create_vault("cgm", team=("B",))
    both = (world.p1, world.p2)
    refusals = {
        "the patient's own key": _add(world, world.p2, GuardianScope.COSIGN, *both),
        "an institution": _add(world, world.hospital["C"], GuardianScope.COSIGN, *both),
        "a vault left out": _add(world, GUARDIAN, GuardianScope.COSIGN, *both, drop_vault=True),
    }
    for what, tx in refusals.items():
        assert world.reject(tx).code == "bad_guardian", what
    assert world.reject(_add(world, GUARDIAN, GuardianScope.COSIGN, world.p1)).code == (
        "policy_not_satisfied"
    )
    world.block(_add(world, GUARDIAN, GuardianScope.COSIGN, *both))
    assert world.reject(_add(world, GUARDIAN, GuardianScope.FULL, *both)).code == "bad_guardian"
    for i in range(3):
        world.block(_add(world, deterministic_key(720 + i), GuardianScope.COSIGN, *both))
    fifth = _add(world, deterministic_key(730), GuardianScope.COSIGN, *both)
    assert world.reject(fifth).code == "bad_guardian", "at most four"
    assert world.reject(_remove(world, SECOND, *both)).code == "bad_guardian", "not a guardian"
    assert world.reject(_remove(world, None, *both)).code == "bad_guardian", "an adult's account"
    assert world.reject(_remove(world, GUARDIAN, world.p1)).code == "policy_not_satisfied"


def test_guardians_and_hospitals_together_never_administer_a_patients_vault() -> None:
    """Every subset of {cosign guardian, hospitals A, B, C, the trusted party}: none grants,
    rotates or changes a policy of the patient's vault."""
    world = World()
    vault = world.create_vault(team=("A", "B"))
    world.block(_add(world, GUARDIAN, GuardianScope.COSIGN, world.p1, world.p2))
    others = [GUARDIAN, *world.hospital.values(), world.trusted]
    for size in range(1, len(others) + 1):
        for signers in itertools.combinations(others, size):
            grant = world.grant_draft(vault, "C").signed(*signers)
            assert world.reject(grant).code == "policy_not_satisfied", signers


def _register_minor(world: World, *signers: crypto.PrivateKey) -> Tx:
    keys = (CHILD[0].public_key, CHILD[1].public_key)
    return builders.register_minor(CHAIN_ID, keys, GUARDIAN.public_key, world.expiry()).signed(
        *signers
    )


def test_a_minor_is_controlled_by_its_guardian_until_the_handover() -> None:
    world = World()
    child = crypto.account_id(CHILD[0].public_key)
    assert world.reject(_register_minor(world, *CHILD)).code == "policy_not_satisfied"
    world.block(_register_minor(world, *CHILD, GUARDIAN))
    account = _account(world, child)
    assert account.minor
    assert [(g.key, g.scope) for g in account.guardians] == [
        (GUARDIAN.public_key, GuardianScope.FULL)
    ]
    members = {CHILD[0].public_key, CHILD[1].public_key, GUARDIAN.public_key,
               world.trusted.public_key}  # fmt: skip

    def create(*signers: crypto.PrivateKey) -> Tx:
        draft, epoch_key = builders.create_vault(
            CHAIN_ID, child, world.nonce(child), world.expiry(), data_type="glucose",
            template=Template.PATIENT_CONTROLLED, team=[], members=members,
        )  # fmt: skip
        world.epoch_keys[(vault_id_of(child, "glucose"), 1)] = epoch_key
        return draft.signed(*signers)

    assert world.reject(create(*CHILD)).code == "policy_not_satisfied", "its keys wait"
    world.block(create(GUARDIAN))
    vault = vault_id_of(child, "glucose")
    world.block(_add(world, SECOND, GuardianScope.COSIGN, GUARDIAN, patient=child))
    steps_down = _remove(world, GUARDIAN, GUARDIAN, patient=child)
    assert world.reject(steps_down).code == "bad_guardian", "a minor keeps a full guardian"
    assert world.reject(_remove(world, None, *CHILD, patient=child)).code == (
        "policy_not_satisfied"
    )
    world.block(_remove(world, None, *CHILD, GUARDIAN, patient=child))
    adult = _account(world, child)
    assert (adult.minor, adult.guardians) == (False, ())
    assert world.vault(vault).epoch == 2
    assert not {GUARDIAN.public_key, SECOND.public_key} & set(world.vault(vault).members)
    holders = set(world.vault(vault).members)
    world.block(world.rotate(vault, holders, *CHILD))  # its own keys act now
    again = world.rotate(vault, holders, GUARDIAN)
    assert world.reject(again).code == "policy_not_satisfied", "the guardian no more"


def test_two_cosign_guardians_together_still_stand_for_one_key() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_add(world, GUARDIAN, GuardianScope.COSIGN, world.p1, world.p2))
    world.block(_add(world, SECOND, GuardianScope.COSIGN, world.p1, world.p2))
    both = world.grant_draft(vault, "B").signed(GUARDIAN, SECOND)
    assert world.reject(both).code == "policy_not_satisfied"
    rotation = world.rotate(vault, set(world.vault(vault).members), GUARDIAN, SECOND)
    assert world.reject(rotation).code == "policy_not_satisfied"


def test_a_minors_account_is_never_recovered_and_no_guardian_becomes_a_patient_key() -> None:
    world = World()
    child = crypto.account_id(CHILD[0].public_key)
    world.block(_register_minor(world, *CHILD, GUARDIAN))
    start = builders.start_recovery(
        CHAIN_ID, child, world.nonce(child), world.expiry(),
        lost=CHILD[1].public_key, replacement=SECOND.public_key,
    )  # fmt: skip
    refused = world.reject(start.signed(world.trusted, GUARDIAN))
    assert refused.code == "bad_recovery"
    assert "minor" in refused.detail
    # an adult with a cosign guardian: the guardian's key never replaces key 2
    world.create_vault(team=("A",))
    world.block(_add(world, SECOND, GuardianScope.COSIGN, world.p1, world.p2))
    rotation = builders.start_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
        lost=world.p2.public_key, replacement=SECOND.public_key,
    )  # fmt: skip
    turned = world.reject(rotation.signed(world.p1, world.p2))
    assert (turned.code, "guardian" in turned.detail) == ("bad_recovery", True)


def test_a_hospital_write_a_guardian_cosigned_names_the_hospital() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_add(world, GUARDIAN, GuardianScope.COSIGN, world.p1, world.p2))
    record = world.put_record(vault, GUARDIAN, world.hospital["A"])
    entry = Overlay(world.store).load(Table.RECORD, vault + record, RecordEntry)
    assert entry is not None
    assert entry.author == world.hospital["A"].public_key
    by_guardian = world.put_record(vault, GUARDIAN, world.p1)
    entry = Overlay(world.store).load(Table.RECORD, vault + by_guardian, RecordEntry)
    assert entry is not None
    assert entry.author in {GUARDIAN.public_key, world.p1.public_key}, "who signed, not stood"
