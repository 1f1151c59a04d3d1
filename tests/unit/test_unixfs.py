"""Content ids equal to IPFS's at every size: the reference importer's ids (profile
unixfs-v1-2025) for seeded blobs from 0 bytes to 1 GiB + 1, the tree's nodes written byte
for byte as it writes them, and nothing else taken for a node. With `node` and `npm` on the
machine, the importer itself runs on the same bytes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from carechain.consensus.cid import DAG_PB, RAW, ContentId
from carechain.storage.blobs.unixfs import (
    CHUNK_BYTES,
    BadNode,
    DagBuilder,
    Link,
    content_id,
    decode_node,
    encode_node,
)
from carechain.tests.unixfs_blobs import interop_tools, reference_ids, seeded_chunks

SMALL = [size for size in reference_ids() if size <= 8 * CHUNK_BYTES]


def _streamed_id(size: int) -> str:
    """The id of the seeded blob of `size` bytes, a leaf at a time (1 GiB never in memory)."""
    builder = DagBuilder()
    leaves = list(seeded_chunks(size)) if size == 0 else seeded_chunks(size)
    for leaf in leaves or [b""]:
        for _ in builder.add_leaf(leaf):
            pass
    for _ in builder.finish():
        pass
    return builder.root.text


@pytest.mark.parametrize("size", SMALL)
def test_ids_are_the_reference_importers(size: int) -> None:
    expected = reference_ids()[size]
    assert content_id(b"".join(seeded_chunks(size))) == expected
    assert _streamed_id(size) == expected
    assert expected.startswith("bafkrei" if size <= CHUNK_BYTES else "bafybei")


def test_a_blob_of_1_gib_and_1_byte_streamed_has_the_reference_id() -> None:
    """1,025 leaves: two levels (a node of 1,024 links and one of 1) under the root."""
    size = 1024 * CHUNK_BYTES + 1
    assert _streamed_id(size) == reference_ids()[size]


LEAVES = [ContentId.of_block(RAW, bytes([i])) for i in range(3)]
NODE = encode_node([Link(leaf, 1, 1) for leaf in LEAVES])


def test_a_node_decodes_to_its_links_and_sizes() -> None:
    links, filesize, blocksizes = decode_node(NODE)
    assert [cid for cid, _ in links] == LEAVES
    assert (filesize, blocksizes) == (3, [1, 1, 1])


@pytest.mark.parametrize(
    ("problem", "data"),
    [
        ("a trailing byte", NODE + b"\x00"),
        ("sizes that do not add up", NODE.replace(b"\x18\x03\x20", b"\x18\x04\x20")),
        ("no links", b"\x0a\x04\x08\x02\x18\x00"),
        ("a link to a CIDv0", NODE.replace(LEAVES[0].binary, b"\x12\x20" + bytes(34))),
        ("the data before the links", NODE[-10:] + NODE[:-10]),
    ],
)
def test_nothing_else_is_taken_for_a_node(problem: str, data: bytes) -> None:
    with pytest.raises(BadNode):
        decode_node(data)


def test_a_node_of_more_than_1024_links_is_refused() -> None:
    leaf = ContentId.of_block(RAW, b"x")
    with pytest.raises(BadNode, match="1025 links"):
        decode_node(encode_node([Link(leaf, 1, 1)] * 1025))


def test_the_builder_gives_every_node_before_the_root() -> None:
    builder = DagBuilder()
    nodes = []
    for leaf in seeded_chunks(3 * CHUNK_BYTES):
        nodes += list(builder.add_leaf(leaf))
    nodes += list(builder.finish())
    assert [cid for cid, _ in nodes] == [builder.root]
    assert builder.root.codec == DAG_PB
    assert builder.filesize == 3 * CHUNK_BYTES


@pytest.mark.slow
def test_the_reference_importer_gives_the_same_ids_live(tmp_path: Path) -> None:
    """`ipfs-unixfs-importer`, pinned in tests/interop/unixfs/package.json, run on the same
    seeded bytes: its ids are carechain's (and the committed vectors')."""
    work = interop_tools(tmp_path)
    sizes = [0, 1000, CHUNK_BYTES, CHUNK_BYTES + 1, 5 * CHUNK_BYTES + 3, 1030 * CHUNK_BYTES]
    ran = subprocess.run(
        ["node", "vectors.mjs", *map(str, sizes)],
        cwd=work, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    theirs = {int(size): cid for size, cid in json.loads(ran.stdout)["ids"].items()}
    assert theirs == {size: _streamed_id(size) for size in sizes}
