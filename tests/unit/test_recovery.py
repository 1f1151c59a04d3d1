"""Key-loss recovery on the ledger: the fast path (remaining key and a trusted party), the slow
path (a trusted party and a team hospital, after the window, cancellable by any patient key),
every refusal, and who can never start one (every subset of the signers, enumerated)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest

from carechain.consensus import crypto
from carechain.consensus.ledger.context import epoch_key_key
from carechain.consensus.ledger.records import Account, RecordEntry, Recovery
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key

REPLACEMENT = deterministic_key(777)
WINDOW_MS = World().params.recovery_delay_ms


def _start(world: World, *signers: crypto.PrivateKey, lost: bytes | None = None) -> Tx:
    lost = world.p2.public_key if lost is None else lost
    draft = builders.start_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
        lost=lost, replacement=REPLACEMENT.public_key,
    )  # fmt: skip
    return draft.signed(*signers)


def _cancel(world: World, *signers: crypto.PrivateKey, replacement: bytes | None = None) -> Tx:
    draft = builders.cancel_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
        replacement=REPLACEMENT.public_key if replacement is None else replacement,
    )  # fmt: skip
    return draft.signed(*signers)


def _members_after(world: World, vault_id: bytes) -> set[bytes]:
    """Who reads the vault once the replacement holds the lost key's place."""
    now = world.vault(vault_id).members
    pending = _pending(world)
    lost = world.p2.public_key if pending is None else pending.lost
    return ({*now} - {lost}) | {REPLACEMENT.public_key}


def _finish(
    world: World, *signers: crypto.PrivateKey, vaults: Iterable[bytes], drop_epoch: bool = False
) -> Tx:
    handovers = []
    for vault_id in vaults:
        epochs = world.vault(vault_id).epoch
        keys = [world.epoch_keys[(vault_id, e)] for e in range(1, epochs + 1)]
        handover, _ = builders.vault_handover(
            vault_id, keys[:-1] if drop_epoch else keys, REPLACEMENT.public_key,
            _members_after(world, vault_id),
        )  # fmt: skip
        handovers.append(handover)
    draft = builders.finish_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(), handovers
    )
    return draft.signed(*signers)


def _rotate(world: World, vault_id: bytes) -> None:
    vault = world.vault(vault_id)
    draft, key = builders.rotate_epoch(
        CHAIN_ID, vault_id, world.nonce(vault_id), world.expiry(),
        new_epoch=vault.epoch + 1, members=vault.members,
    )  # fmt: skip
    world.block(draft.signed(world.p1, world.p2))
    world.epoch_keys[(vault_id, vault.epoch + 1)] = key


def _account(world: World) -> Account:
    account = Overlay(world.store).load(Table.ACCOUNT, world.patient, Account)
    assert account is not None
    return account


def _pending(world: World) -> Recovery | None:
    return Overlay(world.store).load(Table.RECOVERY, world.patient, Recovery)


def _read_with_replacement(world: World, vault_id: bytes, record_id: bytes) -> bytes:
    state = Overlay(world.store)
    entry = state.load(Table.RECORD, vault_id + record_id, RecordEntry)
    assert entry is not None
    sealed = state.get(
        Table.EPOCH_KEY, epoch_key_key(vault_id, entry.epoch, REPLACEMENT.public_key)
    )
    assert sealed is not None, f"no epoch {entry.epoch} key for the replacement"
    return builders.open_inline_record(
        entry.inline_ciphertext, entry.sealed_data_key, sealed, REPLACEMENT
    )


def test_the_fast_path_recovers_at_once_and_the_patient_reads_everything_again() -> None:
    world = World()
    glucose = world.create_vault("glucose", team=("A",))
    cgm = world.create_vault("cgm", team=("B",))
    first = world.put_record(glucose, plaintext=b"glucose 5.4")
    _rotate(world, glucose)  # two epochs in the glucose vault
    second = world.put_record(glucose, plaintext=b"glucose 6.1")
    lost = world.p2.public_key
    world.block(_start(world, world.p1, world.trusted))
    pending = _pending(world)
    assert pending is not None
    assert pending.fast
    assert pending.ready_ms == pending.started_ms, "the patient is there: no window"
    world.block(_finish(world, world.p1, world.trusted, vaults=sorted([glucose, cgm])))

    assert _pending(world) is None
    assert _account(world).keys == (world.p1.public_key, REPLACEMENT.public_key)
    for vault_id in (glucose, cgm):
        vault = world.vault(vault_id)
        assert lost not in vault.members
        assert REPLACEMENT.public_key in vault.members
        policies = Overlay(world.store).load(Table.ACCOUNT, vault_id, Account)
        assert policies is not None
        keys = {k for p in (policies.policies.admin, policies.policies.write) for k in p.all_keys()}
        assert REPLACEMENT.public_key in keys
        assert lost not in keys
    assert _read_with_replacement(world, glucose, first) == b"glucose 5.4"  # epoch 1
    assert _read_with_replacement(world, glucose, second) == b"glucose 6.1"  # epoch 2
    # the lost key no longer counts: the old pair is refused, the new pair acts
    assert world.vault(glucose).epoch == 3
    world.epoch_keys[(glucose, 3)] = crypto.unseal(
        Overlay(world.store).get(Table.EPOCH_KEY, epoch_key_key(glucose, 3, REPLACEMENT.public_key))
        or b"",
        REPLACEMENT,
    )
    stale = world.record_draft(glucose).signed(world.p1, world.p2)
    assert world.reject(stale).code == "policy_not_satisfied"
    world.block(world.record_draft(glucose).signed(world.p1, REPLACEMENT))


def test_the_slow_path_waits_and_any_patient_key_can_cancel_it() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    world.block(_start(world, world.trusted, world.hospital["A"]))
    pending = _pending(world)
    assert pending is not None
    assert not pending.fast
    assert pending.ready_ms == pending.started_ms + WINDOW_MS
    early = _finish(world, world.trusted, world.hospital["A"], vaults=[vault])
    assert world.reject(early).code == "recovery_too_early"
    assert world.reject(_start(world, world.trusted, world.hospital["A"])).code == (
        "recovery_pending"
    )
    assert world.reject(_cancel(world, world.hospital["A"])).code == "policy_not_satisfied"
    other = deterministic_key(778).public_key
    assert world.reject(_cancel(world, world.p1, replacement=other)).code == "no_recovery"
    world.block(_cancel(world, world.p2))  # even the key said to be lost can say no
    assert _pending(world) is None
    finish = _finish(world, world.trusted, world.hospital["A"], vaults=[vault])
    assert world.reject(finish).code == "no_recovery"

    world.block(_start(world, world.trusted, world.hospital["A"]))
    world.block(advance_ms=WINDOW_MS)
    world.block(_finish(world, world.trusted, world.hospital["A"], vaults=[vault]))
    assert _account(world).keys == (world.p1.public_key, REPLACEMENT.public_key)


def test_a_patient_holding_both_keys_rotates_one_without_anybody_else() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    record = world.put_record(vault, plaintext=b"glucose 5.0")
    world.block(_start(world, world.p1, world.p2))
    pending = _pending(world)
    assert pending is not None
    assert pending.fast, "the patient holds both keys: nothing to wait for"
    world.block(_finish(world, world.p1, world.p2, vaults=[vault]))
    assert _account(world).keys == (world.p1.public_key, REPLACEMENT.public_key)
    assert _read_with_replacement(world, vault, record) == b"glucose 5.0"


def test_refusals() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    cgm = world.create_vault("cgm", team=("A",))
    _rotate(world, vault)
    _rotate(world, cgm)  # two epochs each: a finish may leave one out
    p1, trusted = world.p1, world.trusted
    stranger = deterministic_key(779).public_key
    assert world.reject(_start(world, p1, trusted, lost=stranger)).code == "bad_recovery"
    for replacement in (world.p1.public_key, world.hospital["B"].public_key):
        draft = builders.start_recovery(
            CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
            lost=world.p2.public_key, replacement=replacement,
        )  # fmt: skip
        assert world.reject(draft.signed(p1, trusted)).code == "bad_recovery"
    assert world.reject(_cancel(world, p1)).code == "no_recovery"
    assert world.reject(_finish(world, p1, trusted, vaults=[vault])).code == "no_recovery"
    world.block(_start(world, p1, trusted))
    left_out = _finish(world, p1, trusted, vaults=[vault])
    assert world.reject(left_out).code == "recovery_incomplete"
    both = sorted([vault, cgm])
    short = _finish(world, p1, trusted, vaults=both, drop_epoch=True)
    assert world.reject(short).code == "recovery_incomplete"
    assert _account(world).keys == world.patient_keys, "a refused finish changes nothing"
    world.block(_finish(world, p1, trusted, vaults=both))


SIGNERS = ("remaining", "lost", "A", "B", "trusted")  # A is the vault's team; B is not


def _signers(world: World, names: Iterable[str]) -> list[crypto.PrivateKey]:
    keys = {"remaining": world.p1, "lost": world.p2, "trusted": world.trusted}
    return [keys.get(name) or world.hospital[name] for name in names]


@pytest.mark.parametrize(
    "names",
    [s for n in range(1, len(SIGNERS) + 1) for s in itertools.combinations(SIGNERS, n)],
    ids="+".join,
)
def test_only_a_trusted_party_with_a_patient_key_or_a_team_hospital_starts_one(
    names: tuple[str, ...],
) -> None:
    """Every subset of the signers: hospitals together never, a trusted party alone never,
    the lost key never counts as the remaining one (only both keys together: a rotation)."""
    world = World()
    world.create_vault(team=("A",))
    tx = _start(world, *_signers(world, names))
    rotation = "remaining" in names and "lost" in names
    allowed = rotation or ("trusted" in names and ("remaining" in names or "A" in names))
    if allowed:
        world.block(tx)
        assert _pending(world) is not None
    else:
        assert world.reject(tx).code == "policy_not_satisfied", names


def test_the_key_index_follows_a_replaced_key_1_and_a_key_controls_one_account() -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    state = Overlay(world.store)
    assert state.get(Table.PATIENT_KEY, world.p2.public_key) == world.patient
    lost = world.p1.public_key  # key 1: the account keeps its address
    world.block(_start(world, world.p2, world.trusted, lost=lost))
    world.block(_finish(world, world.p2, world.trusted, vaults=[vault]))
    state = Overlay(world.store)
    assert state.get(Table.PATIENT_KEY, lost) is None
    assert state.get(Table.PATIENT_KEY, REPLACEMENT.public_key) == world.patient
    assert _account(world).keys == (REPLACEMENT.public_key, world.p2.public_key)
    # the replacement cannot register a patient of its own, nor be another recovery's
    other = deterministic_key(780)
    draft = builders.register_patient(
        CHAIN_ID, (REPLACEMENT.public_key, other.public_key), world.expiry()
    )
    assert world.reject(draft.signed(REPLACEMENT, other)).code == "bad_account"


def _share(world: World, vault_id: bytes, member: bytes, first: int, last: int,
           *signers: crypto.PrivateKey) -> Tx:  # fmt: skip
    keys = [world.epoch_keys[(vault_id, e)] for e in range(first, last + 1)]
    draft = builders.share_epochs(
        CHAIN_ID, vault_id, world.nonce(vault_id), world.expiry(), member=member,
        first_epoch=first, epoch_keys=keys,
    )  # fmt: skip
    return draft.signed(*signers)


def test_a_finish_may_defer_the_past_epochs_to_epoch_share_and_only_the_patient_gets_them() -> None:
    """A patient with too many epochs for one transaction: the finish swaps the key and starts
    the new epochs at once; the past epochs' keys follow in `epoch.share` transactions, signed
    as a recovery, and only ever to the patient's own keys."""
    world = World()
    glucose = world.create_vault("glucose", team=("A",))
    first = world.put_record(glucose, plaintext=b"glucose 5.4")
    _rotate(world, glucose)
    world.block(_start(world, world.p1, world.trusted))
    partly = _finish(world, world.p1, world.trusted, vaults=[glucose], drop_epoch=True)
    assert world.reject(partly).code == "recovery_incomplete", "all of them or none"
    handovers = []
    for vault_id in [glucose]:
        epoch_keys = [world.epoch_keys[(vault_id, e)] for e in (1, 2)]
        handover, key = builders.vault_handover(
            vault_id, epoch_keys, REPLACEMENT.public_key, _members_after(world, vault_id),
            defer_old=True,
        )  # fmt: skip
        handovers.append(handover)
        world.epoch_keys[(vault_id, world.vault(vault_id).epoch + 1)] = key
    deferred = builders.finish_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(), handovers
    )
    world.block(deferred.signed(world.p1, world.trusted))
    assert world.vault(glucose).epoch == 3
    replacement = REPLACEMENT.public_key
    hospitals = _share(world, glucose, replacement, 1, 2, world.hospital["A"], world.hospital["B"])
    assert world.reject(hospitals).code == "policy_not_satisfied"
    to_b = _share(world, glucose, world.hospital["B"].public_key, 1, 2, world.p1, world.trusted)
    assert world.reject(to_b).code == "bad_members", "never to anyone but the patient"
    too_far = _share(world, glucose, replacement, 3, 3, world.p1, REPLACEMENT)
    beyond = builders.share_epochs(
        CHAIN_ID, glucose, world.nonce(glucose), world.expiry(), member=replacement,
        first_epoch=3, epoch_keys=[world.epoch_keys[(glucose, 3)], b"\0" * 32],
    ).signed(world.p1, REPLACEMENT)  # fmt: skip
    assert world.reject(beyond).code == "stale_epoch"
    world.block(too_far)  # epoch 3 it holds already: sharing it again is harmless
    world.block(_share(world, glucose, replacement, 1, 2, world.p1, world.trusted))
    assert _read_with_replacement(world, glucose, first) == b"glucose 5.4"
