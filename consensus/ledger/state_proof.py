"""Proofs of one state entry against a state root: that `(table, key)` holds a value, or that
it holds none.

A proof is the path from the root to where the key's hash leads: at each level the node's
bitmap and the hashes of its other children (root first), and at the end either the leaf found
there or nothing (the key's slot is empty). Absence is shown either way: by an empty slot, or by
a leaf of another key that shares the path's prefix (the tree is canonical, so a lone leaf at
depth d means no other entry shares its first d nibbles).

`verify` is what a light client runs on a node's answer; it never trusts the node's bytes: every
length and count is checked before use, and any mismatch is a `ProofError` naming what failed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.state_tree import (
    EMPTY_ROOT,
    MAX_DEPTH,
    Leaf,
    NodeReader,
    Ref,
    child_at,
    decode_leaf,
    internal_hash,
    internal_reader,
    key_hash,
    leaf_hash,
    nibble,
    ref_hash,
    ref_is_leaf,
    ref_version,
    slot_index,
    value_hash,
)

SIBLINGS_MAX: Final = 16


class ProofError(InvalidInput):
    """A state proof does not show what it claims, or is malformed."""

    code = "bad_proof"


@dataclasses.dataclass(frozen=True, slots=True)
class ProofLevel:
    bitmap: int  # the node's children, slot 0 the highest bit
    siblings: tuple[bytes, ...]  # the hashes of its children off the key's path, in slot order


@dataclasses.dataclass(frozen=True, slots=True)
class StateProof:
    levels: tuple[ProofLevel, ...]  # root first
    leaf: tuple[bytes, bytes] | None  # (key hash, value hash) of the leaf the path ends at

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": [
                {"bitmap": level.bitmap, "siblings": [sibling.hex() for sibling in level.siblings]}
                for level in self.levels
            ],
            "leaf": None
            if self.leaf is None
            else {"key_hash": self.leaf[0].hex(), "value_hash": self.leaf[1].hex()},
        }

    @classmethod
    def from_json(cls, document: object) -> StateProof:
        """A proof as the API sends it; ProofError for anything else."""
        if not isinstance(document, dict):
            raise ProofError("a state proof must be an object with `levels` and `leaf`")
        levels = document.get("levels")
        if not isinstance(levels, list) or len(levels) > MAX_DEPTH:
            raise ProofError(f"a state proof's `levels` must be a list of at most {MAX_DEPTH}")
        parsed = tuple(_level(index, level) for index, level in enumerate(levels))
        leaf = document.get("leaf")
        if leaf is None:
            return cls(parsed, None)
        if not isinstance(leaf, dict):
            raise ProofError("a state proof's `leaf` must be null or an object")
        return cls(
            parsed,
            (
                _digest(leaf.get("key_hash"), "leaf.key_hash"),
                _digest(leaf.get("value_hash"), "leaf.value_hash"),
            ),
        )


def _level(index: int, level: object) -> ProofLevel:
    if not isinstance(level, dict):
        raise ProofError(f"proof level {index} must be an object")
    bitmap = level.get("bitmap")
    siblings = level.get("siblings")
    if not isinstance(bitmap, int) or isinstance(bitmap, bool) or not 0 < bitmap <= 0xFFFF:
        raise ProofError(f"proof level {index}: `bitmap` must be an integer in 1..65535")
    if not isinstance(siblings, list) or len(siblings) > SIBLINGS_MAX:
        raise ProofError(f"proof level {index}: `siblings` must be a list of at most 16")
    return ProofLevel(
        bitmap,
        tuple(_digest(s, f"levels[{index}].siblings[{i}]") for i, s in enumerate(siblings)),
    )


def _digest(text: object, where: str) -> bytes:
    if not isinstance(text, str) or len(text) != 64:
        raise ProofError(f"{where} must be 64 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ProofError(f"{where} must be 64 hex digits") from None


def prove(
    reader: NodeReader, root: Ref | None, table: int, key: bytes
) -> tuple[StateProof, Leaf | None]:
    """The proof for `(table, key)` in the tree at `root`, and the entry's leaf if present."""
    digest = key_hash(table, key)
    levels: list[ProofLevel] = []
    ref = root
    path = b""
    internal = internal_reader(reader)
    while ref is not None and not ref_is_leaf(ref):
        bitmap, children = internal(ref_version(ref), path)
        refs = list(children)
        slot = nibble(digest, len(path))
        ref = child_at(bitmap, refs, slot)
        if ref is not None:
            refs.pop(slot_index(bitmap, slot))
        levels.append(ProofLevel(bitmap, tuple(ref_hash(child) for child in refs)))
        path += bytes((slot,))
    if ref is None:
        return StateProof(tuple(levels), None), None
    leaf = decode_leaf(reader.node(ref_version(ref), path))
    proof = StateProof(tuple(levels), (leaf.key_hash, leaf.value_hash))
    return proof, leaf if leaf.key_hash == digest else None


def verify(root: bytes, table: int, key: bytes, value: bytes | None, proof: StateProof) -> None:
    """Check that the state whose root is `root` holds `value` at `(table, key)` (None: holds
    nothing there). ProofError naming the first thing that does not verify."""
    digest = key_hash(table, key)
    depth = len(proof.levels)
    if depth > MAX_DEPTH:
        raise ProofError(f"a proof of {depth} levels is deeper than any tree")
    if proof.leaf is not None:
        current = _leaf_end(digest, value, proof.leaf, depth)
    elif value is not None:
        raise ProofError("the proof shows the entry absent, not holding the value")
    else:
        current = EMPTY_ROOT  # the empty tree's root, or (deeper) unused: the slot is empty
    for index in range(depth - 1, -1, -1):
        level = proof.levels[index]
        slot = nibble(digest, index)
        bit = 0x8000 >> slot
        if index == depth - 1 and proof.leaf is None:
            if level.bitmap & bit:
                raise ProofError("the proof ends at a slot its node says is occupied")
            children = list(level.siblings)
        else:
            if not level.bitmap & bit:
                raise ProofError(f"proof level {index} says the key's slot is empty")
            before = slot_index(level.bitmap, slot)  # children left of the path
            children = [*level.siblings[:before], current, *level.siblings[before:]]
        if len(children) != level.bitmap.bit_count():
            raise ProofError(
                f"proof level {index} has {len(level.siblings)} siblings for a bitmap of "
                f"{level.bitmap.bit_count()} children"
            )
        current = internal_hash(level.bitmap, children)
    if current != root:
        raise ProofError("the proof does not lead to the state root")


def _leaf_end(digest: bytes, value: bytes | None, leaf: tuple[bytes, bytes], depth: int) -> bytes:
    found_key, found_value = leaf
    if value is not None:
        if found_key != digest:
            raise ProofError("the proof's leaf is another entry's")
        if found_value != value_hash(value):
            raise ProofError("the value differs from the one the proof commits to")
    else:
        if found_key == digest:
            raise ProofError("the proof shows the entry present")
        if any(nibble(found_key, index) != nibble(digest, index) for index in range(depth)):
            raise ProofError("the proof's leaf is not on the key's path")
    return leaf_hash(found_key, found_value)
