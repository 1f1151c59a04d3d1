"""Content-addressed blob storage over any object backend, laid out as IPFS lays out a file.

`put(stream)` cuts the stream into 1 MiB chunks, stores each as a raw block under its CIDv1 and
returns the blob's content id, the one `ipfs add` gives the same bytes under profile
`unixfs-v1-2025`: a blob of at most one chunk is its raw block; a larger one is named by the
root of a balanced tree of dag-pb UnixFS nodes, stored too (`unixfs.py`). `get(cid)` streams
the blob back and checks every block against its id, every node's sizes against its links and
the leaves' lengths against the node that names them, before handing anything out; given the
size the ledger records, it checks that too. So one content id names one byte string: a raw
id is the bytes of one block, a dag-pb id the file its tree describes, never the node's own
bytes. `offset` resumes a broken download at a chunk boundary.

Only ciphertext is ever stored: clients encrypt before `put` (crypto.encrypt_stream).
Backends implement the small `ObjectStore` protocol; they know nothing of CIDs.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Final, Protocol

from carechain.consensus.errors import InvalidInput
from carechain.storage.blobs.cid import DAG_PB, RAW, ContentId, parse_cid
from carechain.storage.blobs.unixfs import CHUNK_BYTES, BadNode, DagBuilder, decode_node
from carechain.storage.blobs.unixfs import content_id as content_id_of

__all__ = [
    "CHUNK_BYTES",
    "BlobCorruptError",
    "BlobNotFoundError",
    "BlobStat",
    "BlobStore",
    "ObjectStore",
    "content_id_of",
    "from_bytes",
    "from_file",
    "from_iterable",
    "rechunk",
]

CHUNKS_MAX: Final = 1 << 20  # 1 TiB per blob
CHUNK_NAMESPACE: Final = "chunks"  # raw blocks: the leaves
NODE_NAMESPACE: Final = "nodes"  # dag-pb blocks: a large blob's tree


class BlobNotFoundError(InvalidInput):
    code = "blob_not_found"


class BlobCorruptError(InvalidInput):
    """Stored bytes do not match their content id: refused, never returned."""

    code = "blob_corrupt"


class ObjectStore(Protocol):
    """What a backend provides: whole objects by key, written atomically."""

    async def put_object(self, key: str, data: bytes) -> None: ...

    async def get_object(self, key: str) -> bytes | None: ...

    async def has_object(self, key: str) -> bool: ...

    async def delete_object(self, key: str) -> None: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class BlobStat:
    cid: str
    size: int
    chunks: int


def _key(namespace: str, cid: str) -> str:
    return f"{namespace}/{cid}"


async def rechunk(stream: AsyncIterable[bytes], size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Exactly `size`-byte pieces (the last shorter); at least one piece, even if empty."""
    buffer = bytearray()
    produced = False
    async for piece in stream:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
            produced = True
    if buffer or not produced:
        yield bytes(buffer)


async def from_bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def from_iterable(pieces: Iterable[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def from_file(path: Path, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while piece := await asyncio.to_thread(handle.read, size):
            yield piece


# The deepest tree a blob of CHUNKS_MAX leaves has (1,024 links a node): a root over a level
# of nodes over the leaves. A deeper one was not made by `put` nor taken by `put_blocks`.
DEPTH_MAX: Final = 3


def _deep_enough(cid: ContentId, depth: int) -> None:
    if depth > DEPTH_MAX:
        raise BlobCorruptError(f"node {cid} lies deeper than any blob's tree goes")


def _canonical(root: ContentId, blocks: dict[ContentId, bytes]) -> list[ContentId]:
    """The blocks of blob `root`, leaves first and its root last (the order to store them
    in, so a blob that is held is whole), if they are exactly the tree IPFS would make of
    its leaves: the leaves are read off the tree (each node decoded once, at most
    `CHUNKS_MAX` of them), then the tree is built again from them and must have the same
    root. So no crafted tree (repeated or deep subtrees, sizes that lie, another layout)
    is taken. BlobCorruptError names what is wrong."""
    decoded: dict[ContentId, tuple[list[tuple[ContentId, int]], int, list[int]]] = {}
    leaves: list[tuple[ContentId, int]] = []
    pending: list[tuple[ContentId, int | None]] = [(root, None)]
    while pending:
        cid, size = pending.pop()
        data = blocks.get(cid)
        if data is None:
            raise BlobCorruptError(f"block {cid} of {root} is missing")
        if cid.codec != DAG_PB:
            if size is not None and len(data) != size:
                raise BlobCorruptError(f"leaf {cid} holds {len(data)} bytes, not {size}")
            leaves.append((cid, len(data)))
            if len(leaves) > CHUNKS_MAX:
                raise BlobCorruptError(f"{root} has more than {CHUNKS_MAX} leaves")
            continue
        if cid not in decoded:
            try:
                decoded[cid] = decode_node(data)
            except BadNode as exc:
                raise BlobCorruptError(f"node {cid} is not a file node: {exc.message}") from None
        links, filesize, blocksizes = decoded[cid]
        if size is not None and filesize != size:
            raise BlobCorruptError(f"node {cid} describes {filesize} bytes, not {size}")
        children = [(child, length) for (child, _), length in zip(links, blocksizes, strict=True)]
        pending += reversed(children)
    builder = DagBuilder()
    nodes = [cid for leaf, length in leaves for cid, _ in builder.add_leaf_id(leaf, length)]
    nodes += [cid for cid, _ in builder.finish()]
    if builder.root != root:
        raise BlobCorruptError(
            f"{root} is not laid out as IPFS lays out a file of its leaves (unixfs-v1-2025)"
        )
    return [*dict.fromkeys(leaf for leaf, _ in leaves), *nodes]


TREES_KEPT: Final = 64  # blobs whose block ids `tree` remembers (a gateway's raw-block requests)


class BlobStore:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        # root -> the ids of its blocks: a blob's tree never changes under its id, so it is
        # read once, not for every block a trustless client asks for
        self._trees: OrderedDict[ContentId, frozenset[ContentId]] = OrderedDict()

    async def put(self, stream: AsyncIterable[bytes]) -> str:
        builder = DagBuilder()
        leaves = 0
        async for piece in rechunk(stream):
            leaves += 1
            if leaves > CHUNKS_MAX:
                raise InvalidInput(f"a blob holds at most {CHUNKS_MAX} chunks of 1 MiB")
            leaf = ContentId.of_block(RAW, piece)
            key = _key(CHUNK_NAMESPACE, leaf.text)
            if not await self.objects.has_object(key):
                await self.objects.put_object(key, piece)
            for cid, block in builder.add_leaf(piece, leaf):
                await self.objects.put_object(_key(NODE_NAMESPACE, cid.text), block)
        for cid, block in builder.finish():
            await self.objects.put_object(_key(NODE_NAMESPACE, cid.text), block)
        return builder.root.text

    async def _block(self, cid: ContentId) -> bytes:
        namespace = NODE_NAMESPACE if cid.codec == DAG_PB else CHUNK_NAMESPACE
        data = await self.objects.get_object(_key(namespace, cid.text))
        if data is None:
            raise BlobNotFoundError(f"block {cid} is missing from the store")
        if not cid.matches(data):
            raise BlobCorruptError(f"block {cid} does not match its content id; refused")
        return data

    async def _node(self, cid: ContentId) -> tuple[list[tuple[ContentId, int]], int, list[int]]:
        block = await self._block(cid)
        try:
            return decode_node(block)
        except BadNode as exc:
            raise BlobCorruptError(f"node {cid} is not a file node: {exc.message}") from None

    async def _leaves(
        self, cid: ContentId, size: int | None, depth: int = 0
    ) -> AsyncIterator[tuple[ContentId, int]]:
        """The leaves under `cid` in order, each with its length, checked against the sizes
        the nodes above give (`size`: what the parent or the ledger says it holds)."""
        if cid.codec != DAG_PB:
            yield cid, -1 if size is None else size
            return
        _deep_enough(cid, depth)
        links, filesize, blocksizes = await self._node(cid)
        if size is not None and filesize != size:
            raise BlobCorruptError(f"node {cid} describes {filesize} bytes, not {size}")
        for (child, _), child_size in zip(links, blocksizes, strict=True):
            async for leaf in self._leaves(child, child_size, depth + 1):
                yield leaf

    async def get(
        self, cid: str, offset: int = 0, *, size: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream blob `cid` from byte `offset`, verifying every block before yielding from
        it; `size`: the length the ledger records for it, checked as well."""
        root = parse_cid(cid)
        if not await self._present(root):
            raise BlobNotFoundError(f"no blob {cid} in this store")
        position = 0
        async for leaf, length in self._leaves(root, size):
            if length >= 0 and position + length <= offset:
                position += length  # resuming: skip leaves already delivered
                continue
            data = await self._block(leaf)
            if length >= 0 and len(data) != length:
                raise BlobCorruptError(
                    f"leaf {leaf} holds {len(data)} bytes where its node says {length}"
                )
            yield data[max(0, offset - position) :]
            position += len(data)

    async def _present(self, root: ContentId) -> bool:
        namespace = NODE_NAMESPACE if root.codec == DAG_PB else CHUNK_NAMESPACE
        return await self.objects.has_object(_key(namespace, root.text))

    async def blocks(self, cid: str) -> AsyncIterator[tuple[ContentId, bytes]]:
        """Every block of blob `cid`, the root first then depth-first (a CAR's order, as
        `ipfs dag export` writes it), each checked as `get` checks it."""
        root = parse_cid(cid)
        if not await self._present(root):
            raise BlobNotFoundError(f"no blob {cid} in this store")
        async for block in self._walk(root, None):
            yield block

    async def _walk(
        self, cid: ContentId, size: int | None, depth: int = 0
    ) -> AsyncIterator[tuple[ContentId, bytes]]:
        _deep_enough(cid, depth)
        block = await self._block(cid)
        if cid.codec != DAG_PB:
            if size is not None and len(block) != size:
                raise BlobCorruptError(f"leaf {cid} holds {len(block)} bytes, not {size}")
            yield cid, block
            return
        links, filesize, blocksizes = await self._node(cid)
        if size is not None and filesize != size:
            raise BlobCorruptError(f"node {cid} describes {filesize} bytes, not {size}")
        yield cid, block
        for (child, _), child_size in zip(links, blocksizes, strict=True):
            async for found in self._walk(child, child_size, depth + 1):
                yield found

    async def tree(self, cid: str) -> frozenset[ContentId]:
        """The ids of every block of blob `cid` (its nodes are read and checked; its leaves
        only named), remembered for the last `TREES_KEPT` blobs asked about."""
        root = parse_cid(cid)
        kept = self._trees.get(root)
        if kept is not None:
            self._trees.move_to_end(root)
            return kept
        found, pending = {root}, [root]
        while pending:
            node = pending.pop()
            if node.codec != DAG_PB:
                continue
            links, _, _ = await self._node(node)
            for child, _ in links:
                if child not in found:  # a subtree named twice is read once
                    found.add(child)
                    pending.append(child)
        if len(self._trees) >= TREES_KEPT:
            self._trees.popitem(last=False)
        self._trees[root] = frozenset(found)
        return self._trees[root]

    async def block(self, cid: str) -> bytes:
        """One block by its id (a leaf, or a node of some blob's tree), checked."""
        found = parse_cid(cid)
        if not await self._present(found):
            raise BlobNotFoundError(f"no block {cid} in this store")
        return await self._block(found)

    async def put_blocks(self, root: str, blocks: dict[ContentId, bytes]) -> None:
        """Store a whole blob given as blocks (a CAR's): nothing is written unless they are
        exactly the blob `root` names, every block matching its id, every node's sizes
        adding up, none missing and none left over."""
        root_id = parse_cid(root)
        for cid, data in blocks.items():
            if not cid.matches(data):
                raise BlobCorruptError(f"block {cid} does not match its content id")
        needed = _canonical(root_id, blocks)
        extra = set(blocks) - set(needed)
        if extra:
            raise BlobCorruptError(
                f"{len(extra)} block(s) are not part of {root}, such as {min(extra, key=str)}"
            )
        for cid in needed:
            namespace = NODE_NAMESPACE if cid.codec == DAG_PB else CHUNK_NAMESPACE
            await self.objects.put_object(_key(namespace, cid.text), blocks[cid])

    async def read(self, cid: str, *, size: int | None = None) -> bytes:
        return b"".join([piece async for piece in self.get(cid, size=size)])

    async def has(self, cid: str) -> bool:
        """Whether the blob's root block is here (a held blob with a block missing below it
        is damage: reading it says which block)."""
        return await self._present(parse_cid(cid))

    async def stat(self, cid: str) -> BlobStat:
        root = parse_cid(cid)
        if not await self._present(root):
            raise BlobNotFoundError(f"no blob {cid} in this store")
        if root.codec == DAG_PB:
            _, filesize, _ = await self._node(root)
            leaves = [leaf async for leaf in self._leaves(root, filesize)]
            return BlobStat(cid, filesize, len(leaves))
        return BlobStat(cid, len(await self._block(root)), 1)

    async def delete(self, cid: str) -> None:
        """Remove a blob, its nodes and its leaves (crypto-shredded records must not be
        served again). Ciphertext under fresh keys shares no block with other blobs."""
        root = parse_cid(cid)
        self._trees.pop(root, None)
        if not await self._present(root):
            return
        if root.codec == DAG_PB:
            await self._delete_tree(root)
        else:
            await self.objects.delete_object(_key(CHUNK_NAMESPACE, root.text))

    async def _delete_tree(self, node: ContentId, depth: int = 0) -> None:
        _deep_enough(node, depth)
        links, _, _ = await self._node(node)
        for child, _ in links:
            if child.codec == DAG_PB:
                await self._delete_tree(child, depth + 1)
            else:
                await self.objects.delete_object(_key(CHUNK_NAMESPACE, child.text))
        await self.objects.delete_object(_key(NODE_NAMESPACE, node.text))

    async def close(self) -> None:
        await self.objects.close()
