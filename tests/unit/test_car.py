"""Blobs in and out as CAR v1 files: what carechain writes, off-the-shelf readers read (and
export the file from), what they write carechain imports, and anything that is not exactly
one blob's blocks is refused with nothing stored."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import cbor2
import pytest

from carechain.consensus.cid import DAG_PB, RAW, ContentId, parse_cid
from carechain.storage.blobs.backends import MemoryObjects
from carechain.storage.blobs.car import BadCar, car_header, car_section, read_car, write_car
from carechain.storage.blobs.store import (
    BlobCorruptError,
    BlobStore,
    content_id_of,
    from_bytes,
)
from carechain.storage.blobs.unixfs import Link, encode_node
from carechain.tests.unixfs_blobs import interop_tools, seeded_chunks

SIZE = 3 * (1 << 20) + 3  # four leaves under one node


def _blob(size: int = SIZE) -> bytes:
    return b"".join(seeded_chunks(size))


async def _car_of(data: bytes) -> tuple[str, bytes]:
    store = BlobStore(MemoryObjects())
    cid = await store.put(from_bytes(data))
    pieces = [piece async for piece in write_car(parse_cid(cid), store.blocks(cid))]
    return cid, b"".join(pieces)


def _import(car: bytes) -> tuple[str, BlobStore]:
    async def run() -> tuple[str, BlobStore]:
        store = BlobStore(MemoryObjects())
        root, blocks = read_car(car)
        await store.put_blocks(root.text, blocks)
        return root.text, store

    return asyncio.run(run())


def test_a_car_round_trips_through_another_store() -> None:
    data = _blob()
    cid, car = asyncio.run(_car_of(data))
    root, blocks = read_car(car)
    assert root.text == cid == content_id_of(data)
    assert len(blocks) == 5, "the root node and four leaves"
    imported, store = _import(car)
    assert imported == cid
    assert asyncio.run(store.read(cid, size=len(data))) == data


def _sections(car: bytes) -> tuple[ContentId, list[tuple[ContentId, bytes]]]:
    root, blocks = read_car(car)
    return root, list(blocks.items())


def _car(root: ContentId, sections: list[tuple[ContentId, bytes]]) -> bytes:
    return car_header(root) + b"".join(car_section(cid, block) for cid, block in sections)


@pytest.mark.parametrize(
    "damage", ["a tampered leaf", "a missing leaf", "an extra block", "another root"]
)
def test_a_car_that_is_not_exactly_one_blob_is_refused_and_nothing_stored(damage: str) -> None:
    _, car = asyncio.run(_car_of(_blob()))
    root, sections = _sections(car)
    leaves = [i for i, (c, _) in enumerate(sections) if c.codec == RAW]
    if damage == "a tampered leaf":
        c, block = sections[leaves[0]]
        sections[leaves[0]] = (c, block[:-1] + bytes([block[-1] ^ 1]))
    elif damage == "a missing leaf":
        del sections[leaves[-1]]
    elif damage == "an extra block":
        sections.append((ContentId.of_block(RAW, b"stowaway"), b"stowaway"))
    else:
        root = ContentId.of_block(RAW, b"stowaway")
        sections.append((root, b"stowaway"))
    store = BlobStore(MemoryObjects())
    again_root, blocks = read_car(_car(root, sections))
    with pytest.raises(BlobCorruptError):
        asyncio.run(store.put_blocks(again_root.text, blocks))
    assert store.objects.objects == {}, "nothing was stored"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("car", "problem"),
    [
        (b"", "ends inside a length"),
        (b"\x05abc", "cut short"),
        (b"\x02\xa0\x00", "not a CAR v1"),
        (car_header(ContentId.of_block(RAW, b"x"))[:-3], "cut short"),
        (car_header(ContentId.of_block(RAW, b"x")) + b"\x30" + b"\x01\x71" + bytes(50), "codec"),
    ],
)
def test_what_is_not_a_car_is_refused(car: bytes, problem: str) -> None:
    with pytest.raises(BadCar, match=problem):
        read_car(car)


@pytest.mark.slow
def test_off_the_shelf_car_tools_read_and_write_what_carechain_does(tmp_path: Path) -> None:
    """@ipld/car reads carechain's CAR and ipfs-unixfs-exporter gives back the file; a CAR
    ipfs-unixfs-importer and @ipld/car wrote is imported by carechain under the same id."""
    work = interop_tools(tmp_path)
    data = _blob()
    cid, car = asyncio.run(_car_of(data))
    (tmp_path / "ours.car").write_bytes(car)
    read = subprocess.run(
        ["node", "car.mjs", "read", str(tmp_path / "ours.car"), str(tmp_path / "out.bin")],
        cwd=work, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-2000:]
    assert json.loads(read.stdout) == {"root": cid, "blocks": 5}
    assert (tmp_path / "out.bin").read_bytes() == data
    written = subprocess.run(
        ["node", "car.mjs", "write", str(SIZE), str(tmp_path / "theirs.car")],
        cwd=work, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr[-2000:]
    theirs = json.loads(written.stdout)["root"]
    assert theirs == cid, "the importer and carechain agree on the id"
    imported, store = _import((tmp_path / "theirs.car").read_bytes())
    assert imported == cid
    assert asyncio.run(store.read(cid)) == data


def _node(links: list[tuple[ContentId, int]]) -> tuple[ContentId, bytes]:
    block = encode_node([Link(cid, size, size) for cid, size in links])
    return ContentId.of_block(DAG_PB, block), block


@pytest.mark.parametrize("shape", ["a subtree twice", "a chain of single links", "a wide echo"])
def test_a_crafted_tree_is_refused_quickly(shape: str) -> None:
    """Trees whose blocks match their ids and whose sizes add up, but that are not the tree
    IPFS makes of their leaves: repeated subtrees, needless depth, a node repeated 1,024
    times at each of three levels (1,024^2 leaves to read). Each is refused, in seconds."""
    leaf = b"x" * 10
    leaf_id = ContentId.of_block(RAW, leaf)
    blocks = {leaf_id: leaf}
    if shape == "a subtree twice":
        child, child_block = _node([(leaf_id, 10)])
        blocks[child] = child_block
        root, root_block = _node([(child, 10), (child, 10)])
    elif shape == "a chain of single links":
        root, size = leaf_id, 10
        for _ in range(200):
            root, block = _node([(root, size)])
            blocks[root] = block
        root_block = blocks[root]
    else:
        root, size = leaf_id, 10
        for _ in range(3):
            root, root_block = _node([(root, size)] * 1024)
            size *= 1024
            blocks[root] = root_block
    blocks[root] = root_block
    store = BlobStore(MemoryObjects())
    started = time.monotonic()
    with pytest.raises(BlobCorruptError, match=r"leaves|not laid out"):
        asyncio.run(store.put_blocks(root.text, blocks))
    assert time.monotonic() - started < 20
    assert store.objects.objects == {}  # type: ignore[attr-defined]


def test_a_car_whose_root_is_not_bytes_is_refused() -> None:
    values: tuple[object, ...] = (5, None, {})
    for value in values:
        header = cbor2.dumps({"roots": [cbor2.CBORTag(42, value)], "version": 1}, canonical=True)
        with pytest.raises(BadCar, match="root is not a CID"):
            read_car(bytes([len(header)]) + header)
    header = cbor2.dumps({"roots": [], "version": True}, canonical=True)
    with pytest.raises(BadCar, match="not a CAR v1"):
        read_car(bytes([len(header)]) + header)
