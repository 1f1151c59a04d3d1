"""The chain store: atomic commits, indexes, consistency checks on open, one process at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.records import KeyList
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.poa.messages import Commit
from carechain.node.sync import encoded_commit
from carechain.storage import schema
from carechain.storage.chain import ChainCorruptError, ChainStore
from carechain.storage.kv import LevelKV, MemoryKV, WriteBatch
from carechain.storage.state import StateStore
from carechain.tests.chain_fixture import certified_blocks, fixture_genesis


def _store_with(path: Path, blocks: int) -> ChainStore:
    genesis = fixture_genesis()
    store = ChainStore.open(path, genesis)
    for block, certificate in certified_blocks(blocks):
        store.commit(block, certificate, apply_block(store, block, _chain()))
    return store


def _chain() -> ChainContext:
    return ChainContext.from_genesis(fixture_genesis())


def test_commit_read_back_and_reopen(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "db", 5)
    expected = certified_blocks(5)
    assert store.height == 5
    assert store.head() == (5, expected[-1][0].block_hash)
    for height, (block, certificate) in enumerate(expected, start=1):
        assert store.block(height) == block
        assert store.certificate(height) == certificate
        assert store.height_of(block.block_hash) == height
        for position, tx in enumerate(block.txs):
            assert store.tx_location(tx.id) == (height, position)
    assert [b.header.height for b, _ in store.blocks(2, 4)] == [2, 3, 4]
    store.close()
    reopened = ChainStore.open(tmp_path / "db", fixture_genesis(), verify_state=True)
    assert reopened.last_header() == expected[-1][0].header
    reopened.close()


def _damage(path: Path, change: WriteBatch) -> None:
    kv = LevelKV(path)
    kv.write(change)
    kv.close()


def _delete(key: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.delete(key)
    return batch


def _put(key: bytes, value: bytes) -> WriteBatch:
    batch = WriteBatch()
    batch.put(key, value)
    return batch


DAMAGE = [
    ("no head", _delete(schema.HEAD_KEY), "no head block is recorded"),
    (
        "head behind state",
        _put(schema.HEAD_KEY, schema.encode_head(2, b"\x00" * 32)),
        "head block is at height 2 but state is at height 3",
    ),
    ("head block missing", _delete(schema.block_key(3)), "head block 3 is unreadable"),
    (
        "head names another block",
        _put(schema.HEAD_KEY, schema.encode_head(3, b"\x01" * 32)),
        "names a different block",
    ),
    (
        "schema from the future",
        _put(schema.SCHEMA_VERSION_KEY, (9).to_bytes(4, "big")),
        "schema version",
    ),
    ("state root changed", _put(schema.tree_root_key(3), b""), "state root"),
]


@pytest.mark.parametrize(("case", "change", "message"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_is_named_on_open(
    tmp_path: Path, case: str, change: WriteBatch, message: str
) -> None:
    _store_with(tmp_path / "db", 3).close()
    _damage(tmp_path / "db", change)
    with pytest.raises(ChainCorruptError, match=message):
        ChainStore.open(tmp_path / "db", fixture_genesis()).close()


def test_a_changed_state_entry_is_found_by_the_full_check(tmp_path: Path) -> None:
    _store_with(tmp_path / "db", 3).close()
    kv = LevelKV(tmp_path / "db")
    key, value = next(iter(kv.iterate(schema.STATE_PREFIX)))
    kv.write(_put(key, value + b"\x00"))
    kv.close()
    ChainStore.open(tmp_path / "db", fixture_genesis()).close()  # the quick check passes
    with pytest.raises(ChainCorruptError, match="does not match its recorded root"):
        ChainStore.open(tmp_path / "db", fixture_genesis(), verify_state=True)


def test_a_second_process_is_told_who_holds_the_directory(tmp_path: Path) -> None:
    store = _store_with(tmp_path / "db", 1)
    try:
        script = (
            "import sys; from pathlib import Path\n"
            "from carechain.storage.kv import LevelKV\n"
            "from carechain.consensus.errors import InvalidInput\n"
            "try:\n    LevelKV(Path(sys.argv[1]))\n"
            "except InvalidInput as exc:\n    print(exc); sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "db")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        store.close()
    assert result.returncode == 3, result.stderr
    assert f"another carechain process is using {tmp_path / 'db'}" in result.stdout


def test_decoded_entries_follow_every_commit() -> None:
    """`load` hands out kept decoded entries; after each commit it returns what was
    committed (written, rewritten or deleted), never an earlier value, within its bound."""
    store = StateStore(MemoryKV(), kept_max=3)
    store.initialize(fixture_genesis())
    keys = [bytes([i]) * 4 for i in range(5)]

    def commit(values: dict[bytes, KeyList | None]) -> None:
        overlay = Overlay(store)
        for key, value in values.items():
            if value is None:
                overlay.delete(Table.META, key)
            else:
                overlay.save(Table.META, key, value)
        store.apply(overlay.diff(), store.height + 1)

    first = {key: KeyList((bytes([n]) * 32,)) for n, key in enumerate(keys)}
    commit(dict(first))
    assert all(store.load(Table.META, k, KeyList) == v for k, v in first.items())
    assert len(store._kept) <= 3
    assert store.load(Table.META, keys[1], KeyList) == first[keys[1]]  # kept, then deleted
    second: dict[bytes, KeyList | None] = {keys[0]: KeyList(()), keys[1]: None}
    commit(second)
    assert store.load(Table.META, keys[0], KeyList) == KeyList(())
    assert store.load(Table.META, keys[1], KeyList) is None
    assert store.get(Table.META, keys[1]) is None
    assert store.get(Table.META, keys[0]) == KeyList(()).encode()
    assert Overlay(store).load(Table.META, keys[2], KeyList) == first[keys[2]]
    # what a fresh store reads from the same kv is what the kept entries said
    fresh = StateStore(store.kv)
    assert all(
        fresh.load(Table.META, k, KeyList) == store.load(Table.META, k, KeyList) for k in keys
    )
    store.verify()


def test_a_served_commit_is_the_encoding_of_the_stored_block_and_certificate(
    tmp_path: Path,
) -> None:
    store = _store_with(tmp_path / "db", 3)
    for height in (1, 2, 3):
        served = encoded_commit(store.block_bytes(height), store.certificate_bytes(height))
        assert served == Commit(store.block(height), store.certificate(height)).encode()
        assert Commit.decode(served).block == store.block(height)
    store.close()
