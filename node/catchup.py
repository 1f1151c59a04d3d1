"""How a node that fell behind catches up: which peers are ahead, when to sync, whom to ask,
and the blocks gossiped to full nodes.

Sync talks to the network without the node's lock (`BlockSync` takes it only to apply
verified blocks) and starts only when a peer is `SYNC_LEAD` heights ahead, or ahead at all
while consensus here is stalled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from carechain.consensus.errors import CarechainError
from carechain.consensus.poa.limits import EncodedLimits
from carechain.consensus.poa.messages import Commit
from carechain.node.sync import BlockSync
from carechain.p2p.network import BLOCK_ID_BYTES, Network, PeerError, Verdict
from carechain.storage.chain import ChainStore

log = logging.getLogger("carechain.node")

# Sync starts when a peer has committed this many heights more than this node (one height
# behind is routine: a commit reaches validators at slightly different times, and consensus
# itself catches up a validator one height behind), or is ahead at all while consensus here
# is stalled (`Node.consensus_stalled`).
SYNC_LEAD: Final = 2
PEER_HEIGHT_TTL_MS: Final = 30_000  # how long a validator's shown height steers sync
SYNC_UNKNOWN_HEIGHTS: Final = 10_000  # how far a sync goes when no validator showed a height


class CatchUp:
    def __init__(
        self,
        store: ChainStore,
        network: Network,
        syncer: BlockSync,
        limits: EncodedLimits,
        clock_ms: Callable[[], int],
        *,
        registered: Callable[[], set[str]],
        stalled: Callable[[], bool],
        persisted: Callable[[int], Awaitable[None]],
    ) -> None:
        """`registered`: the validators' node ids; `stalled`: whether consensus here is
        stalled; `persisted(height)`: tells the engine a block was applied (called under the
        lock, as the syncer's own batches do)."""
        self.store = store
        self.network = network
        self.syncer = syncer
        self.limits = limits
        self.clock_ms = clock_ms
        self.registered = registered
        self.stalled = stalled
        self.persisted = persisted
        self.syncing = False
        self.syncs = 0  # syncs started
        # the highest height each registered validator showed committed, and when
        self.peer_heights: dict[str, int] = {}
        self._peer_height_ms: dict[str, int] = {}
        self.gossip_blocks = 0  # blocks taken in from gossip (a full node's usual way)
        self.tasks: asyncio.TaskGroup | None = None  # where syncs run (set while the node runs)

    def peer_ahead(self, peer: str, height: int) -> None:
        """`peer` showed it has committed `height` (a message at a later height, a commit,
        a heartbeat, a gossiped block past a gap): sync if that is far enough ahead, or
        ahead at all while consensus here is stalled. Only a registered validator's claim is
        kept to steer later syncs (it ranks the peers asked and sets how far to go), and for
        PEER_HEIGHT_TTL_MS: an observer's message is unchecked when it arrives, and one that
        claimed a height far ahead would otherwise be asked first ever after."""
        ours = self.store.height
        if height <= ours:
            return
        if peer in self.registered():
            now = self.clock_ms()
            fresh = now - self._peer_height_ms.get(peer, now) < PEER_HEIGHT_TTL_MS
            known = self.peer_heights.get(peer, 0) if fresh else 0
            self.peer_heights[peer] = max(known, height)
            self._peer_height_ms[peer] = now
        if height - ours >= SYNC_LEAD or self.stalled():
            self.start(peer)

    def start(self, peer: str) -> None:
        if self.syncing or self.tasks is None:
            return
        self.syncing = True
        self.syncs += 1
        self.tasks.create_task(self._sync_from(peer), name="sync")

    def sources(self, first: str) -> tuple[list[str], int]:
        """Whom to ask, in order, and up to which height: the peers known to have committed
        past this node (they serve blocks), highest first, up to the highest they showed. A
        peer whose height is unknown or unchecked (a full node polling a validator, an
        observer's gossiped block past a gap) is asked first, up to SYNC_UNKNOWN_HEIGHTS past
        this node when no validator showed a height."""
        ours, now = self.store.height, self.clock_ms()
        linked = set(self.network.peers())
        ahead = {
            peer: height
            for peer, height in self.peer_heights.items()
            if height > ours
            and peer in linked
            and now - self._peer_height_ms.get(peer, 0) < PEER_HEIGHT_TTL_MS
        }
        if not ahead:
            return [first], ours + SYNC_UNKNOWN_HEIGHTS
        peers = sorted(ahead, key=lambda p: (p != first, -ahead[p], p))
        if first not in ahead:
            peers.insert(0, first)  # it showed a lead too, unchecked: asked, not believed
        return peers, max(ahead.values())

    async def _sync_from(self, first: str) -> None:
        try:
            before = self.store.height
            peers, target = self.sources(first)
            reached = await self.syncer.sync(peers, target)  # applies under the lock
            if reached > before:
                log.info("synced from height %d to %d", before, reached)
        except CarechainError as exc:
            log.warning("sync failed: %s", exc)
        finally:
            self.syncing = False

    async def on_gossip_block(self, peer: str, payload: bytes, lock: asyncio.Lock) -> Verdict:
        """A block gossiped to this full node: applied if it is the next height, a sync
        started if it shows a gap."""
        if self.syncing:
            return Verdict.IGNORE  # the sync brings it
        commit = gossiped_commit(payload, self.limits)
        if commit is None:
            return Verdict.REJECT
        height = commit.block.header.height
        async with lock:
            ours = self.store.height
            if height <= ours:
                return Verdict.IGNORE
            if height > ours + 1:
                self.peer_ahead(peer, height)  # a gap: fetch the range, this block with it
                return Verdict.IGNORE
            try:
                self.syncer.apply(commit, peer)
            except PeerError as exc:
                log.warning("gossiped block %d from %s refused: %s", height, peer, exc)
                return Verdict.REJECT
            self.gossip_blocks += 1
            await self.persisted(height)
        return Verdict.ACCEPT


def gossiped_commit(payload: bytes, limits: EncodedLimits) -> Commit | None:
    """The block and certificate in a gossiped block message, or None if it is malformed or
    its message id (the prefix) names another block."""
    try:
        commit = Commit.decode(payload[BLOCK_ID_BYTES:], max_bytes=limits.commit_bytes)
    except CarechainError:
        return None
    return commit if commit.block.block_hash == payload[:BLOCK_ID_BYTES] else None
