"""The design's promises, shown as properties: patients control their vaults (and the paper's
NEM mapping does not), revocation cuts later access, the state root is deterministic and the
same on every store."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.consensus import crypto
from carechain.consensus.errors import DecodeError
from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.bodies import SetPolicy
from carechain.consensus.ledger.context import epoch_key_key
from carechain.consensus.ledger.policy import OperationClass, Template, k_of
from carechain.consensus.ledger.records import Access, RecordEntry
from carechain.consensus.ledger.state import Overlay, Table
from carechain.node.wallet import builders
from carechain.storage.kv import LevelKV, MemoryKV
from carechain.storage.state import StateStore
from carechain.tests.ledger_world import CHAIN_ID, World

INSTITUTION_NAMES = ["A", "B", "C", "trusted"]
subsets = st.sets(st.sampled_from(INSTITUTION_NAMES), min_size=1)


def _keys(world: World, names: set[str]) -> list[crypto.PrivateKey]:
    return [world.trusted if n == "trusted" else world.hospital[n] for n in sorted(names)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subsets)
def test_patient_controlled_no_institutions_without_a_patient_key_can_act(names: set[str]) -> None:
    world = World()
    vault = world.create_vault(team=("A", "B", "C"))
    signers = _keys(world, names)
    write = world.record_draft(vault).signed(*signers)
    grant = world.grant_draft(vault, "C").signed(*signers)
    policy = builders.TxDraft(
        CHAIN_ID,
        "policy.set",
        vault,
        world.nonce(vault),
        world.expiry(),
        SetPolicy(OperationClass.ADMIN, k_of(1, [s.public_key for s in signers])),
    ).signed(*signers)
    for tx in (write, grant, policy):
        assert world.reject(tx).code == "policy_not_satisfied", (names, tx.kind)


def test_nem_2_of_n_lets_two_hospitals_act_for_the_patient() -> None:
    """The paper's flaw, shown on purpose: two hospitals write and grant without the patient."""
    world = World()
    vault = world.create_vault("cgm", Template.NEM_2_OF_N, team=("A", "B"))
    a, b = world.hospital["A"], world.hospital["B"]
    world.block(world.record_draft(vault).signed(a, b))
    world.block(world.grant_draft(vault, "C").signed(a, b))
    assert world.vault(vault).record_count == 1
    assert world.hospital["C"].public_key in world.vault(vault).members


@pytest.mark.security
def test_revoked_grantee_cannot_read_later_records() -> None:
    world = World()
    vault = world.create_vault()
    grant_id = world.grant(vault, "B")
    b = world.hospital["B"]
    old_epoch_key = crypto.unseal(
        Overlay(world.store).get(Table.EPOCH_KEY, epoch_key_key(vault, 1, b.public_key)) or b"", b
    )
    draft, new_key = builders.revoke(
        CHAIN_ID,
        vault,
        world.nonce(vault),
        world.expiry(),
        grant_id=grant_id,
        new_epoch=2,
        remaining_members=world.readers(vault),
    )
    world.block(draft.signed(world.p1, world.p2))
    # A record under the old epoch is refused by the chain...
    world.epoch_keys[(vault, 2)] = new_key
    old = builders.encrypt_record(
        b"x",
        record_id=b"\x42" * 16,
        data_type="glucose",
        epoch=1,
        epoch_key=old_epoch_key,
        record_time_ms=world.time_ms,
    )
    old_draft = builders.TxDraft(
        CHAIN_ID, "record.put", vault, world.nonce(vault), world.expiry(), old.body
    )
    assert world.reject(old_draft.signed(world.p1, world.p2)).code == "stale_epoch"
    # ...and a record under the new epoch does not open with anything B holds.
    record_id = world.put_record(vault, plaintext=b"after revocation")
    entry = Overlay(world.store).load(Table.RECORD, vault + record_id, RecordEntry)
    assert entry is not None
    assert entry.epoch == 2
    assert Overlay(world.store).get(Table.EPOCH_KEY, epoch_key_key(vault, 2, b.public_key)) is None
    with pytest.raises(DecodeError):
        crypto.decrypt_small(old_epoch_key, entry.sealed_data_key)
    a_sealed = Overlay(world.store).get(
        Table.EPOCH_KEY, epoch_key_key(vault, 2, world.hospital["A"].public_key)
    )
    assert a_sealed is not None
    assert (
        builders.open_inline_record(
            entry.inline_ciphertext, entry.sealed_data_key, a_sealed, world.hospital["A"]
        )
        == b"after revocation"
    )


# --- determinism across stores ---------------------------------------------------------------

OPERATIONS = st.lists(
    st.sampled_from(["record", "record-b", "grant", "receipt", "rotate", "empty"]),
    min_size=1,
    max_size=12,
)


def _run(world: World, operations: list[str]) -> None:
    """Apply a scenario of valid transactions, one block per operation."""
    vault = world.create_vault(team=("A",))
    records: list[bytes] = []
    grants: list[bytes] = []
    for operation in operations:
        if operation == "record":
            records.append(world.put_record(vault))
        elif operation == "record-b" and grants:
            world.block(world.record_draft(vault).signed(world.hospital["B"]))
        elif operation == "grant":
            grants.append(world.grant(vault, "B", access=Access.READ_WRITE))
        elif operation == "receipt" and records:
            world.block(world.receipt("A", vault, records[-1]))
        elif operation == "rotate":
            epoch = world.vault(vault).epoch + 1
            draft, key_ = builders.rotate_epoch(
                CHAIN_ID,
                vault,
                world.nonce(vault),
                world.expiry(),
                new_epoch=epoch,
                members=world.readers(vault) | {world.hospital["B"].public_key}
                if grants
                else world.readers(vault),
            )
            world.block(draft.signed(world.p1, world.p2))
            world.epoch_keys[(vault, epoch)] = key_
        elif operation == "empty":
            world.block()


def _replay(world: World, kv: LevelKV | MemoryKV) -> list[bytes]:
    """Apply the world's exact blocks to a fresh store; the roots after each block."""
    store = StateStore(kv)
    store.initialize(world.genesis)
    roots = [store.root]
    for block in world.blocks:
        store.apply(apply_block(store, block, world.chain), block.header.height)
        roots.append(store.root)
    store.verify()
    return roots


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(OPERATIONS)
def test_same_blocks_give_the_same_state_roots_on_memory_and_leveldb(
    tmp_path_factory: pytest.TempPathFactory, operations: list[str]
) -> None:
    world = World()
    _run(world, operations)
    level = LevelKV(tmp_path_factory.mktemp("leveldb"))
    try:
        level_roots = _replay(world, level)
    finally:
        level.close()
    memory_roots = _replay(world, MemoryKV())
    assert level_roots == memory_roots
    assert memory_roots[-1] == world.store.root
    changed = [after != before for before, after in itertools.pairwise(memory_roots)]
    assert changed == [bool(block.txs) for block in world.blocks], "only non-empty blocks change it"
