"""Block sync: catch up from peers, trusting nothing they send.

A peer streams a height range of committed blocks with their commit certificates (one stream
per range, never one request per block). Each block is checked before it is applied: its
certificate against the validator set this node computes for that height (following every
governance change), its header against our head, and its state root by re-executing it. A
broken stream resumes from the next height, with the next peer if that one failed.

Given the node's signature workers (node/verifier.py), the signatures of large batches (at
least `PARALLEL_TXS_MIN` transactions) are verified in their process pool while the previous
batch is applied; the node's signature cache then answers the block's re-execution. A pool
failure falls back to verifying inline.

Inside a running node, sync shares the store with consensus: the network exchange and the
signature checks run without the node's lock (`lock`), which is taken only to apply a verified
batch, and `after_batch` (the engine learning the new height) runs under it before it is
released. A block consensus committed meanwhile is skipped, not refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Final

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.poa.application import LedgerApplication
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.poa.messages import Commit
from carechain.consensus.wire import array_header, pack
from carechain.node.verifier import SignatureWorkers
from carechain.p2p.network import Network, PeerError
from carechain.storage.chain import ChainStore

RANGE_MAX: Final = 1000
BATCH_TXS: Final = 4000  # transactions verified together in the pool
PARALLEL_TXS_MIN: Final = 2000  # smaller batches are verified inline
# An item of any chain (a node bounds items by its own chain's `sync_item_bytes`)
ITEM_BYTES_MAX: Final = LIMITS_AT_CAP.sync_item_bytes

log = logging.getLogger("carechain.sync")


class SyncError(InvalidInput):
    code = "sync_failed"


def range_provider(store: ChainStore) -> Callable[[str, int, int], AsyncIterator[bytes]]:
    """What a node serves: its committed blocks first..last (at most RANGE_MAX per stream)."""

    async def provide(remote: str, first: int, last: int) -> AsyncIterator[bytes]:
        last = min(last, first + RANGE_MAX - 1)
        for height in range(max(first, 1), min(last, store.height) + 1):
            yield encoded_commit(store.block_bytes(height), store.certificate_bytes(height))

    return provide


def encoded_commit(block: bytes, certificate: bytes) -> bytes:
    """`Commit(block, certificate).encode()` from the two as stored, without decoding them
    (a msgpack array is its items' encodings joined): serving a range costs reads only."""
    return array_header(3) + pack(Commit.VERSION) + block + certificate


class BlockSync:
    def __init__(
        self,
        network: Network,
        store: ChainStore,
        app: LedgerApplication,
        on_commit: Callable[[Commit], None] | None = None,
        *,
        verifier: SignatureWorkers | None = None,
        item_bytes_max: int = ITEM_BYTES_MAX,
        lock: asyncio.Lock | None = None,
        after_batch: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.network = network
        self.item_bytes_max = item_bytes_max
        self.lock = lock
        self.after_batch = after_batch
        self.store = store
        self.app = app
        self.on_commit = on_commit
        self.verifier = verifier  # its owner closes it
        self.applied = 0

    async def _verify(self, commits: list[Commit]) -> None:
        """Verify the batch's signatures in the pool and remember them in the cache."""
        if self.verifier is not None:
            txs = [tx for commit in commits for tx in commit.block.txs]
            await self.verifier.verify(txs, batch_min=PARALLEL_TXS_MIN)

    def _decode(self, item: bytes, peer: str) -> Commit:
        try:
            return Commit.decode(item, max_bytes=self.item_bytes_max)
        except CarechainError as exc:
            raise PeerError(f"{peer} sent an unreadable block: {exc}") from None

    async def _stream(self, peer: str, first: int, last: int) -> None:
        """Apply the peer's blocks first..last; verification of each batch overlaps the
        application of the one before."""
        batch: list[Commit] = []
        size = 0
        waiting: tuple[list[Commit], asyncio.Task[None]] | None = None
        try:
            async for item in self.network.request_range(peer, first, last):
                commit = self._decode(item, peer)
                batch.append(commit)
                size += len(commit.block.txs)
                if size >= BATCH_TXS:
                    verifying = asyncio.create_task(self._verify(batch))
                    await asyncio.sleep(0)  # the task hands the batch to the pool now, not
                    # after the (CPU-bound, never yielding) application of the previous one
                    if waiting is not None:
                        await self._apply_batch(*waiting, peer)
                    waiting, batch, size = (batch, verifying), [], 0
            if waiting is not None:
                await self._apply_batch(*waiting, peer)
                waiting = None
            if batch:
                await self._apply_batch(batch, asyncio.create_task(self._verify(batch)), peer)
        finally:
            if waiting is not None:
                waiting[1].cancel()

    async def _apply_batch(
        self, commits: list[Commit], verifying: asyncio.Task[None], peer: str
    ) -> None:
        await verifying
        async with self.lock or contextlib.nullcontext():
            before = self.store.height
            try:
                for commit in commits:
                    if commit.block.header.height <= self.store.height:
                        continue  # committed meanwhile, by consensus or from gossip
                    self.apply(commit, peer)
            finally:
                if self.after_batch is not None and self.store.height > before:
                    await self.after_batch(self.store.height)

    def apply(self, commit: Commit, peer: str) -> Commit:
        """Check a committed block for the next height and apply it; PeerError if it is not."""
        height = self.store.height + 1
        block, certificate = commit.block, commit.certificate
        if block.header.height != height or certificate.height != height:
            raise PeerError(f"{peer} sent height {block.header.height}, expected {height}")
        try:
            certificate.verify(
                self.app.chain.chain_id, self.app.validator_set(height), block.block_hash
            )
        except CarechainError as exc:
            raise PeerError(f"{peer}: {exc}") from None
        problem = self.app.validate(block)
        if problem is not None:
            raise PeerError(f"{peer} sent an invalid block: {problem}")
        self.store.commit(block, certificate, self.app.executed(block))
        self.applied += 1
        if self.on_commit is not None:
            self.on_commit(commit)
        return commit

    async def sync(self, peers: Sequence[str], target: int) -> int:
        """Sync up to `target` (or as far as the peers have); returns the height reached."""
        failures: dict[str, str] = {}
        candidates = list(peers)
        while self.store.height < target and candidates:
            peer = candidates[0]
            before = self.store.height
            try:
                await self._stream(peer, before + 1, target)
            except PeerError as exc:
                failures[peer] = str(exc)
                log.warning("sync from %s stopped at %d: %s", peer, self.store.height, exc)
                candidates.append(candidates.pop(0))  # try the others first
                if self.store.height == before:
                    candidates.remove(peer)  # no progress at all: give up on this peer
                continue
            if self.store.height == before:
                candidates.pop(0)  # it has nothing more for us
        if self.store.height < target and failures:
            log.warning(
                "sync reached %d of %d; peers failed: %s", self.store.height, target, failures
            )
        return self.store.height
