"""The state store on both KV stores: atomic diffs, root from a full scan, damage detected."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from carechain.consensus.ledger.state import EmptyState, Overlay, Table
from carechain.consensus.ledger.state_proof import verify
from carechain.consensus.ledger.state_tree import Leaf, ref_version, root_hash, root_of
from carechain.storage import schema
from carechain.storage.kv import KV, LevelKV, MemoryKV, WriteBatch
from carechain.storage.state import HeightNotKept, StateCorruptError, StateStore
from carechain.tests.ledger_world import World


@pytest.fixture(params=["memory", "leveldb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemoryKV() if request.param == "memory" else LevelKV(tmp_path / "db")
    yield store
    store.close()


def test_world_state_verifies_and_damage_is_found(kv: KV) -> None:
    world = World(kv)
    vault = world.create_vault()
    world.put_record(vault)
    world.store.verify()
    key, value = next(iter(kv.iterate(schema.state_table_prefix(Table.RECORD))))
    batch = WriteBatch()
    batch.put(key, value[:-1] + bytes([value[-1] ^ 1]))
    kv.write(batch)
    with pytest.raises(StateCorruptError, match="does not match its recorded root"):
        world.store.verify()


def test_lost_entry_is_found(kv: KV) -> None:
    world = World(kv)
    world.create_vault()
    key, _ = next(iter(kv.iterate(schema.state_table_prefix(Table.VAULT))))
    batch = WriteBatch()
    batch.delete(key)
    kv.write(batch)
    with pytest.raises(StateCorruptError):
        world.store.verify()


def test_heights_must_follow_and_genesis_applies_once(kv: KV) -> None:
    world = World(kv)
    with pytest.raises(StateCorruptError, match="cannot apply 5"):
        world.store.apply(Overlay(world.store).diff(), 5)
    with pytest.raises(StateCorruptError, match="cannot take genesis again"):
        world.store.initialize(world.genesis)


def test_empty_store_says_so() -> None:
    store = StateStore(MemoryKV())
    with pytest.raises(StateCorruptError, match="no state"):
        store.verify()
    with pytest.raises(StateCorruptError, match="initialise it from genesis"):
        _ = store.height


TABLES = st.sampled_from([Table.ACCOUNT, Table.RECORD, Table.GRANT])


class StateStoreMatchesModel(RuleBasedStateMachine):
    """Random diffs applied through the state store agree with a dict model, and the root
    always equals the root recomputed from the model's entries."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[tuple[Table, bytes], bytes] = {}
        self.store = StateStore(MemoryKV())
        self.store.apply(Overlay(EmptyState()).diff(), 0)

    @rule(
        writes=st.lists(
            st.tuples(
                TABLES,
                st.binary(min_size=1, max_size=2),
                st.one_of(st.none(), st.binary(max_size=3)),
            ),
            max_size=5,
        )
    )
    def apply_diff(self, writes: list[tuple[Table, bytes, bytes | None]]) -> None:
        overlay = Overlay(self.store)
        for table, key, value in writes:
            if value is None:
                overlay.delete(table, key)
            else:
                overlay.put(table, key, value)
        self.store.apply(overlay.diff(), self.store.height + 1)
        for table, key, value in writes:
            if value is None:
                self.model.pop((table, key), None)
            else:
                self.model[(table, key)] = value

    @invariant()
    def agrees(self) -> None:
        for (table, key), value in self.model.items():
            assert self.store.get(table, key) == value
        expected = root_of(Leaf.of(t, k, v) for (t, k), v in self.model.items())
        assert self.store.root == expected
        assert len(list(self.store.entries())) == len(self.model)


TestStateStoreMatchesModel = StateStoreMatchesModel.TestCase
TestStateStoreMatchesModel.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _random_diffs(seed: int, heights: int) -> list[list[tuple[Table, bytes, bytes | None]]]:
    rng = random.Random(seed)
    keys = [rng.randbytes(rng.randrange(1, 6)) for _ in range(60)]
    return [
        [
            (
                rng.choice([Table.ACCOUNT, Table.RECORD, Table.GRANT]),
                rng.choice(keys),
                None if rng.random() < 0.25 else rng.randbytes(rng.randrange(0, 40)),
            )
            for _ in range(rng.randrange(0, 12))
        ]
        for _ in range(heights)
    ]


def _apply_writes(store: StateStore, writes: list[tuple[Table, bytes, bytes | None]]) -> bytes:
    overlay = Overlay(store)
    for table, key, value in writes:
        if value is None:
            overlay.delete(table, key)
        else:
            overlay.put(table, key, value)
    return store.apply(overlay.diff(), store.height + 1 if store.initialized else 0)


def test_memory_and_leveldb_give_identical_roots(tmp_path: Path) -> None:
    for seed in range(5):
        memory = StateStore(MemoryKV(), heights_kept=4)
        level_kv = LevelKV(tmp_path / f"db{seed}")
        level = StateStore(level_kv, heights_kept=4)
        try:
            for writes in _random_diffs(seed, 30):
                roots = _apply_writes(memory, writes), _apply_writes(level, writes)
                assert roots[0] == roots[1], f"seed {seed}"
            memory.verify()
            level.verify()
        finally:
            level_kv.close()


def test_proofs_at_every_kept_height_and_older_ones_pruned(kv: KV) -> None:
    store = StateStore(kv, heights_kept=3)
    history: list[dict[tuple[Table, bytes], bytes]] = []
    model: dict[tuple[Table, bytes], bytes] = {}
    for writes in _random_diffs(3, 40):
        _apply_writes(store, writes)
        for table, key, value in writes:
            if value is None:
                model.pop((table, key), None)
            else:
                model[(table, key)] = value
        history.append(dict(model))
    head = store.height
    for height in range(head - 2, head + 1):
        root = store.root_at(height)
        for (table, key), value in list(history[height].items())[:8]:
            proof, found, at = store.prove(table, key, height)
            assert (found, at) == (value, height)
            verify(root_hash(root), table, key, value, proof)
        proof, found, _ = store.prove(Table.ACCOUNT, b"never", height)
        assert found is None
        verify(root_hash(root), Table.ACCOUNT, b"never", None, proof)
    with pytest.raises(HeightNotKept, match="keeps the last 3 heights"):
        store.prove(Table.ACCOUNT, b"x", head - 3)
    # nothing older than the window stays: every stored node is in one of the kept trees
    stale = [key for key, _ in kv.iterate(schema.TREE_STALE_PREFIX)]
    assert all(int.from_bytes(key[1:9], "big") > head - 2 for key in stale)
    assert len(list(kv.iterate(schema.TREE_ROOT_PREFIX))) == 3


def test_a_tampered_tree_node_is_named(kv: KV) -> None:
    world = World(kv)
    vault = world.create_vault()
    world.put_record(vault)
    world.store.verify()
    root = world.store.root_ref
    assert root is not None
    version = ref_version(root)
    key = schema.tree_node_key(version, b"")
    value = kv.get(key)
    assert value is not None
    batch = WriteBatch()
    batch.put(key, value[:-1] + bytes([value[-1] ^ 1]))
    kv.write(batch)
    with pytest.raises(StateCorruptError, match=f"tree node written at height {version} at path"):
        StateStore(kv).verify()
