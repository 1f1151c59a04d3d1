"""A blob as IPFS lays a file out under profile `unixfs-v1-2025` (IPIP-499), so that its
content id is the one `ipfs add` and Helia give the same bytes: 1 MiB raw leaves; a blob of
one leaf is that leaf; a larger one is a balanced tree of dag-pb UnixFS File nodes of at most
1,024 links each (filesize and blocksizes filled, links named "" with their Tsize). The
encodings are written here exactly as `@ipld/dag-pb` and `ipfs-unixfs` write them (links
first, then the UnixFS data; blocksizes one field each); decoding is strict: a node is taken
only if it re-encodes to the same bytes, and its sizes add up.

`tests/vectors/unixfs.json` holds the reference importer's ids for seeded blobs from 0 bytes
to 1 GiB + 1 (`tests/interop/unixfs/vectors.mjs` regenerates them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Final

from carechain.consensus.cid import DAG_PB, RAW, BadContentId, ContentId, parse_cid_bytes

CHUNK_BYTES: Final = 1024 * 1024
LINKS_MAX: Final = 1024
NODE_BYTES_MAX: Final = 64 * 1024  # 1,024 links of ~45 bytes and the sizes: ~56 KiB
_FILE: Final = 2  # UnixFS Data.Type FILE


class BadNode(BadContentId):
    """A dag-pb block that is not a UnixFS file node as this store writes them."""

    code = "bad_dag_node"


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    cid: ContentId
    tsize: int  # the bytes of the block it names and of everything under it
    filesize: int  # the file bytes under it (its entry in the parent's blocksizes)


@dataclasses.dataclass(frozen=True, slots=True)
class FileNode:
    links: tuple[Link, ...]
    filesize: int


# -- protobuf pieces ---------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise BadNode("a varint runs past the end of the node")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _field(tag: int, payload: bytes) -> bytes:
    return _varint(tag) + _varint(len(payload)) + payload


def encode_node(links: list[Link]) -> bytes:
    """The dag-pb bytes of a UnixFS File node over `links` (leaves or nodes), as the
    reference importer writes them."""
    filesize = sum(link.filesize for link in links)
    data = bytes([0x08, _FILE]) + b"\x18" + _varint(filesize)
    data += b"".join(b"\x20" + _varint(link.filesize) for link in links)
    out = bytearray()
    for link in links:
        body = _field(0x0A, link.cid.binary) + b"\x12\x00" + b"\x18" + _varint(link.tsize)
        out += _field(0x12, body)
    out += _field(0x0A, data)
    return bytes(out)


def decode_node(block: bytes) -> tuple[list[tuple[ContentId, int]], int, list[int]]:
    """A node's links (id and Tsize), filesize and blocksizes; BadNode unless it is a UnixFS
    File node written exactly as `encode_node` writes one, with at most 1,024 links, one
    blocksize per link and those adding up to its filesize."""
    if len(block) > NODE_BYTES_MAX:
        raise BadNode(f"a node of {len(block)} bytes exceeds {NODE_BYTES_MAX}")
    links: list[tuple[ContentId, int]] = []
    data: bytes | None = None
    at = 0
    while at < len(block):
        tag, at = _read_varint(block, at)
        length, at = _read_varint(block, at)
        payload, at = block[at : at + length], at + length
        if len(payload) != length:
            raise BadNode("a field runs past the end of the node")
        if tag == 0x12 and data is None:
            links.append(_decode_link(payload))
        elif tag == 0x0A and data is None:
            data = payload
        else:
            raise BadNode(f"unexpected field {tag:#x} in a dag-pb node")
    if data is None:
        raise BadNode("the node has no UnixFS data")
    filesize, blocksizes = _decode_file_data(data)
    if not 1 <= len(links) <= LINKS_MAX or len(blocksizes) != len(links):
        raise BadNode(f"a file node has {len(links)} links and {len(blocksizes)} blocksizes")
    if sum(blocksizes) != filesize:
        raise BadNode(f"the node's blocksizes add up to {sum(blocksizes)}, not its {filesize}")
    canonical = [
        Link(cid, tsize, size) for (cid, tsize), size in zip(links, blocksizes, strict=True)
    ]
    if encode_node(canonical) != block:
        raise BadNode("the node is not written the canonical way")
    return links, filesize, blocksizes


def _decode_link(payload: bytes) -> tuple[ContentId, int]:
    at = 0
    fields: dict[int, bytes | int] = {}
    while at < len(payload):
        tag, at = _read_varint(payload, at)
        if tag in (0x0A, 0x12):
            length, at = _read_varint(payload, at)
            fields[tag], at = payload[at : at + length], at + length
        elif tag == 0x18:
            fields[tag], at = _read_varint(payload, at)
        else:
            raise BadNode(f"unexpected field {tag:#x} in a dag-pb link")
    raw, tsize = fields.get(0x0A), fields.get(0x18)
    if not isinstance(raw, bytes) or not isinstance(tsize, int):
        raise BadNode("a link lacks its hash or its size")
    try:
        return parse_cid_bytes(raw), tsize
    except BadContentId as exc:
        raise BadNode(f"a link names no content id: {exc.message}") from None


def _decode_file_data(data: bytes) -> tuple[int, list[int]]:
    at, kind, filesize = 0, None, None
    blocksizes: list[int] = []
    while at < len(data):
        tag, at = _read_varint(data, at)
        value, at = _read_varint(data, at) if tag in (0x08, 0x18, 0x20) else (None, at)
        if tag == 0x08:
            kind = value
        elif tag == 0x18:
            filesize = value
        elif tag == 0x20 and value is not None:
            blocksizes.append(value)
        else:
            raise BadNode(f"unexpected field {tag:#x} in a node's UnixFS data")
    if kind != _FILE or filesize is None:
        raise BadNode("the node is not a UnixFS file with a filesize")
    return filesize, blocksizes


# -- building ----------------------------------------------------------------------------------
class DagBuilder:
    """Takes a blob's leaves in order and gives the tree's nodes as they complete, then the
    root: the balanced layout of the reference importer, one level at a time, holding at
    most 1,024 links per level."""

    def __init__(self) -> None:
        self.levels: list[list[Link]] = [[]]

    def add_leaf(
        self, leaf: bytes, cid: ContentId | None = None
    ) -> Iterator[tuple[ContentId, bytes]]:
        """Add the next leaf (given whole, with its id if the caller has it; the caller
        stores it); yields the nodes it completes, each with its bytes."""
        cid = cid or ContentId.of_block(RAW, leaf)
        yield from self._push(0, Link(cid, len(leaf), len(leaf)))

    def add_leaf_id(self, cid: ContentId, length: int) -> Iterator[tuple[ContentId, bytes]]:
        """Add the next leaf by its id and length alone (a tree rebuilt to be checked)."""
        yield from self._push(0, Link(cid, length, length))

    def _push(self, level: int, link: Link) -> Iterator[tuple[ContentId, bytes]]:
        while len(self.levels) <= level:
            self.levels.append([])
        self.levels[level].append(link)
        if len(self.levels[level]) == LINKS_MAX:
            yield from self._reduce(level)

    def _reduce(self, level: int) -> Iterator[tuple[ContentId, bytes]]:
        links, self.levels[level] = self.levels[level], []
        block = encode_node(links)
        cid = ContentId.of_block(DAG_PB, block)
        yield cid, block
        tsize = len(block) + sum(link.tsize for link in links)
        yield from self._push(level + 1, Link(cid, tsize, sum(link.filesize for link in links)))

    def finish(self) -> Iterator[tuple[ContentId, bytes]]:
        """The remaining nodes, the root last (for a blob of one leaf, nothing: the leaf is
        the root, `root`)."""
        if len(self.levels) == 1 and len(self.levels[0]) == 1:
            return  # one leaf: it is the blob
        level = 0
        while True:
            above = any(self.levels[level + 1 :])
            pending = self.levels[level]
            if not above and len(pending) == 1 and level > 0:
                return  # the root
            if pending:
                yield from self._reduce(level)
            level += 1

    @property
    def root(self) -> ContentId:
        top = next(level for level in reversed(self.levels) if level)
        assert len(top) == 1, "finish() first"
        return top[0].cid

    @property
    def filesize(self) -> int:
        top = next(level for level in reversed(self.levels) if level)
        return top[0].filesize


def content_id(data: bytes) -> str:
    """The content id IPFS gives `data` under unixfs-v1-2025 (and `BlobStore.put` does)."""
    builder = DagBuilder()
    if not data:
        for _ in builder.add_leaf(b""):
            pass
    for start in range(0, len(data), CHUNK_BYTES):
        for _ in builder.add_leaf(data[start : start + CHUNK_BYTES]):
            pass
    for _ in builder.finish():
        pass
    return builder.root.text
