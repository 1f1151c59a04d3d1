"""The ledger's view of state: typed tables over a key-value reader, overlays that collect a
block's writes, and the state root.

State is a set of entries `(table, key) -> value bytes`. The ledger reads through any
`StateReader` (the node's LevelDB store, the in-memory twin, an auditor's replay) and writes
into an `Overlay`, whose `diff()` the store applies atomically. How tables map to store keys is
storage's business (`storage/schema.py`); the root below depends only on entries.

State root: the root of the authenticated state tree over every entry (`state_tree.py`), so
that one entry's value, or its absence, can be proved against a header (`state_proof.py`). A
block's diff turns into the tree's update once (`StateDiff.tree_update`), whether the block is
proposed, validated or committed.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol, TypeVar

from carechain.consensus.codec import Record
from carechain.consensus.ledger.state_tree import NodeReader, Ref, TreeUpdate, change_of, update


class Table(enum.IntEnum):
    """Each table's key is documented beside it; storage/schema.py lays them out on disk."""

    META = 1  # b"validators" | b"governance" | b"pending/<height>"
    ACCOUNT = 2  # account id (20) -> Account
    INSTITUTION = 3  # public key (32) -> InstitutionState
    VAULT = 4  # vault id (20) -> Vault
    EPOCH_KEY = 5  # vault id (20) + epoch (8) + member key (32) -> sealed epoch key
    RECORD = 6  # vault id (20) + record id (16) -> RecordEntry
    GRANT = 7  # grant id (32) -> Grant
    GRANT_INDEX = 8  # vault id (20) + grantee key (32) -> GrantIds
    RECEIPT = 9  # vault id (20) + sequence (8) -> Receipt
    EMERGENCY = 10  # emergency id (32) -> Emergency
    ERASURE = 11  # vault id (20) + record id (16) + attesting key (32) -> Attestation
    PATIENT_VAULT = 12  # patient account (20) + data type name -> vault id
    EVIDENCE = 13  # sha256(validator, height, round, vote type) -> Evidence
    RECOVERY = 14  # patient account (20) -> Recovery (one pending at most)
    PATIENT_KEY = 15  # patient public key (32) -> the account it controls (20)
    INSTITUTION_KEY = 16  # an institution key (32) -> its first key (32), or b"" once retired
    GUARDIAN_OF = 17  # guardian key (32) + patient account (20) -> scope (1 byte)
    VAULT_INDEX = 18  # vault id (20) -> VaultIndex: every grant and emergency on the vault
    VAULT_RECORD = 19  # vault id (20) + sequence (8) -> record id (16), in the order added

    @property
    def label(self) -> str:
        """The table's name in URLs and commands (`patient-vault`)."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def of_label(cls, label: str) -> Table | None:
        """The table a label (or its name in any case) names; None if none."""
        return cls.__members__.get(label.upper().replace("-", "_"))


class StateReader(Protocol):
    def get(self, table: Table, key: bytes) -> bytes | None: ...


Change = tuple[Table, bytes, bytes | None]  # value None: the entry is deleted

R = TypeVar("R", bound=Record)


class Overlay:
    """Writes on top of a reader. Nest one per transaction so a rejected one leaves nothing."""

    __slots__ = ("_base", "_base_load", "_decoded", "_writes")

    def __init__(self, base: StateReader) -> None:
        self._base = base
        # A base with `load(table, key, kind)` (an Overlay, the node's store, which keeps the
        # entries it read or committed lately) hands out decoded entries: a busy account is
        # not decoded again for every transaction.
        self._base_load: Callable[[Table, bytes, type[Any]], Any] | None = getattr(
            base, "load", None
        )
        self._writes: dict[tuple[Table, bytes], bytes | None] = {}
        # Records are frozen, so a decoded value can be shared until its entry is written.
        self._decoded: dict[tuple[Table, bytes], Record] = {}

    def get(self, table: Table, key: bytes) -> bytes | None:
        found = self._writes.get((table, key), _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        return self._base.get(table, key)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        self._writes[(table, key)] = value
        self._decoded.pop((table, key), None)

    def delete(self, table: Table, key: bytes) -> None:
        self._writes[(table, key)] = None
        self._decoded.pop((table, key), None)

    def load(self, table: Table, key: bytes, kind: type[R]) -> R | None:
        cached = self._decoded.get((table, key))
        if type(cached) is kind:
            return cached
        value: R | None
        written = self._writes.get((table, key), _MISSING)
        if written is _MISSING and self._base_load is not None:
            value = self._base_load(table, key, kind)
        else:
            raw = self._base.get(table, key) if written is _MISSING else written
            value = None if raw is None else kind.decode(typing.cast(bytes, raw))
        if value is not None:
            self._decoded[(table, key)] = value
        return value

    def save(self, table: Table, key: bytes, value: Record) -> None:
        self.put(table, key, value.encode())
        self._decoded[(table, key)] = value

    def merge_into(self, parent: Overlay) -> None:
        parent._writes.update(self._writes)
        for entry in self._writes:
            parent._decoded.pop(entry, None)
        parent._decoded.update(self._decoded)

    def changes(self) -> Iterator[Change]:
        for (table, key), value in self._writes.items():
            yield table, key, value

    def diff(self) -> StateDiff:
        """The writes in canonical order, with the values they replace (for the root)."""
        entries = []
        decoded = {}
        for (table, key), value in sorted(self._writes.items(), key=lambda item: item[0]):
            old = self._base.get(table, key)
            if old != value:
                entries.append(DiffEntry(table, key, old, value))
                record = self._decoded.get((table, key))
                if record is not None and value is not None:
                    decoded[(table, key)] = record
        return StateDiff(tuple(entries), decoded)


_MISSING: Final = object()


@dataclasses.dataclass(frozen=True, slots=True)
class DiffEntry:
    table: Table
    key: bytes
    old: bytes | None
    new: bytes | None


@dataclasses.dataclass(frozen=True, slots=True)
class StateDiff:
    entries: tuple[DiffEntry, ...]
    # The new values already decoded, by (table, key): a store keeps them for later reads.
    # Not part of the diff's identity; every one is the decoding of its entry's `new`.
    decoded: dict[tuple[Table, bytes], Record] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    # tree_update() results by the tree they were computed on: a block's diff is turned into
    # its tree update to check its root when proposed or validated, and again when committed.
    _updates: dict[tuple[bytes, int], TreeUpdate] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def tree_update(self, reader: NodeReader, root: Ref | None, version: int) -> TreeUpdate:
        """The state tree's update that applies this diff at `version` to the tree at `root`
        (whose nodes `reader` holds)."""
        key = (root or b"", version)
        done = self._updates.get(key)
        if done is not None:
            return done
        result = update(
            reader,
            root,
            version,
            [
                change_of(entry.table, entry.key, entry.new, entry.old is not None)
                for entry in self.entries
            ],
        )
        self._updates.clear()  # one tree is all a diff ever sees twice
        self._updates[key] = result
        return result


class StateAfter:
    """A reader of `base` with `diff` applied: the state a block leaves, before it is stored."""

    def __init__(self, base: StateReader, diff: StateDiff) -> None:
        self._base = base
        self._written = {(entry.table, entry.key): entry.new for entry in diff.entries}

    def get(self, table: Table, key: bytes) -> bytes | None:
        found = self._written.get((table, key), _MISSING)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        return self._base.get(table, key)


class EmptyState:
    """A reader with nothing in it: the state before genesis."""

    def get(self, table: Table, key: bytes) -> bytes | None:
        return None
