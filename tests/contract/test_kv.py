"""One contract, two stores: LevelDB (plyvel) and the in-memory twin behave the same."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from carechain.storage.kv import KV, LevelKV, MemoryKV, StoreBusyError, WriteBatch


@pytest.fixture(params=["memory", "leveldb"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KV]:
    store: KV = MemoryKV() if request.param == "memory" else LevelKV(tmp_path / "db")
    yield store
    store.close()


def _batch(*operations: tuple[bytes, bytes | None]) -> WriteBatch:
    batch = WriteBatch()
    for key, value in operations:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    return batch


def test_put_get_delete(kv: KV) -> None:
    assert kv.get(b"a") is None
    kv.write(_batch((b"a", b"1")))
    assert kv.get(b"a") == b"1"
    kv.write(_batch((b"a", None)))
    assert kv.get(b"a") is None
    kv.write(_batch((b"missing", None)))  # deleting an absent key is fine


def test_last_operation_on_a_key_wins_within_a_batch(kv: KV) -> None:
    kv.write(_batch((b"k", b"1"), (b"k", None), (b"k", b"2"), (b"j", b"x"), (b"j", None)))
    assert kv.get(b"k") == b"2"
    assert kv.get(b"j") is None


def test_iterate_prefix_in_key_order(kv: KV) -> None:
    kv.write(_batch((b"b2", b""), (b"a", b"0"), (b"b1", b"1"), (b"b\xff", b"2"), (b"c", b"3")))
    assert list(kv.iterate(b"b")) == [(b"b1", b"1"), (b"b2", b""), (b"b\xff", b"2")]
    assert [k for k, _ in kv.iterate(b"")] == [b"a", b"b1", b"b2", b"b\xff", b"c"]
    assert list(kv.iterate(b"z")) == []


def test_empty_values_are_values(kv: KV) -> None:
    kv.write(_batch((b"e", b"")))
    assert kv.get(b"e") == b""


def test_a_second_process_gets_a_clear_message(tmp_path: Path) -> None:
    first = LevelKV(tmp_path / "db")
    try:
        with pytest.raises(StoreBusyError, match=r"another carechain process is using .*db"):
            LevelKV(tmp_path / "db")
    finally:
        first.close()


def test_leveldb_keeps_data_across_reopen(tmp_path: Path) -> None:
    store = LevelKV(tmp_path / "db")
    store.write(_batch((b"k", b"v")))
    store.close()
    reopened = LevelKV(tmp_path / "db")
    try:
        assert reopened.get(b"k") == b"v"
    finally:
        reopened.close()


keys = st.binary(min_size=1, max_size=3)
values = st.binary(max_size=4)


class KVMatchesDict(RuleBasedStateMachine):
    """Both stores against a dict model, under random batches and reopens (LevelDB)."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[bytes, bytes] = {}
        self.memory = MemoryKV()
        self.folder = Path(tempfile.mkdtemp(prefix="carechain-kv-"))
        self.level = LevelKV(self.folder / "db")

    @initialize()
    def start(self) -> None:
        self.model.clear()

    @rule(operations=st.lists(st.tuples(keys, st.one_of(st.none(), values)), max_size=6))
    def write(self, operations: list[tuple[bytes, bytes | None]]) -> None:
        for store in (self.memory, self.level):
            store.write(_batch(*operations))
        for key, value in operations:
            if value is None:
                self.model.pop(key, None)
            else:
                self.model[key] = value

    @rule()
    def reopen(self) -> None:
        self.level.close()
        self.level = LevelKV(self.folder / "db")

    @rule(prefix=st.binary(max_size=2))
    def iterate(self, prefix: bytes) -> None:
        expected = sorted((k, v) for k, v in self.model.items() if k.startswith(prefix))
        assert list(self.memory.iterate(prefix)) == expected
        assert list(self.level.iterate(prefix)) == expected

    @invariant()
    def same_contents(self) -> None:
        for key, value in self.model.items():
            assert self.memory.get(key) == value
            assert self.level.get(key) == value

    def teardown(self) -> None:
        self.level.close()
        shutil.rmtree(self.folder, ignore_errors=True)


TestKVMatchesDict = KVMatchesDict.TestCase
TestKVMatchesDict.settings = settings(
    max_examples=40,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
