"""Content-addressed blob storage over any object backend.

`put(stream)` cuts the stream into 1 MiB chunks, stores each under its CIDv1 (raw, sha2-256,
base32: an IPFS raw block) and returns the blob's content id: the chunk's own CID for a blob
of at most one chunk, otherwise the CID of a manifest listing the chunks. `get(cid)` streams
the blob back and checks every chunk against its CID before handing it out, so bytes that do
not match are never returned; `offset` resumes a broken download at a chunk boundary.

Only ciphertext is ever stored: clients encrypt before `put` (crypto.encrypt_stream).
Backends implement the small `ObjectStore` protocol; they know nothing of CIDs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Final, Protocol

from carechain.consensus.codec import Record, Size
from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.storage.blobs.cid import cid_of, cid_of_digest, digest_of

CHUNK_BYTES: Final = 1024 * 1024
CHUNKS_MAX: Final = 1 << 20  # 1 TiB per blob
CHUNK_NAMESPACE: Final = "chunks"
MANIFEST_NAMESPACE: Final = "manifests"


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
class Chunk(Record):
    digest: Annotated[bytes, Size(32, 32)]
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest(Record):
    size: int
    chunks: Annotated[tuple[Chunk, ...], Size(2, CHUNKS_MAX)]


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


def content_id_of(data: bytes) -> str:
    """The content id `BlobStore.put` gives these bytes."""
    if len(data) <= CHUNK_BYTES:
        return cid_of(data)
    chunks = tuple(
        Chunk(hashlib.sha256(data[i : i + CHUNK_BYTES]).digest(), len(data[i : i + CHUNK_BYTES]))
        for i in range(0, len(data), CHUNK_BYTES)
    )
    return cid_of(Manifest(len(data), chunks).encode())


class BlobStore:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    async def put(self, stream: AsyncIterable[bytes]) -> str:
        chunks: list[Chunk] = []
        first = b""
        async for piece in rechunk(stream):
            digest = hashlib.sha256(piece).digest()
            key = _key(CHUNK_NAMESPACE, cid_of_digest(digest))
            if not await self.objects.has_object(key):
                await self.objects.put_object(key, piece)
            if not chunks:
                first = piece
            chunks.append(Chunk(digest, len(piece)))
            if len(chunks) > CHUNKS_MAX:
                raise InvalidInput(f"a blob holds at most {CHUNKS_MAX} chunks of 1 MiB")
        if len(chunks) == 1:
            return cid_of(first)
        manifest = Manifest(sum(c.size for c in chunks), tuple(chunks)).encode()
        cid = cid_of(manifest)
        await self.objects.put_object(_key(MANIFEST_NAMESPACE, cid), manifest)
        return cid

    async def _manifest(self, cid: str) -> Manifest | None:
        raw = await self.objects.get_object(_key(MANIFEST_NAMESPACE, cid))
        if raw is None:
            return None
        if hashlib.sha256(raw).digest() != digest_of(cid):
            raise BlobCorruptError(f"manifest of {cid} does not match its content id")
        try:
            return Manifest.decode(raw, max_bytes=len(raw))
        except CarechainError as exc:
            raise BlobCorruptError(f"manifest of {cid} is unreadable: {exc}") from None

    async def _chunk(self, digest: bytes) -> bytes:
        cid = cid_of_digest(digest)
        data = await self.objects.get_object(_key(CHUNK_NAMESPACE, cid))
        if data is None:
            raise BlobNotFoundError(f"chunk {cid} is missing from the store")
        if hashlib.sha256(data).digest() != digest:
            raise BlobCorruptError(f"chunk {cid} does not match its content id; refused")
        return data

    async def get(self, cid: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Stream blob `cid` from byte `offset`, verifying every chunk before yielding it."""
        manifest = await self._manifest(cid)
        if manifest is not None:
            chunks = manifest.chunks
        elif await self.objects.has_object(_key(CHUNK_NAMESPACE, cid)):
            chunks = (Chunk(digest_of(cid), -1),)  # a one-chunk blob; its size is its length
        else:
            raise BlobNotFoundError(f"no blob {cid} in this store")
        position = 0
        for chunk in chunks:
            if chunk.size > 0 and position + chunk.size <= offset:
                position += chunk.size  # resuming: skip chunks already delivered
                continue
            data = await self._chunk(chunk.digest)
            yield data[max(0, offset - position) :]
            position += len(data)

    async def read(self, cid: str) -> bytes:
        return b"".join([piece async for piece in self.get(cid)])

    async def has(self, cid: str) -> bool:
        digest_of(cid)
        if await self.objects.has_object(_key(MANIFEST_NAMESPACE, cid)):
            return True
        return await self.objects.has_object(_key(CHUNK_NAMESPACE, cid))

    async def stat(self, cid: str) -> BlobStat:
        manifest = await self._manifest(cid)
        if manifest is not None:
            return BlobStat(cid, manifest.size, len(manifest.chunks))
        data = await self.objects.get_object(_key(CHUNK_NAMESPACE, cid))
        if data is None:
            raise BlobNotFoundError(f"no blob {cid} in this store")
        return BlobStat(cid, len(data), 1)

    async def delete(self, cid: str) -> None:
        """Remove a blob and its chunks (crypto-shredded records must not be served again).
        Ciphertext under fresh keys shares no chunks with other blobs."""
        manifest = await self._manifest(cid)
        if manifest is not None:
            for chunk in manifest.chunks:
                await self.objects.delete_object(_key(CHUNK_NAMESPACE, cid_of_digest(chunk.digest)))
            await self.objects.delete_object(_key(MANIFEST_NAMESPACE, cid))
        else:
            await self.objects.delete_object(_key(CHUNK_NAMESPACE, cid))

    async def close(self) -> None:
        await self.objects.close()
