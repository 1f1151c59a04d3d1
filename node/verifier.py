"""Signature checks in worker processes, for batches large enough to pay for the trip.

A node checks each transaction's signatures once and keeps the result in its
`SignatureCache`; admission, proposals, validation and block sync all ask the cache. Given a
batch (an API batch submission, a synced range of blocks), `SignatureWorkers` verifies the
transactions the cache does not hold in a pool of processes, split evenly, and records those
whose signatures all verify; the rest are left to the inline check, which names what is
wrong. So the workers only change where the time is spent, never a verdict.

The pool starts on first use, or at once (`warm_up`, which the daemon does as it starts), with
forkserver (the node's process runs libp2p in a thread and must not fork). If it breaks, the
node logs it once and verifies inline from then on.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from carechain.consensus.ledger.apply import SignatureCache, signers_of
from carechain.consensus.types import Tx

log = logging.getLogger("carechain.verifier")


class SignatureWorkers:
    """One pool per node, shared by what hands it batches (the API, block sync)."""

    def __init__(self, cache: SignatureCache, workers: int) -> None:
        self.cache = cache
        self.workers = workers
        self.verified = 0  # transactions whose signatures the workers verified
        self._pool: ProcessPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    async def warm_up(self) -> None:
        """Start the pool now rather than on the first large batch: starting it (forkserver,
        workers importing the ledger) takes a second or two, and the first burst of
        transactions after a restart would wait that long to be admitted."""
        if self.workers < 2 or self._pool is not None:
            return
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(loop.run_in_executor(self._pool, signers_of_all, []) for _ in range(self.workers))
            )
        except Exception as exc:  # a broken pool: verify inline instead
            log.warning("signature workers failed to start (%r); verifying inline", exc)
            self.close()
            self.workers = 1

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        return ProcessPoolExecutor(self.workers, mp_context=context)

    async def verify(self, txs: Sequence[Tx], batch_min: int) -> None:
        """Verify in the workers what the cache does not hold yet, and remember what passed;
        fewer than `batch_min` such transactions are left to the inline check."""
        if self.workers < 2 or len(txs) < batch_min:
            return
        # one copy of each: several peers often send the same transaction in one batch
        unique = {tx.witness_hash: tx for tx in txs if tx.witness_hash not in self.cache}
        todo = [tx.encode() for tx in unique.values()]
        if len(todo) < batch_min:
            return
        if self._pool is None:
            self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        size = -(-len(todo) // self.workers)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        try:
            found = await asyncio.gather(
                *(loop.run_in_executor(self._pool, signers_of_all, c) for c in chunks)
            )
        except Exception as exc:  # a broken pool: verify inline instead
            log.warning("signature workers failed (%r); verifying inline", exc)
            self.close()
            self.workers = 1
            return
        for chunk in found:
            for witness_hash, signers in chunk:
                if not isinstance(signers, str):
                    self.cache.remember(witness_hash, signers)
                    self.verified += 1


def signers_of_all(txs: list[bytes]) -> list[tuple[bytes, frozenset[bytes] | str]]:
    """In a worker process: each transaction's verified signers, or why it has none."""
    return [signers_of(tx) for tx in txs]
