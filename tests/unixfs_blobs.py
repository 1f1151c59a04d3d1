"""The seeded blobs the UnixFS known-answer vectors are for (`tests/vectors/unixfs.json`),
made exactly as `tests/interop/unixfs/vectors.mjs` makes them: 1 MiB of an LCG's bytes
(x = x * 1103515245 + 12345 mod 2^31, byte = x >> 16 & 255, from x = 2026), chunk k of a
blob that base rotated left by k * 7919 bytes, a blob the concatenation cut to its size."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 1 << 20
VECTORS = Path(__file__).resolve().parent / "vectors" / "unixfs.json"
INTEROP = Path(__file__).resolve().parent / "interop" / "unixfs"


@functools.cache
def _base() -> bytes:
    out = bytearray(CHUNK)
    x = 2026
    for i in range(CHUNK):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


def seeded_chunks(size: int) -> Iterator[bytes]:
    """The blob of `size` bytes, 1 MiB at a time (the last shorter; none for 0 bytes)."""
    base = _base()
    for k, start in enumerate(range(0, size, CHUNK)):
        rotation = (k * 7919) % CHUNK
        yield (base[rotation:] + base[:rotation])[: min(CHUNK, size - start)]


def interop_tools(tmp_path: Path, project: str = "unixfs") -> Path:
    """A copy of tests/interop/<project> with its pinned npm packages installed (`npm ci`),
    where the reference IPFS tools run; skips the test where node and npm are not
    installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    work = tmp_path / project
    shutil.copytree(INTEROP.parent / project, work, ignore=shutil.ignore_patterns("node_modules"))
    installed = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=work, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    return work


def reference_ids() -> dict[int, str]:
    """The reference importer's ids, by size."""
    return {int(size): cid for size, cid in json.loads(VECTORS.read_text())["ids"].items()}
