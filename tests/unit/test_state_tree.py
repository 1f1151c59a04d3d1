"""The state tree's laws: the incremental root equals the root of the entries computed from
scratch (whatever the history), every proof verifies and every tampered one fails, the stale
list names exactly the nodes the new tree dropped, and malformed proofs are refused cleanly."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.consensus.ledger.state_proof import (
    ProofError,
    ProofLevel,
    StateProof,
    prove,
    verify,
)
from carechain.consensus.ledger.state_tree import (
    EMPTY_ROOT,
    Leaf,
    NodeKey,
    Ref,
    TreeNodeError,
    change_of,
    children,
    decode_internal,
    decode_leaf,
    decode_root,
    node_hash,
    ref_hash,
    ref_is_leaf,
    ref_version,
    root_hash,
    root_of,
    update,
)


class Nodes:
    """Every node ever written, by (version, path): the tree's in-memory store."""

    def __init__(self) -> None:
        self.nodes: dict[NodeKey, bytes] = {}
        self.leaves_read = 0

    def node(self, version: int, path: bytes) -> bytes:
        raw = self.nodes.get((version, path))
        if raw is None:
            raise TreeNodeError(f"no node {version} {path.hex()}")
        self.leaves_read += raw[:1] == b"\x02"
        return raw

    def reachable(self, root: Ref | None) -> set[NodeKey]:
        found: set[NodeKey] = set()
        pending = [] if root is None else [(root, b"")]
        while pending:
            ref, path = pending.pop()
            found.add((ref_version(ref), path))
            raw = self.node(ref_version(ref), path)
            assert node_hash(raw) == ref_hash(ref), f"node {path.hex()} does not hash to its ref"
            assert ref_is_leaf(ref) == (raw[:1] == b"\x02")
            if not ref_is_leaf(ref):
                below = children(raw)
                assert not (len(below) == 1 and ref_is_leaf(below[0][1])), "a lone leaf"
                pending.extend((child, path + bytes((slot,))) for slot, child in below)
        return found


class Tree:
    def __init__(self) -> None:
        self.store = Nodes()
        self.root: Ref | None = None
        self.version = 0
        self.entries: dict[tuple[int, bytes], bytes] = {}
        self.leaves_read = 0

    def apply(self, writes: dict[tuple[int, bytes], bytes | None], known: bool = True) -> None:
        """`known`: each change says whether its entry is in the tree (as a block's diff
        does), so the update skips reading the leaves it replaces; else it reads them."""
        self.version += 1
        changes = [
            change_of(table, key, value, known and (table, key) in self.entries)
            for (table, key), value in writes.items()
        ]
        before = self.store.reachable(self.root)
        self.store.leaves_read = 0
        result = update(self.store, self.root, self.version, changes)
        self.leaves_read = self.store.leaves_read  # by the update alone
        self.store.nodes.update(result.written)
        self.root = result.root
        after = self.store.reachable(self.root)
        assert set(result.stale) == before - after, "stale must be exactly what the tree dropped"
        assert set(result.written) == after - before
        for entry, value in writes.items():
            if value is None:
                self.entries.pop(entry, None)
            else:
                self.entries[entry] = value

    def expected_root(self) -> bytes:
        return root_of(Leaf.of(t, k, v) for (t, k), v in self.entries.items())


WRITES = st.dictionaries(
    st.tuples(st.integers(1, 3), st.binary(min_size=1, max_size=2)),
    st.one_of(st.none(), st.binary(max_size=4)),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(WRITES, max_size=8),
    st.integers(1, 3),
    st.binary(min_size=1, max_size=2),
    st.booleans(),
)
def test_incremental_root_is_the_root_of_the_entries(
    batches: list[dict[tuple[int, bytes], bytes | None]], table: int, probe: bytes, known: bool
) -> None:
    tree = Tree()
    for writes in batches:
        tree.apply(writes, known)
        assert root_hash(tree.root) == tree.expected_root()
    root = root_hash(tree.root)
    for (t, k), value in list(tree.entries.items())[:10]:
        proof, leaf = prove(tree.store, tree.root, t, k)
        assert leaf is not None
        assert leaf.value == value
        verify(root, t, k, value, proof)
        with pytest.raises(ProofError):
            verify(root, t, k, value + b"!", proof)
        with pytest.raises(ProofError):
            verify(root, t, k, None, proof)
    present = tree.entries.get((table, probe))
    proof, leaf = prove(tree.store, tree.root, table, probe)
    verify(root, table, probe, present, proof)
    if present is None:
        assert leaf is None
        with pytest.raises(ProofError):
            verify(root, table, probe, b"x", proof)


def test_one_history_or_another_gives_one_root() -> None:
    rng = random.Random(7)
    entries = {(1, rng.randbytes(4)): rng.randbytes(8) for _ in range(400)}
    first, second = Tree(), Tree()
    first.apply(dict(entries))
    items = list(entries.items())
    rng.shuffle(items)
    for start in range(0, len(items), 37):
        second.apply(dict(items[start : start + 37]))
    extra = {(2, b"gone%d" % i): b"v" for i in range(50)}
    second.apply(dict(extra))
    second.apply(dict.fromkeys(extra))  # added, then deleted again
    assert first.root == first.root
    assert root_hash(first.root) == root_hash(second.root) == first.expected_root()


def test_empty_tree_and_one_entry() -> None:
    tree = Tree()
    tree.apply({})
    assert root_hash(tree.root) == EMPTY_ROOT
    proof, _ = prove(tree.store, tree.root, 1, b"a")
    verify(EMPTY_ROOT, 1, b"a", None, proof)
    tree.apply({(1, b"a"): b"1"})
    assert tree.root is not None
    assert ref_is_leaf(tree.root)
    proof, leaf = prove(tree.store, tree.root, 1, b"a")
    verify(ref_hash(tree.root), 1, b"a", b"1", proof)
    proof, leaf = prove(tree.store, tree.root, 1, b"b")
    assert leaf is None
    assert proof.leaf is not None
    verify(ref_hash(tree.root), 1, b"b", None, proof)
    tree.apply({(1, b"a"): None})
    assert tree.root is None


def _tamper(proof: StateProof, rng: random.Random) -> StateProof:
    levels = list(proof.levels)
    choice = rng.randrange(4)
    if choice == 0 and levels:
        index = rng.randrange(len(levels))
        level = levels[index]
        if level.siblings:
            siblings = list(level.siblings)
            at = rng.randrange(len(siblings))
            siblings[at] = bytes([siblings[at][0] ^ 1]) + siblings[at][1:]
            levels[index] = ProofLevel(level.bitmap, tuple(siblings))
            return StateProof(tuple(levels), proof.leaf)
    if choice == 1 and levels:
        index = rng.randrange(len(levels))
        levels[index] = ProofLevel(
            levels[index].bitmap ^ (1 << rng.randrange(16)), levels[index].siblings
        )
        return StateProof(tuple(levels), proof.leaf)
    if choice == 2 and levels:
        return StateProof(tuple(levels[1:]), proof.leaf)
    return StateProof(tuple(levels), None if proof.leaf else (bytes(32), bytes(32)))


def test_tampered_proofs_fail() -> None:
    seed = 11
    rng = random.Random(seed)
    tree = Tree()
    tree.apply({(1, rng.randbytes(3)): rng.randbytes(5) for _ in range(300)})
    root = root_hash(tree.root)
    for (table, key), value in list(tree.entries.items())[:100]:
        proof, _ = prove(tree.store, tree.root, table, key)
        tampered = _tamper(proof, rng)
        if tampered == proof:
            continue
        with pytest.raises(ProofError):
            verify(root, table, key, value, tampered)
        round_trip = StateProof.from_json(json.loads(json.dumps(proof.to_json())))
        assert round_trip == proof, f"seed {seed}"


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        JSONISH,
        st.fixed_dictionaries(
            {
                "levels": st.lists(
                    st.fixed_dictionaries(
                        {
                            "bitmap": st.integers(-1, 70000),
                            "siblings": st.lists(st.text(max_size=66), max_size=3),
                        }
                    ),
                    max_size=3,
                ),
                "leaf": JSONISH,
            }
        ),
    )
)
def test_malformed_proofs_are_refused_cleanly(document: object) -> None:
    try:
        proof = StateProof.from_json(document)
    except ProofError:
        return
    with pytest.raises(ProofError):
        verify(b"\x07" * 32, 1, b"k", b"v", proof)


def test_damaged_nodes_are_named() -> None:
    with pytest.raises(TreeNodeError):
        decode_internal(b"\x01\x80\x00\x00\x00")
    with pytest.raises(TreeNodeError):
        node_hash(b"\x09")
    with pytest.raises(TreeNodeError):
        decode_leaf(b"\x02" + bytes(65) + b"\x00\x09")
    with pytest.raises(TreeNodeError, match="root reference"):
        decode_root(b"\x00" * 40)
    assert decode_root(b"") is None


def test_an_update_of_known_entries_reads_no_leaf() -> None:
    """A block's diff knows which entries it replaces: their leaves are not read from disk
    (at a million entries they are almost never cached); a new entry's neighbour still is."""
    seed = 12
    rng = random.Random(seed)
    tree = Tree()
    tree.apply({(1, rng.randbytes(4)): rng.randbytes(5) for _ in range(500)})
    existing = list(tree.entries)[:100]
    tree.apply({entry: rng.randbytes(6) for entry in existing})
    assert tree.leaves_read == 0, f"seed {seed}"
    assert root_hash(tree.root) == tree.expected_root()
    tree.apply(dict.fromkeys(existing[:50]))  # deletes may lift a lone neighbour
    assert root_hash(tree.root) == tree.expected_root()
    tree.apply({entry: rng.randbytes(6) for entry in list(tree.entries)[:100]}, known=False)
    assert tree.leaves_read == 100, f"seed {seed}"
