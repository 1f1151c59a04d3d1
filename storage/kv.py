"""The key-value protocol every store is built on, with two implementations: LevelDB through
plyvel (the embedded default) and an in-memory twin with the same behaviour, checked by one
contract test suite (tests/contract/test_kv.py).

A `WriteBatch` is applied atomically: after a crash either all of it is there or none.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import plyvel

from carechain.consensus.errors import InvalidInput


class StoreBusyError(InvalidInput):
    code = "store_busy"


class StoreOpenError(InvalidInput):
    code = "store_unreadable"


@dataclasses.dataclass
class WriteBatch:
    """Puts and deletes in order; the last operation on a key wins."""

    operations: list[tuple[bytes, bytes | None]] = dataclasses.field(default_factory=list)

    def put(self, key: bytes, value: bytes) -> None:
        self.operations.append((key, value))

    def delete(self, key: bytes) -> None:
        self.operations.append((key, None))

    def extend(self, other: WriteBatch) -> None:
        self.operations.extend(other.operations)


class KV(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with `prefix`, in ascending key order."""
        ...

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None: ...

    def close(self) -> None: ...


class MemoryKV:
    """The in-memory twin: a dict plus a sorted key list for ordered iteration."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []
        self.closed = False

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        start = bisect.bisect_left(self._keys, prefix)
        for key in list(self._keys[start:]):
            if not key.startswith(prefix):
                return
            value = self._data.get(key)
            if value is not None:
                yield key, value

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        for key, value in batch.operations:
            if value is None:
                if self._data.pop(key, None) is not None:
                    del self._keys[bisect.bisect_left(self._keys, key)]
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value

    def close(self) -> None:
        self.closed = True


class LevelKV:
    """LevelDB through plyvel. One process at a time may open a directory."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Bloom filters (10 bits a key): most reads of a missing key (is this account
            # new, is this transaction committed) skip the table's data blocks, which
            # otherwise are read from every level, costing time and resident memory
            # (LevelDB maps table files into memory to read them).
            self._db = plyvel.DB(str(path), create_if_missing=create, bloom_filter_bits=10)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreBusyError(
                    f"another carechain process is using {path}",
                    hint="stop it first, or work on a copy of the directory",
                ) from None
            raise StoreOpenError(f"cannot open the store at {path}: {exc}") from None
        except plyvel.Error as exc:
            raise StoreOpenError(
                f"the store at {path} is damaged: {exc}", hint="restore it from a backup"
            ) from None

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        with self._db.iterator(prefix=prefix) as iterator:
            yield from iterator

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        with self._db.write_batch(sync=sync, transaction=True) as writer:
            for key, value in batch.operations:
                if value is None:
                    writer.delete(key)
                else:
                    writer.put(key, value)

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()
