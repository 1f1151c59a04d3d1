"""The ledger state on a KV store: a `StateReader` for the ledger, the authenticated state
tree's nodes (a `NodeReader`), and atomic application of a block's `StateDiff` together with the
state height, the tree's new nodes and its root.

The trees of the last `heights_kept` heights stay whole, so an entry can be proved at any of
them; a node the tree of height s no longer holds is indexed as stale since s and deleted once s
leaves that window, in the same batch as the block that moves it out.

`verify()` walks the whole tree against every entry: a damaged store is found at startup, with
the node or entry that is wrong named, instead of producing a different state root in the middle
of consensus.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, TypeVar

from carechain.consensus.codec import Record
from carechain.consensus.errors import InvalidInput, InvariantViolation
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.governance import genesis_state
from carechain.consensus.ledger.state import StateDiff, Table
from carechain.consensus.ledger.state_proof import StateProof, prove
from carechain.consensus.ledger.state_tree import (
    LEAF_TAG,
    Internal,
    Leaf,
    Ref,
    TreeNodeError,
    TreeUpdate,
    children,
    decode_leaf,
    decode_root,
    internal_of,
    node_hash,
    ref_hash,
    ref_is_leaf,
    ref_version,
    root_hash,
)
from carechain.storage import schema
from carechain.storage.kv import KV, WriteBatch

R = TypeVar("R", bound=Record)


# a node whose pruning fell behind (the window was shortened) catches up by this many heights
# a block, so no one commit carries an unbounded batch
PRUNE_HEIGHTS_MAX = 16


class StateCorruptError(InvalidInput):
    code = "state_corrupt"


class HeightNotKept(InvalidInput):
    """A proof was asked for at a height whose tree this node no longer keeps."""

    code = "height_not_kept"


NODES_KEPT_MAX = 100_000  # internal tree nodes kept in memory


class StateAt:
    """A `StateReader` over the tree of one kept height: each read walks that tree."""

    def __init__(self, store: StateStore, height: int, root: Ref | None) -> None:
        self.store = store
        self.height = height
        self.root = root

    def prove(self, table: Table, key: bytes) -> tuple[StateProof, bytes | None]:
        """The proof of `(table, key)` in this height's tree, and its value (None: absent)."""
        try:
            proof, leaf = prove(self.store, self.root, table, key)
        except TreeNodeError as exc:
            raise StateCorruptError(str(exc)) from None
        return proof, None if leaf is None else leaf.value

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.prove(table, key)[1]


class ProvedReads:
    """A `StateReader` over the tree of one kept height that keeps every entry it read with
    its proof, in the order first read: what a node sends so that a light client can run the
    same query over the proved entries (`consensus/ledger/queries.py`)."""

    def __init__(self, at: StateAt, entries_max: int) -> None:
        self.at = at
        self.entries_max = entries_max
        self.proved: dict[tuple[Table, bytes], tuple[StateProof, bytes | None]] = {}

    def get(self, table: Table, key: bytes) -> bytes | None:
        found = self.proved.get((table, key))
        if found is None:
            if len(self.proved) >= self.entries_max:
                raise AnswerTooLarge(
                    f"the answer needs more than {self.entries_max} proved entries",
                    hint="ask for a page (first, limit) or a narrower question",
                )
            found = self.proved[table, key] = self.at.prove(table, key)
        return found[1]

    def entries_json(self) -> list[dict[str, Any]]:
        """The entries read, each with its proof, as a list route's `?proof=true` sends them."""
        return [
            {
                "table": table.label,
                "key": key.hex(),
                "value": None if value is None else value.hex(),
                "proof": proof.to_json(),
            }
            for (table, key), (proof, value) in self.proved.items()
        ]


class AnswerTooLarge(InvalidInput):
    code = "answer_too_large"


class StateStore:
    """Ledger state on `kv`. Keeps up to `kept_max` entries read or committed lately, as
    stored and (once loaded) decoded: a busy account's entry is read from disk and decoded
    once, not for every transaction, and a block's diff finds the values it replaces here.
    Only this store writes state, so it knows when an entry changes; it also keeps the
    tree's current root and its nodes read or written lately."""

    def __init__(self, kv: KV, kept_max: int = 20_000, heights_kept: int = 1000) -> None:
        if heights_kept < 1:
            raise ValueError("the state tree keeps at least the current height")
        self.kv = kv
        self.kept_max = kept_max
        self.heights_kept = heights_kept
        # internal tree nodes read or written lately, by (version, path): every block's update
        # walks down through them (at a million entries there are about 70,000, ~20 MiB)
        self.nodes_kept_max = NODES_KEPT_MAX
        self._nodes: OrderedDict[tuple[int, bytes], Internal] = OrderedDict()
        self._root: Ref | bool | None = False  # False: not read yet
        self._staged: TreeUpdate | None = None  # the tree update of the batch stage() made
        # (table, key) -> (stored value, its decoding or None), oldest first: an OrderedDict,
        # because a plain dict's oldest entry gets slow to drop as deletions pile up at its front
        self._kept: OrderedDict[tuple[Table, bytes], tuple[bytes, Record | None]] = OrderedDict()

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
    def root_ref(self) -> Ref | None:
        """The reference to the current tree's root (None: the tree is empty)."""
        if self._root is False:
            self._root = self.root_at(self.height)
        return self._root  # type: ignore[return-value]

    @property
    def root(self) -> bytes:
        return root_hash(self.root_ref)

    def root_at(self, height: int) -> Ref | None:
        raw = self.kv.get(schema.tree_root_key(height))
        if raw is None and height <= self.height - self.heights_kept:
            raise HeightNotKept(
                f"the state tree of height {height} is not kept (this node keeps the last "
                f"{self.heights_kept} heights)",
                hint=f"ask for a height from {self.height - self.heights_kept + 1} on",
            )
        if raw is None:
            raise StateCorruptError(f"the state tree's root of height {height} is missing")
        try:
            return decode_root(raw)
        except TreeNodeError as exc:
            raise StateCorruptError(f"height {height}: {exc}") from None

    # -- the state tree -------------------------------------------------------------------------
    def node(self, version: int, path: bytes) -> bytes:
        """A node's stored bytes, as on disk (leaves, and a full check, read them so)."""
        raw = self.kv.get(schema.tree_node_key(version, path))
        if raw is None:
            raise TreeNodeError(
                f"the state tree node written at height {version} at path {path.hex() or 'root'}"
                " is missing",
                hint="restore the data directory from a backup or resync from peers",
            )
        return raw

    def internal(self, version: int, path: bytes) -> Internal:
        """An internal node decoded (`state_tree.internal_reader`): kept so, since every
        block's update and every proof walk down through the same upper nodes."""
        found = self._nodes.get((version, path))
        if found is None:
            found = internal_of(self.node(version, path))
            self._keep_node(version, path, found)
        return found

    def _keep_node(self, version: int, path: bytes, node: Internal) -> None:
        """Keep an internal node read or written lately, decoded. Leaves are not kept: a
        block's update reads none of the entries it replaces (their diff says they exist),
        and a block writing thousands would push the internal nodes out."""
        if len(self._nodes) >= self.nodes_kept_max:
            self._nodes.popitem(last=False)
        self._nodes[(version, path)] = node

    def tree_update(self, diff: StateDiff) -> TreeUpdate:
        """What `diff`, as the next height's, does to the tree."""
        height = self.height + 1 if self.initialized else 0
        return diff.tree_update(self, self.root_ref if height else None, height)

    def root_after(self, diff: StateDiff) -> bytes:
        """The state root once `diff` is applied as the next height."""
        return self.tree_update(diff).root_hash

    def prove(
        self, table: Table, key: bytes, height: int | None = None
    ) -> tuple[StateProof, bytes | None, int]:
        """The proof of `(table, key)` at `height` (default: the current one): the proof, the
        value there (None: absent) and the height."""
        height = self.height if height is None else height
        if not 0 <= height <= self.height:
            raise StateCorruptError(f"height {height} is not in this node's state")
        proof, value = self.reader_at(height).prove(table, key)
        return proof, value, height

    def reader_at(self, height: int) -> StateAt:
        """The state as it was at `height` (a kept one), read from that height's tree."""
        return StateAt(self, height, self.root_at(height))

    def prover_at(self, height: int, entries_max: int = 20_000) -> ProvedReads:
        """The state at `height` (a kept one), keeping a proof of each entry read."""
        return ProvedReads(self.reader_at(height), entries_max)

    # -- writing --------------------------------------------------------------------------------
    def initialize(self, genesis: Genesis) -> None:
        if self.initialized:
            raise StateCorruptError("the store holds state already; it cannot take genesis again")
        diff = genesis_state(genesis).diff()
        self.kv.write(self.stage(diff, 0), sync=True)
        self.written(diff)

    def stage(self, diff: StateDiff, height: int, batch: WriteBatch | None = None) -> WriteBatch:
        """The writes that move the store to `height` with `diff` applied, in one batch the
        caller may extend (a block store adds the block itself) before `commit`."""
        batch = batch or WriteBatch()
        if height == 0:
            batch.put(schema.SCHEMA_VERSION_KEY, schema.SCHEMA_VERSION.to_bytes(4, "big"))
        for entry in diff.entries:
            key = schema.state_key(entry.table, entry.key)
            if entry.new is None:
                batch.delete(key)
            else:
                batch.put(key, entry.new)
        tree = diff.tree_update(self, self.root_ref if height else None, height)
        self._staged = tree
        for (version, path), raw in tree.written.items():
            batch.put(schema.tree_node_key(version, path), raw)
        if tree.stale:
            batch.put(schema.tree_stale_key(height), schema.encode_stale(tree.stale))
        batch.put(schema.tree_root_key(height), b"" if tree.root is None else tree.root)
        batch.put(schema.STATE_HEIGHT_KEY, height.to_bytes(8, "big"))
        self._stage_pruning(height, batch)
        return batch

    def _stage_pruning(self, height: int, batch: WriteBatch) -> None:
        """Delete what only trees older than the kept window held: nodes stale since a height
        at most `height - heights_kept + 1`, and the roots of heights below the window."""
        target = height - self.heights_kept + 1
        raw = self.kv.get(schema.TREE_PRUNED_KEY)
        pruned = 0 if raw is None else int.from_bytes(raw, "big")
        if target <= pruned:
            return
        for stale_since in range(pruned + 1, min(target, pruned + PRUNE_HEIGHTS_MAX) + 1):
            raw = self.kv.get(schema.tree_stale_key(stale_since))
            try:
                stale = schema.decode_stale(raw or b"")
            except ValueError as exc:
                raise StateCorruptError(f"height {stale_since}: {exc}") from None
            for version, path in stale:
                batch.delete(schema.tree_node_key(version, path))
            batch.delete(schema.tree_stale_key(stale_since))
            batch.delete(schema.tree_root_key(stale_since - 1))
            pruned = stale_since
        batch.put(schema.TREE_PRUNED_KEY, pruned.to_bytes(8, "big"))

    def written(self, diff: StateDiff) -> None:
        """A batch from `stage(diff, ...)` is on disk: keep what it changed up to date."""
        tree = self._staged
        if tree is None:
            raise InvariantViolation("written() without a staged batch")
        self._staged = None
        self._root = tree.root
        for key in tree.stale:  # only the current tree's nodes stay in memory
            self._nodes.pop(key, None)
        for (version, path), node in tree.decoded.items():
            self._keep_node(version, path, node)
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
        """Walk the whole tree: every node must hash to what its parent records, every leaf
        must be its entry, and no entry may be outside the tree. StateCorruptError naming the
        first node or entry that is wrong."""
        if not self.initialized:
            raise StateCorruptError("the store holds no state")
        version = self.kv.get(schema.SCHEMA_VERSION_KEY)
        if version is None or int.from_bytes(version, "big") != schema.SCHEMA_VERSION:
            raise StateCorruptError(
                f"store schema version {version!r}; this carechain reads {schema.SCHEMA_VERSION}"
            )
        try:
            leaves = self._verify_tree()
            entries = sum(1 for _ in self.entries())
        except (TreeNodeError, ValueError) as exc:
            raise StateCorruptError(
                f"state at height {self.height}: {exc}",
                hint="restore the data directory from a backup or resync from peers",
            ) from None
        if entries != leaves:
            raise StateCorruptError(
                f"state at height {self.height} holds {entries} entries but its tree "
                f"{leaves}: {self._entry_outside_tree()} does not match its recorded root",
                hint="restore the data directory from a backup or resync from peers",
            )

    def _verify_tree(self) -> int:
        """Check every node and leaf of the current tree, as on disk (`node` reads there);
        the number of leaves."""
        leaves = 0
        pending = [] if self.root_ref is None else [(self.root_ref, b"")]
        while pending:
            ref, path = pending.pop()
            version = ref_version(ref)
            raw = self.node(version, path)
            where = f"the tree node written at height {version} at path {path.hex() or 'root'}"
            if node_hash(raw) != ref_hash(ref):
                raise TreeNodeError(f"{where} does not hash to what its parent records")
            if (raw[:1] == LEAF_TAG) != ref_is_leaf(ref):
                parent = path[:-1].hex() or "root"
                raise TreeNodeError(
                    f"{where} is {'a leaf' if raw[:1] == LEAF_TAG else 'an internal node'} but "
                    f"its parent at path {parent} records it as the other kind: one of the two "
                    "was changed"
                )
            if not ref_is_leaf(ref):
                pending.extend((child, path + bytes((slot,))) for slot, child in children(raw))
                continue
            leaf = decode_leaf(raw)
            if leaf != Leaf.of(leaf.table, leaf.key, leaf.value):
                raise TreeNodeError(f"{where} is not the leaf of the entry it holds")
            if self.kv.get(schema.state_key(Table(leaf.table), leaf.key)) != leaf.value:
                raise TreeNodeError(
                    f"state entry {Table(leaf.table).name} {leaf.key.hex()[:24]} does not "
                    "match its recorded root: it was changed or lost outside carechain"
                )
            leaves += 1
        return leaves

    def _entry_outside_tree(self) -> str:
        for table, key, value in self.entries():
            _, found, _ = self.prove(table, key)
            if found != value:
                return f"state entry {table.name} {key.hex()[:24]}"
        return "an entry"
