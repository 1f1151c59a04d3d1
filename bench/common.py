"""Shared benchmark helpers: machine facts, rate measurement, JSON plus a human table."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plyvel


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def rate(operation: Callable[[], object], *, seconds: float = 1.0, batch: int = 100) -> float:
    """Operations per second, repeating `operation` in batches for about `seconds`."""
    operation()  # warm up
    count, started = 0, time.perf_counter()
    while True:
        for _ in range(batch):
            operation()
        count += batch
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed


def ceilings() -> dict[str, float]:
    """This machine's limits, measured now (about 2 s): Ed25519 verifications per second on
    one core, LevelDB puts per second in synced batches of 1,000, sha256 MiB per second."""
    from carechain.consensus import crypto  # noqa: PLC0415 - keeps `machine()` import-light

    key = crypto.PrivateKey(b"\x05" * 32)
    digest = crypto.sha256(b"ceiling")
    signature = key.sign(crypto.Purpose.TX, "ceiling", digest)
    verify = rate(
        lambda: crypto.verify(key.public_key, crypto.Purpose.TX, "ceiling", digest, signature),
        seconds=0.7,
    )
    block = bytes(1024 * 1024)
    sha = rate(lambda: hashlib.sha256(block).digest(), seconds=0.4, batch=10)
    with tempfile.TemporaryDirectory() as folder:
        db = plyvel.DB(str(Path(folder) / "db"), create_if_missing=True)
        value = bytes(100)
        counter = iter(range(10**9))

        def batch() -> None:
            with db.write_batch(sync=True) as writes:
                base = next(counter) * 1000
                for index in range(base, base + 1000):
                    writes.put(index.to_bytes(8, "big"), value)

        batches = rate(batch, seconds=0.7, batch=5)
        db.close()
    return {
        "ed25519_verify_per_s_one_core": verify,
        "leveldb_puts_per_s_synced_batches_of_1000": batches * 1000,
        "sha256_mib_per_s": sha,
    }


def report(name: str, figures: dict[str, Any], limits: dict[str, float] | None = None) -> None:
    """One JSON object on stdout (the machine-readable result, with the machine and its
    ceilings measured in this run), a table on stderr."""
    figures = {**figures, **{f"ceiling_{k}": v for k, v in (limits or ceilings()).items()}}
    document = {"benchmark": name, "machine": machine(), **figures}
    print(json.dumps(document, sort_keys=True))
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}", file=sys.stderr)
