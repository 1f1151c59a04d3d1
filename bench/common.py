"""Shared benchmark helpers: machine facts, rate measurement, JSON plus a human table."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any


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


def report(name: str, figures: dict[str, Any]) -> None:
    """One JSON object on stdout (the machine-readable result), a table on stderr."""
    document = {"benchmark": name, "machine": machine(), **figures}
    print(json.dumps(document, sort_keys=True))
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        shown = f"{value:,.1f}" if isinstance(value, float) else str(value)
        print(f"  {key:<{width}}  {shown}", file=sys.stderr)
