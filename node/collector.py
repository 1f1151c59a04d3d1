"""The garbage collector's thresholds for the long-running work: the node daemon and the
auditor's replay (and the benchmarks that time them).

CPython's default collects the youngest generation after every 700 net new container objects
and the whole heap every ~100 of those. A loaded node allocates transactions, decoded records
and state entries by the hundred thousand per second, most of them freed at once, and keeps
tens of thousands alive in its caches (state entries, mempool, signatures seen); so the default
ran about 75 young collections per second and a whole-heap one every few seconds, each of
those walking every object the caches hold: 12-17% of a validator's CPU on a loaded
4-validator network, with whole-heap pauses of ~170 ms (measured with `gc.callbacks`).

With the youngest generation collected after 50,000 net new objects, a loaded validator
spends ~3% of its CPU collecting and the whole heap is walked rarely; what garbage cycles
there are wait a little longer (`bench/soak.py` checks the memory this leaves).

The thresholds hold only inside `tuned_collector()`: `carechain audit replay` may run inside
another program (a test runner, an auditor's own tooling), whose collector it leaves as it
found it. Nothing is frozen out of collection (`gc.freeze`) for the same reason: objects
that program leaked and relies on the collector to close (sockets) would stay open."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

THRESHOLDS: Final = (50_000, 20, 20)


@contextlib.contextmanager
def tuned_collector() -> Iterator[None]:
    """THRESHOLDS while the block runs, the thresholds before it afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(*THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
