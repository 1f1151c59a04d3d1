"""The ledger state on a KV store: a `StateReader` for the ledger, and atomic application of a
block's `StateDiff` together with the state height and the root accumulator.

`verify()` recomputes the root from a full scan: a damaged store is found at startup instead of
producing a different state root in the middle of consensus.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import TypeVar

from carechain.consensus.codec import Record
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.governance import genesis_state
from carechain.consensus.ledger.state import (
    ACCUMULATOR_BYTES,
    StateDiff,
    Table,
    accumulate,
    state_root,
)
from carechain.storage import schema
from carechain.storage.kv import KV, WriteBatch

R = TypeVar("R", bound=Record)


class StateCorruptError(InvalidInput):
    code = "state_corrupt"


class StateStore:
    """Ledger state on `kv`. Keeps up to `kept_max` entries read or committed lately, as
    stored and (once loaded) decoded: a busy account's entry is read from disk and decoded
    once, not for every transaction, and a block's diff finds the values it replaces here.
    Only this store writes state, so it knows when an entry changes; it also keeps the
    accumulator it last wrote."""

    def __init__(self, kv: KV, kept_max: int = 20_000) -> None:
        self.kv = kv
        self.kept_max = kept_max
        # (table, key) -> (stored value, its decoding or None), oldest first: an OrderedDict,
        # because a plain dict's oldest entry gets slow to drop as deletions pile up at its front
        self._kept: OrderedDict[tuple[Table, bytes], tuple[bytes, Record | None]] = OrderedDict()
        self._accumulator: int | None = None

    # -- the ledger's reader ------------------------------------------------------------------
    def get(self, table: Table, key: bytes) -> bytes | None:
        kept = self._kept.get((table, key))
        if kept is not None:
            return kept[0]
        return self.kv.get(schema.state_key(table, key))

    def load(self, table: Table, key: bytes, kind: type[R]) -> R | None:
        kept = self._kept.get((table, key))
        if kept is not None and type(kept[1]) is kind:
            return kept[1]
        raw = kept[0] if kept is not None else self.kv.get(schema.state_key(table, key))
        if raw is None:
            return None
        value = kind.decode(raw)
        self._keep(table, key, raw, value)
        return value

    def _keep(self, table: Table, key: bytes, raw: bytes, value: Record | None) -> None:
        self._kept.pop((table, key), None)  # kept again: now the newest
        if len(self._kept) >= self.kept_max:
            self._kept.popitem(last=False)  # the oldest kept
        self._kept[(table, key)] = (raw, value)

    # -- metadata -------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.kv.get(schema.STATE_HEIGHT_KEY) is not None

    @property
    def height(self) -> int:
        raw = self.kv.get(schema.STATE_HEIGHT_KEY)
        if raw is None:
            raise StateCorruptError("the store holds no state yet; initialise it from genesis")
        return int.from_bytes(raw, "big")

    @property
    def accumulator(self) -> int:
        if self._accumulator is None:
            raw = self.kv.get(schema.ACCUMULATOR_KEY)
            self._accumulator = 0 if raw is None else int.from_bytes(raw, "little")
        return self._accumulator

    @property
    def root(self) -> bytes:
        return state_root(self.accumulator)

    # -- writing --------------------------------------------------------------------------------
    def initialize(self, genesis: Genesis) -> None:
        if self.initialized:
            raise StateCorruptError("the store holds state already; it cannot take genesis again")
        batch = WriteBatch()
        batch.put(schema.SCHEMA_VERSION_KEY, schema.SCHEMA_VERSION.to_bytes(4, "big"))
        diff = genesis_state(genesis).diff()
        self.kv.write(self.stage(diff, 0, batch), sync=True)
        self.written(diff)

    def stage(self, diff: StateDiff, height: int, batch: WriteBatch | None = None) -> WriteBatch:
        """The writes that move the store to `height` with `diff` applied, in one batch the
        caller may extend (a block store adds the block itself) before `commit`."""
        batch = batch or WriteBatch()
        for entry in diff.entries:
            key = schema.state_key(entry.table, entry.key)
            if entry.new is None:
                batch.delete(key)
            else:
                batch.put(key, entry.new)
        accumulator = diff.advance(self.accumulator)
        batch.put(schema.STATE_HEIGHT_KEY, height.to_bytes(8, "big"))
        batch.put(schema.ACCUMULATOR_KEY, accumulator.to_bytes(ACCUMULATOR_BYTES, "little"))
        return batch

    def written(self, diff: StateDiff) -> None:
        """A batch from `stage(diff, ...)` is on disk: keep what it changed up to date."""
        self._accumulator = None
        for entry in diff.entries:
            if entry.new is None:
                self._kept.pop((entry.table, entry.key), None)
            else:
                record = diff.decoded.get((entry.table, entry.key))
                self._keep(entry.table, entry.key, entry.new, record)

    def apply(self, diff: StateDiff, height: int) -> bytes:
        """Apply a block's diff atomically; returns the new state root."""
        if self.initialized and height != self.height + 1:
            raise StateCorruptError(f"state is at height {self.height}; cannot apply {height}")
        self.kv.write(self.stage(diff, height), sync=True)
        self.written(diff)
        return self.root

    # -- checking -------------------------------------------------------------------------------
    def entries(self) -> Iterator[tuple[Table, bytes, bytes]]:
        for raw_key, value in self.kv.iterate(schema.STATE_PREFIX):
            table, key = schema.parse_state_key(raw_key)
            yield table, key, value

    def table_entries(self, table: Table, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Entries of one table whose key starts with `prefix`, in key order."""
        start = schema.state_key(table, prefix)
        skip = len(schema.state_table_prefix(table))
        return [(raw[skip:], value) for raw, value in self.kv.iterate(start)]

    def verify(self) -> None:
        """Recompute the root from every entry; raise StateCorruptError on any mismatch."""
        if not self.initialized:
            raise StateCorruptError("the store holds no state")
        version = self.kv.get(schema.SCHEMA_VERSION_KEY)
        if version is None or int.from_bytes(version, "big") != schema.SCHEMA_VERSION:
            raise StateCorruptError(
                f"store schema version {version!r}; this carechain reads {schema.SCHEMA_VERSION}"
            )
        try:
            scanned = accumulate(self.entries())
        except ValueError as exc:
            raise StateCorruptError(f"a state entry is unreadable: {exc}") from None
        if scanned != self.accumulator:
            raise StateCorruptError(
                f"state at height {self.height} does not match its recorded root "
                f"{self.root.hex()[:16]}: an entry was changed, added or lost outside carechain",
                hint="restore the data directory from a backup or resync from peers",
            )
