"""Storage: blocks of 1,000 transactions committed per second to LevelDB with sync on (the
state diff computed beforehand, so this is the store alone), and blob put/get MB/s for the fs
and s3 backends (s3: a local `rclone serve s3`), beside raw sha256 MB/s in the same run.

Run: .venv/bin/python bench/storage.py [--blocks 10] [--blob-mib 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import tempfile
import time
from pathlib import Path

from common import report

from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.state import StateDiff
from carechain.consensus.types import Block, CommitCertificate
from carechain.storage.blobs.backends import FsObjects, S3Objects
from carechain.storage.blobs.store import BlobStore, ObjectStore, from_bytes
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.chain_fixture import certified_blocks, fixture_genesis
from carechain.tests.contract.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, s3_server

MiB = 1024 * 1024


def blocks_with_diffs(count: int) -> list[tuple[Block, CommitCertificate, StateDiff]]:
    genesis = fixture_genesis()
    chain = ChainContext.from_genesis(genesis)
    replica = ChainStore(MemoryKV())
    replica.state.initialize(genesis)
    prepared = []
    for block, certificate in certified_blocks(count, txs_per_block=1000):
        diff = apply_block(replica, block, chain)
        replica.commit(block, certificate, diff)
        prepared.append((block, certificate, diff))
    return prepared


def commit_rate(prepared: list[tuple[Block, CommitCertificate, StateDiff]], folder: Path) -> float:
    store = ChainStore.open(folder / "chain", fixture_genesis())
    started = time.perf_counter()
    for block, certificate, diff in prepared:
        store.commit(block, certificate, diff)
    elapsed = time.perf_counter() - started
    store.close()
    return len(prepared) / elapsed


async def blob_rates(objects: ObjectStore, data: bytes) -> tuple[float, float]:
    store = BlobStore(objects)
    started = time.perf_counter()
    cid = await store.put(from_bytes(data))
    put_seconds = time.perf_counter() - started
    started = time.perf_counter()
    size = 0
    async for piece in store.get(cid):
        size += len(piece)
    get_seconds = time.perf_counter() - started
    await store.close()
    assert size == len(data)
    mib = len(data) / MiB
    return mib / put_seconds, mib / get_seconds


def sha256_rate(data: bytes) -> float:
    started = time.perf_counter()
    for offset in range(0, len(data), MiB):
        hashlib.sha256(data[offset : offset + MiB]).digest()
    return len(data) / MiB / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--blob-mib", type=int, default=64)
    arguments = parser.parse_args()
    data = random.Random(1).randbytes(arguments.blob_mib * MiB)
    prepared = blocks_with_diffs(arguments.blocks)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        blocks_per_s = commit_rate(prepared, folder)
        fs_put, fs_get = asyncio.run(blob_rates(FsObjects(folder / "blobs"), data))
        with s3_server(folder / "s3") as endpoint:
            s3 = S3Objects(endpoint, BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
            s3_put, s3_get = asyncio.run(blob_rates(s3, data))
    figures = {
        "blocks_committed_per_s_1000_txs_sync": blocks_per_s,
        "txs_committed_per_s_store_only": blocks_per_s * 1000,
        "fs_put_mib_per_s": fs_put,
        "fs_get_verified_mib_per_s": fs_get,
        "s3_put_mib_per_s": s3_put,
        "s3_get_verified_mib_per_s": s3_get,
        "sha256_mib_per_s": sha256_rate(data),
    }
    report("storage", figures)


if __name__ == "__main__":
    main()
