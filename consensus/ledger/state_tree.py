"""The authenticated state tree: a hexary sparse Merkle tree over the ledger's entries, whose
root is the header's `state_root`.

Every entry `(table, key) -> value` is a leaf at the path of its key hash
(`sha256(0x10 || table || key)`, 64 nibbles). The tree is canonical, so its root depends only
on the entries, never on the order they were written in (as Diem/Aptos's Jellyfish Merkle tree):
- an empty subtree is absent (the empty tree's root is 32 zero bytes);
- a subtree holding one entry is that entry's leaf, placed at the shallowest depth where its
  path is unique; an internal node never has a single child that is a leaf;
- an internal node has up to 16 children by the next nibble.

Hashes are domain-separated by their first byte, like the transaction root's (RFC 6962):
    leaf     = sha256(0x00 || key hash || value hash)       value hash = sha256(0x11 || value)
    internal = sha256(0x01 || bitmap:2 || child hashes in slot order)
An internal node hashes its children's list in one call, as Ethereum's hexary trie does, and not
as four levels of binary hashes as the Jellyfish tree: a proof carries up to 15 sibling hashes
per level instead of 4 (about 2 KiB at a million entries instead of 0.7), and a block's update
costs one hash per touched node instead of up to fifteen, which in Python is what counts.
A proof (`state_proof`) shows an entry's value or its absence with O(log16 n) hashes.

This module owns the pure update: given the nodes of the tree at one version (through a
`NodeReader`) and a block's changes, it returns the new root, the nodes to write (keyed by the
version that writes them and their path) and the nodes that became stale, so the store can keep
the trees of recent heights and prune older ones (`storage/state.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from carechain.consensus.errors import InvalidInput

EMPTY_ROOT: Final = bytes(32)
RADIX: Final = 16
MAX_DEPTH: Final = 64  # nibbles in a 32-byte key hash

_LEAF: Final = b"\x00"
_INTERNAL: Final = b"\x01"
_KEY: Final = b"\x10"
_VALUE: Final = b"\x11"
LEAF_TAG: Final = b"\x02"  # a stored leaf starts with it; a stored internal node with 0x01
_sha256 = hashlib.sha256


class TreeNodeError(InvalidInput):
    """A stored tree node is missing or unreadable: the data folder was damaged."""

    code = "tree_corrupt"


def key_hash(table: int, key: bytes) -> bytes:
    return _sha256(_KEY + bytes((table,)) + key).digest()


def value_hash(value: bytes) -> bytes:
    return _sha256(_VALUE + value).digest()


def leaf_hash(key_digest: bytes, value_digest: bytes) -> bytes:
    return _sha256(_LEAF + key_digest + value_digest).digest()


def internal_hash(bitmap: int, child_hashes: Iterable[bytes]) -> bytes:
    return _sha256(_INTERNAL + bitmap.to_bytes(2, "big") + b"".join(child_hashes)).digest()


def nibble(digest: bytes, depth: int) -> int:
    byte = digest[depth >> 1]
    return byte & 0x0F if depth & 1 else byte >> 4


# A parent's reference to a child, as stored inside the parent: the version that wrote the
# child (8 bytes), its hash (32) and 1 if it is a leaf else 0. Plain bytes, because a block's
# update makes thousands of them and an internal node is then just its references joined.
Ref = bytes
REF_BYTES: Final = 41


def ref_version(ref: Ref) -> int:
    return int.from_bytes(ref[:8], "big")


def ref_hash(ref: Ref) -> bytes:
    return ref[8:40]


def ref_is_leaf(ref: Ref) -> bool:
    return ref[40] == 1


def decode_root(raw: bytes) -> Ref | None:
    """A stored root reference; b"" is the empty tree."""
    if not raw:
        return None
    if len(raw) != REF_BYTES or raw[40] > 1:
        raise TreeNodeError(f"a root reference of {len(raw)} bytes is unreadable")
    return raw


def root_hash(root: Ref | None) -> bytes:
    return EMPTY_ROOT if root is None else root[8:40]


def encode_internal(bitmap: int, refs: Sequence[Ref]) -> tuple[bytes, bytes]:
    """An internal node's stored bytes and its hash, from its bitmap (slot 0 the highest bit)
    and the references of its children in slot order.
    Stored: 0x01 || bitmap:2 || the references.  Hashed: 0x01 || bitmap:2 || their hashes."""
    head = _INTERNAL + bitmap.to_bytes(2, "big")
    digest = _sha256(head + b"".join([ref[8:40] for ref in refs])).digest()
    return head + b"".join(refs), digest


def decode_internal(raw: bytes) -> tuple[int, list[Ref]]:
    """An internal node's bitmap and its children's references in slot order."""
    if raw[:1] != _INTERNAL or len(raw) < 3:
        raise TreeNodeError("a tree node that should be internal is not")
    bitmap = int.from_bytes(raw[1:3], "big")
    if len(raw) != 3 + REF_BYTES * bitmap.bit_count() or bitmap == 0:
        raise TreeNodeError("an internal tree node's length does not match its bitmap")
    return bitmap, [raw[offset : offset + REF_BYTES] for offset in range(3, len(raw), REF_BYTES)]


def internal_of(raw: bytes) -> tuple[int, tuple[Ref, ...]]:
    """`decode_internal`, its children as a tuple: kept decoded so (`Internal`)."""
    bitmap, refs = decode_internal(raw)
    return bitmap, tuple(refs)


# remembered for readers that keep no decoded nodes of their own (`internal_reader`)
_internal_of = functools.lru_cache(maxsize=8192)(internal_of)


def slot_index(bitmap: int, slot: int) -> int:
    """Where the child at `slot` is (or would go) among a node's present children."""
    return (bitmap >> (16 - slot)).bit_count()


def children(raw: bytes) -> list[tuple[int, Ref]]:
    """A stored internal node's children: (slot, reference), in slot order."""
    bitmap, refs = decode_internal(raw)
    slots = [slot for slot in range(RADIX) if bitmap & (0x8000 >> slot)]
    return list(zip(slots, refs, strict=True))


def child_at(bitmap: int, refs: Sequence[Ref], slot: int) -> Ref | None:
    return refs[slot_index(bitmap, slot)] if bitmap & (0x8000 >> slot) else None


class Leaf(typing.NamedTuple):
    """One entry as its leaf holds it: the leaf keeps the entry itself, so a proof at an older
    height has its value (stored as `change_of` makes it)."""

    key_hash: bytes
    value_hash: bytes
    table: int
    key: bytes
    value: bytes

    @classmethod
    def of(cls, table: int, key: bytes, value: bytes) -> Leaf:
        return cls(key_hash(table, key), value_hash(value), table, key, value)

    def hash(self) -> bytes:
        return leaf_hash(self.key_hash, self.value_hash)


def decode_leaf(raw: bytes) -> Leaf:
    if raw[:1] != LEAF_TAG or len(raw) < 68:
        raise TreeNodeError("a tree node that should be a leaf is not")
    key_end = 68 + int.from_bytes(raw[66:68], "big")
    if len(raw) < key_end:
        raise TreeNodeError("a leaf tree node is shorter than its key")
    return Leaf(raw[1:33], raw[33:65], raw[65], raw[68:key_end], raw[key_end:])


def stored_leaf_hash(raw: bytes) -> bytes:
    """The hash of a stored leaf, without decoding it."""
    return _sha256(_LEAF + raw[1:65]).digest()


def node_hash(raw: bytes) -> bytes:
    """The hash of any stored node (a store's full check)."""
    if raw[:1] == LEAF_TAG:
        decode_leaf(raw)
        return stored_leaf_hash(raw)
    return encode_internal(*decode_internal(raw))[1]


class NodeReader(typing.Protocol):
    def node(self, version: int, path: bytes) -> bytes:
        """The stored bytes of the node `version` wrote at `path` (one nibble a byte);
        TreeNodeError if there is none."""
        ...


Internal = tuple[int, tuple[Ref, ...]]  # an internal node decoded: its bitmap, its children


def internal_reader(reader: NodeReader) -> typing.Callable[[int, bytes], Internal]:
    """How an update reads an internal node decoded: through the reader's own cache of
    decoded nodes when it keeps one (`internal(version, path)`, as the node's store does),
    else by decoding what `node` returns."""
    kept: typing.Callable[[int, bytes], Internal] | None = getattr(reader, "internal", None)
    if kept is not None:
        return kept
    return lambda version, path: _internal_of(reader.node(version, path))


NodeKey = tuple[int, bytes]  # (version, path)


@dataclasses.dataclass(frozen=True, slots=True)
class TreeUpdate:
    """What one version's changes do to the tree."""

    root: Ref | None
    written: dict[NodeKey, bytes]  # new nodes (stored bytes), all at the update's version
    stale: tuple[NodeKey, ...]  # nodes of the tree before that the new tree no longer holds
    # the new internal nodes decoded, for a store that keeps them so (not part of the update)
    decoded: dict[NodeKey, Internal] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def root_hash(self) -> bytes:
        return root_hash(self.root)


# A change: the key hash, the new leaf's stored bytes (None: the entry is deleted) and whether
# the entry is in the tree before (its old value is known to the caller, as a block's diff
# knows it): then the leaf the change reaches is that entry's own and need not be read.
Change = tuple[bytes, bytes | None, bool]


def change_of(table: int, key: bytes, value: bytes | None, existed: bool = False) -> Change:
    """The change that sets `(table, key)` to `value` (None: deletes it), with the new leaf's
    stored bytes: 0x02 || key hash || value hash || table || key length:2 || key || value.
    `existed`: the entry is in the tree the change applies to (False when not known)."""
    table_byte = bytes((table,))
    digest = _sha256(_KEY + table_byte + key).digest()
    if value is None:
        return digest, None, existed
    return (
        digest,
        b"".join(
            (
                LEAF_TAG,
                digest,
                _sha256(_VALUE + value).digest(),
                table_byte,
                len(key).to_bytes(2, "big"),
                key,
                value,
            )
        ),
        existed,
    )


def update(
    reader: NodeReader, root: Ref | None, version: int, changes: Iterable[Change]
) -> TreeUpdate:
    """Apply `changes` (at most one per key hash) to the tree whose root is `root`, writing
    new nodes at `version` (above every version in the tree)."""
    ordered = sorted((digest.hex(), digest, leaf, existed) for digest, leaf, existed in changes)
    for index in range(1, len(ordered)):
        if ordered[index][1] == ordered[index - 1][1]:
            raise ValueError("two changes of one key in one update")
    run = _Update(reader, version)
    new_root = run.subtree(root, b"", ordered) if ordered else root
    written = run.written
    decoded = {key: node for key, node in run.decoded.items() if key in written}
    return TreeUpdate(new_root, written, tuple(run.stale), decoded)


# A change while updating: (the key hash in hex, whose characters are the path's nibbles,
# the key hash, the new leaf or None, whether the entry is in the tree before)
_Pending = tuple[str, bytes, bytes | None, bool]


class _Update:
    __slots__ = ("decoded", "internal", "prefix", "reader", "stale", "version", "written")

    def __init__(self, reader: NodeReader, version: int) -> None:
        self.reader = reader
        self.internal = internal_reader(reader)
        self.version = version
        self.prefix = version.to_bytes(8, "big")
        self.written: dict[NodeKey, bytes] = {}
        self.decoded: dict[NodeKey, Internal] = {}
        self.stale: list[NodeKey] = []

    def subtree(self, ref: Ref | None, path: bytes, changes: Sequence[_Pending]) -> Ref | None:
        """The new reference at `path`, where `ref` stood before `changes` (all under it)."""
        if ref is None:
            return self.build(path, [(c[1], c[2]) for c in changes if c[2] is not None])
        version = int.from_bytes(ref[:8], "big")
        if ref[40]:
            return self.replace_leaf(ref, version, path, changes)
        bitmap, known = self.internal(version, path)
        refs = list(known)
        changed = False
        for slot, group in _by_slot(changes, len(path)):
            bit = 0x8000 >> slot
            index = slot_index(bitmap, slot)
            old = refs[index] if bitmap & bit else None
            new = self.subtree(old, path + _NIBBLE[slot], group)
            if new == old:
                continue
            changed = True
            if new is None:
                del refs[index]
                bitmap &= ~bit
            elif old is None:
                refs.insert(index, new)
                bitmap |= bit
            else:
                refs[index] = new
        if not changed:
            return ref
        self.stale.append((version, path))
        if not refs:
            return None
        if len(refs) == 1 and refs[0][40]:
            slot = 16 - bitmap.bit_length()
            return self.lift(refs[0], path + _NIBBLE[slot], path)
        encoded, digest = encode_internal(bitmap, refs)
        self.written[(self.version, path)] = encoded
        self.decoded[(self.version, path)] = (bitmap, tuple(refs))
        return self.prefix + digest + b"\x00"

    def replace_leaf(
        self, ref: Ref, version: int, path: bytes, changes: Sequence[_Pending]
    ) -> Ref | None:
        if any(c[3] for c in changes):
            # One of the changes is of an entry the tree holds; under this path the tree holds
            # one leaf, so it is that entry's, and the change replaces it: no need to read it.
            leaves = [(c[1], c[2]) for c in changes if c[2] is not None]
            self.stale.append((version, path))
            if len(leaves) != 1:
                return self.build(path, leaves)
            digest = stored_leaf_hash(leaves[0][1])
            if digest == ref[8:40]:
                self.stale.pop()
                return ref  # rewritten with the value it had
            return self.put_leaf(path, leaves[0][1], digest)
        existing = self.reader.node(version, path)
        if existing[:1] != LEAF_TAG:
            raise TreeNodeError(f"the tree node at {path.hex()} should be a leaf")
        existing_key = existing[1:33]
        leaves = [(c[1], c[2]) for c in changes if c[2] is not None]
        if all(c[1] != existing_key for c in changes):
            leaves.append((existing_key, existing))
            leaves.sort()
        elif leaves == [(existing_key, existing)]:
            return ref  # rewritten with the value it had
        self.stale.append((version, path))
        return self.build(path, leaves)

    def build(self, path: bytes, leaves: list[tuple[bytes, bytes]]) -> Ref | None:
        """A new subtree at `path` holding exactly `leaves` (key hash, stored leaf), sorted."""
        if not leaves:
            return None
        if len(leaves) == 1:
            return self.put_leaf(path, leaves[0][1])
        depth = len(path)
        if depth >= MAX_DEPTH:
            raise ValueError("two entries with one key hash")
        bitmap = 0
        refs = []
        for slot, group in _by_slot(leaves, depth, hexed=False):
            child = self.build(path + _NIBBLE[slot], list(group))
            if child is not None:
                bitmap |= 0x8000 >> slot
                refs.append(child)
        encoded, digest = encode_internal(bitmap, refs)
        self.written[(self.version, path)] = encoded
        self.decoded[(self.version, path)] = (bitmap, tuple(refs))
        return self.prefix + digest + b"\x00"

    def lift(self, child: Ref, at: bytes, to: bytes) -> Ref:
        """Move the lone leaf `child` (at path `at`) up to `to`: canonical trees have no
        internal node whose only child is a leaf. A leaf's bytes do not depend on its place."""
        raw = self.written.pop((self.version, at), None)
        if raw is None:
            version = int.from_bytes(child[:8], "big")
            raw = self.reader.node(version, at)
            self.stale.append((version, at))
        return self.put_leaf(to, raw)

    def put_leaf(self, path: bytes, raw: bytes, digest: bytes | None = None) -> Ref:
        """Write the stored leaf `raw` at `path` (`digest`: its hash, when known)."""
        self.written[(self.version, path)] = raw
        return self.prefix + (digest or stored_leaf_hash(raw)) + b"\x01"


_NIBBLE: Final = tuple(bytes((slot,)) for slot in range(RADIX))
_HEX_SLOT: Final = {character: int(character, 16) for character in "0123456789abcdef"}

T = typing.TypeVar("T", bound=tuple[Any, ...])


def _by_slot(
    items: Sequence[T], depth: int, *, hexed: bool = True
) -> Iterator[tuple[int, Sequence[T]]]:
    """Items sorted by key hash, split into runs by the nibble at `depth`: from the hex of the
    key hash (item 0) when `hexed`, else from the key hash itself (item 0)."""
    start = 0
    count = len(items)
    while start < count:
        slot = _HEX_SLOT[items[start][0][depth]] if hexed else nibble(items[start][0], depth)
        end = start + 1
        if hexed:
            character = items[start][0][depth]
            while end < count and items[end][0][depth] == character:
                end += 1
        else:
            while end < count and nibble(items[end][0], depth) == slot:
                end += 1
        yield slot, items[start:end]
        start = end


def root_of(leaves: Iterable[Leaf]) -> bytes:
    """The root of a whole set of entries, from scratch: the definition the incremental update
    must agree with (a store's full check, the tests' oracle)."""
    ordered = sorted(leaves, key=lambda leaf: leaf.key_hash)
    return _hash_of(ordered, 0) if ordered else EMPTY_ROOT


def _hash_of(leaves: Sequence[Leaf], depth: int) -> bytes:
    if len(leaves) == 1:
        return leaves[0].hash()
    if depth >= MAX_DEPTH:
        raise ValueError("two entries with one key hash")
    bitmap = 0
    hashes = []
    for slot, group in _by_slot(leaves, depth, hexed=False):
        bitmap |= 0x8000 >> slot
        hashes.append(_hash_of(group, depth + 1))
    return internal_hash(bitmap, hashes)
