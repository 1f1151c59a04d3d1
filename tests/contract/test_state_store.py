"""The state store on both KV stores: atomic diffs, root from a full scan, damage detected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from carechain.consensus.ledger.state import EmptyState, Overlay, Table, accumulate, state_root
from carechain.storage import schema
from carechain.storage.kv import KV, LevelKV, MemoryKV, WriteBatch
from carechain.storage.state import StateCorruptError, StateStore
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
        expected = accumulate(iter(sorted((t, k, v) for (t, k), v in self.model.items())))
        assert self.store.root == state_root(expected)
        assert len(list(self.store.entries())) == len(self.model)


TestStateStoreMatchesModel = StateStoreMatchesModel.TestCase
TestStateStoreMatchesModel.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
