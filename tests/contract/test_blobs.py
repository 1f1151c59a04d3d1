"""One blob contract for every backend (memory, fs, and s3 against a real S3 server)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from carechain.config.node import BlobSection
from carechain.storage.blobs.backends import (
    BlobBackendError,
    FsObjects,
    MemoryObjects,
    S3Objects,
    open_blob_store,
)
from carechain.storage.blobs.cid import DAG_PB, RAW, ContentId, cid_of, parse_cid
from carechain.storage.blobs.store import (
    CHUNK_BYTES,
    BlobCorruptError,
    BlobNotFoundError,
    BlobStore,
    content_id_of,
    from_bytes,
    from_iterable,
)
from carechain.storage.blobs.unixfs import Link, encode_node
from carechain.tests.contract.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, s3_server

MiB = CHUNK_BYTES


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest_asyncio.fixture(params=["memory", "fs", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[BlobStore]:
    objects: MemoryObjects | FsObjects | S3Objects
    if request.param == "memory":
        objects = MemoryObjects()
    elif request.param == "fs":
        objects = FsObjects(tmp_path / "blobs")
    else:
        objects = S3Objects(
            s3_endpoint,
            BUCKET,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            prefix=f"{uuid.uuid4().hex}/",
        )
    blobs = BlobStore(objects)
    yield blobs
    await blobs.close()


def _data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 50 * MiB])
async def test_round_trip(store: BlobStore, size: int) -> None:
    data = _data(size)
    pieces = [data[i : i + 300_000] for i in range(0, size, 300_000)] or [b""]
    cid = await store.put(from_iterable(pieces))
    assert cid == content_id_of(data)
    assert cid.startswith("bafkrei" if size <= MiB else "bafybei"), "raw leaf, or UnixFS root"
    assert await store.has(cid)
    assert await store.read(cid) == data
    stat = await store.stat(cid)
    assert stat.size == size
    assert stat.chunks == max(1, -(-size // MiB))
    if size <= MiB:
        assert cid == cid_of(data), "a one-chunk blob is an IPFS raw block"


@pytest.mark.asyncio
async def test_resume_from_an_offset(store: BlobStore) -> None:
    data = _data(3 * MiB + 10)
    cid = await store.put(from_bytes(data))
    for offset in (0, 5, MiB, MiB + 7, 3 * MiB + 9, 3 * MiB + 10):
        assert b"".join([p async for p in store.get(cid, offset)]) == data[offset:]


@pytest.mark.asyncio
@pytest.mark.security
async def test_a_tampered_chunk_is_refused(store: BlobStore) -> None:
    data = _data(2 * MiB + 3)
    cid = await store.put(from_bytes(data))
    second = cid_of(data[MiB : 2 * MiB])
    tampered = bytearray(data[MiB : 2 * MiB])
    tampered[100] ^= 1
    await store.objects.put_object(f"chunks/{second}", bytes(tampered))
    received = []
    stream = store.get(cid)
    received.append(await anext(stream))
    with pytest.raises(BlobCorruptError, match="does not match its content id"):
        await anext(stream)
    assert b"".join(received) == data[:MiB], "only verified chunks were handed out"


@pytest.mark.asyncio
@pytest.mark.security
async def test_a_tampered_single_chunk_blob_is_refused(store: BlobStore) -> None:
    cid = await store.put(from_bytes(b"ciphertext"))
    await store.objects.put_object(f"chunks/{cid}", b"ciphertexT")
    with pytest.raises(BlobCorruptError):
        await store.read(cid)


@pytest.mark.asyncio
@pytest.mark.security
async def test_one_id_names_one_byte_string(store: BlobStore) -> None:
    """A large blob's id names the file, never its root node's bytes: those stored as a
    blob get a raw id of their own. Read with the size its record gives, a blob of another
    length is refused."""
    data = _data(2 * MiB + 5)
    cid = await store.put(from_bytes(data))
    root = parse_cid(cid)
    node = await store.objects.get_object(f"nodes/{cid}")
    assert node is not None
    assert root.codec == DAG_PB
    assert root.matches(node)
    as_blob = await store.put(from_bytes(node))
    assert as_blob != cid
    assert parse_cid(as_blob).codec == RAW
    assert await store.read(as_blob) == node
    assert await store.read(cid, size=len(data)) == data
    with pytest.raises(BlobCorruptError, match=f"describes {len(data)} bytes"):
        await store.read(cid, size=len(data) + 1)
    small = await store.put(from_bytes(b"ciphertext"))
    with pytest.raises(BlobCorruptError, match="holds 10 bytes"):
        await store.read(small, size=11)


@pytest.mark.asyncio
@pytest.mark.security
async def test_a_tree_whose_sizes_do_not_add_up_is_refused(store: BlobStore) -> None:
    """Nodes stored under their true ids but lying about what is under them: blocksizes
    that do not match the leaves, or a filesize that is not their sum."""
    first, second = _data(MiB), b"tail"
    for piece in (first, second):
        await store.put(from_bytes(piece))
    leaves = [parse_cid(cid_of(first)), parse_cid(cid_of(second))]
    lying = encode_node([Link(leaves[0], MiB, MiB), Link(leaves[1], 4, 5)])  # 4 bytes, says 5
    await store.objects.put_object(f"nodes/{ContentId.of_block(DAG_PB, lying)}", lying)
    stream = store.get(ContentId.of_block(DAG_PB, lying).text)
    assert await anext(stream) == first, "what comes before the lie is verified and handed out"
    with pytest.raises(BlobCorruptError, match="holds 4 bytes where its node says 5"):
        await anext(stream)
    honest = encode_node([Link(leaves[0], MiB, MiB), Link(leaves[1], 4, 4)])
    broken = honest.replace(
        b"\x18" + bytes([0x84, 0x80, 0x40]), b"\x18" + bytes([0x85, 0x80, 0x40])
    )
    assert broken != honest, "the filesize field was found and changed"
    await store.objects.put_object(f"nodes/{ContentId.of_block(DAG_PB, broken)}", broken)
    with pytest.raises(BlobCorruptError, match="add up to"):
        await store.read(ContentId.of_block(DAG_PB, broken).text)


@pytest.mark.asyncio
async def test_a_blobs_tree_is_read_once_for_every_block_asked_of_it(store: BlobStore) -> None:
    """A trustless client asks for a large blob block by block: which blocks are its is
    read from its nodes once, not for every block."""
    data = _data(3 * MiB + 1)
    cid = await store.put(from_bytes(data))
    reads: list[str] = []
    original = store.objects.get_object

    async def counting(key: str) -> bytes | None:
        reads.append(key)
        return await original(key)

    store.objects.get_object = counting  # type: ignore[method-assign]
    first = await store.tree(cid)
    assert len(first) == 5, "the root and four leaves"
    assert reads == [f"nodes/{cid}"]
    assert await store.tree(cid) == first
    assert reads == [f"nodes/{cid}"], "the second time it is remembered"
    await store.delete(cid)
    with pytest.raises(BlobNotFoundError):
        await store.tree(cid)  # forgotten with the blob


@pytest.mark.asyncio
async def test_missing_and_deleted_blobs(store: BlobStore) -> None:
    absent = cid_of(b"never stored")
    assert not await store.has(absent)
    with pytest.raises(BlobNotFoundError):
        await store.read(absent)
    with pytest.raises(BlobNotFoundError):
        await store.stat(absent)
    big = await store.put(from_bytes(_data(2 * MiB + 1)))
    small = await store.put(from_bytes(b"x"))
    await store.delete(big)
    await store.delete(small)
    assert not await store.has(big)
    assert not await store.has(small)
    assert not await store.objects.has_object(f"chunks/{cid_of(_data(2 * MiB + 1)[:MiB])}")


KNOWN = [
    (b"", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (b"hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("data", "expected"), KNOWN)
async def test_known_ipfs_cids(store: BlobStore, data: bytes, expected: str) -> None:
    assert await store.put(from_bytes(data)) == expected


@pytest.mark.asyncio
async def test_backends_load_from_entry_points(tmp_path: Path) -> None:
    blobs = open_blob_store(BlobSection(backend="fs", path="data/blobs"), tmp_path)
    cid = await blobs.put(from_bytes(b"abc"))
    assert (tmp_path / "data" / "blobs" / "chunks" / cid[-2:] / cid).read_bytes() == b"abc"
    with pytest.raises(BlobBackendError, match="installed backends: fs, memory, s3"):
        open_blob_store(BlobSection(backend="tape"), tmp_path)


def test_s3_backend_says_which_credentials_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CARECHAIN_S3_ACCESS_KEY", raising=False)
    section = BlobSection(backend="s3", s3_endpoint="http://127.0.0.1:1", s3_bucket="b")
    with pytest.raises(BlobBackendError, match="CARECHAIN_S3_ACCESS_KEY"):
        open_blob_store(section, tmp_path)
