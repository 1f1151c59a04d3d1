"""Blob throughput with ids equal to IPFS's: put (cut, hash, store the leaves and the UnixFS
tree), verify (the content id of bytes in memory, as `blob verify` computes it) and fetch (read
back through the fs backend, every block and size checked), for 1 MiB and 100 MiB blobs, in
MiB/s; beside plain sha256 of the same bytes in the same run, which is the ratio that matters
(each of the three hashes every byte once).

Run: .venv/bin/python bench/blobs.py [--large-mib 100] [--small-repeats 30]
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

from carechain.storage.blobs.backends import FsObjects
from carechain.storage.blobs.store import BlobStore, content_id_of, from_bytes

MiB = 1024 * 1024


def _best(seconds: list[float], size: int) -> float:
    return size / MiB / min(seconds)


async def _put_and_fetch(folder: Path, data: bytes, repeats: int) -> tuple[float, float]:
    puts, fetches = [], []
    for index in range(repeats):
        store = BlobStore(FsObjects(folder / f"blobs-{index}"))  # nothing held before
        started = time.perf_counter()
        cid = await store.put(from_bytes(data))
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        size = 0
        async for piece in store.get(cid, size=len(data)):
            size += len(piece)
        fetches.append(time.perf_counter() - started)
        assert size == len(data)
        await store.close()
    return _best(puts, len(data)), _best(fetches, len(data))


def _verify(data: bytes, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        content_id_of(data)
        seconds.append(time.perf_counter() - started)
    return _best(seconds, len(data))


def _sha256(data: bytes, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for offset in range(0, len(data), MiB):
            hashlib.sha256(data[offset : offset + MiB]).digest()
        seconds.append(time.perf_counter() - started)
    return _best(seconds, len(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large-mib", type=int, default=100)
    parser.add_argument("--small-repeats", type=int, default=30)
    arguments = parser.parse_args()
    figures: dict[str, float] = {}
    sizes = {"1mib": (MiB, arguments.small_repeats), "large": (arguments.large_mib * MiB, 2)}
    with tempfile.TemporaryDirectory() as temporary:
        for label, (size, repeats) in sizes.items():
            data = random.Random(size).randbytes(size)
            sha = _sha256(data, repeats)
            put, fetch = asyncio.run(_put_and_fetch(Path(temporary) / label, data, repeats))
            verify = _verify(data, repeats)
            figures |= {
                f"{label}_bytes": size,
                f"{label}_sha256_mib_per_s": sha,
                f"{label}_put_mib_per_s": put,
                f"{label}_verify_mib_per_s": verify,
                f"{label}_fetch_verified_mib_per_s": fetch,
                f"{label}_put_vs_sha256": put / sha,
                f"{label}_verify_vs_sha256": verify / sha,
                f"{label}_fetch_vs_sha256": fetch / sha,
            }
    report("blobs", figures)


if __name__ == "__main__":
    main()
