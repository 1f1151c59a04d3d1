"""The in-memory twin of the libp2p network, for integration tests that run several nodes in
one process. Same `Network` protocol, same permission rule (both ends must allow each other),
same two-lane inbox (a transaction past the receiving peer's credit is dropped at once here,
where libp2p would hold it in the sender's queue); a hub can cut links to test partitions and
broken syncs.

Gossip here floods: a node hands a message to each linked peer subscribed to its topic; the peer
drops it if its id (the content hash) was seen, else asks its handler and forwards only what the
handler accepts, and drops a peer after `GOSSIP_STRIKES_MAX` rejected messages. GossipSub's mesh
sends fewer copies, but what arrives and what is forwarded follow the same rule."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from carechain.p2p.network import (
    BAN_S,
    GOSSIP_STRIKES_MAX,
    BlobProvider,
    GossipHandler,
    Inbound,
    Inbox,
    Lane,
    PeerError,
    RangeProvider,
    Topic,
    Verdict,
    message_id,
)

SEEN_MAX = 100_000


class MemoryHub:
    def __init__(self) -> None:
        self.endpoints: dict[str, MemoryNetwork] = {}
        self.cut: set[frozenset[str]] = set()
        self.dropped = 0

    def linked(self, a: str, b: str) -> bool:
        first, second = self.endpoints.get(a), self.endpoints.get(b)
        if first is None or second is None or frozenset({a, b}) in self.cut:
            return False
        return first.admits(b) and second.admits(a)

    def partition(self, *groups: set[str]) -> None:
        names = set(self.endpoints)
        self.cut = {
            frozenset({a, b})
            for a in names
            for b in names
            if a != b and not any(a in g and b in g for g in groups)
        }

    def heal(self) -> None:
        self.cut.clear()


class MemoryNetwork:
    def __init__(self, hub: MemoryHub, local_id: str, allowed: set[str] | None = None) -> None:
        self.hub = hub
        self.local_id = local_id
        self.allowed: set[str] = set(allowed or ())
        self.direct: set[str] | None = None
        self.inbox = Inbox()
        self._sent_bytes: dict[str, int] = {}  # by lane
        self.disconnected_for: dict[str, str] = {}
        self._ranges: RangeProvider | None = None
        self._blobs: BlobProvider | None = None
        self._gossip: GossipHandler | None = None
        self._topics: frozenset[Topic] = frozenset()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._strikes: dict[str, int] = {}
        self.banned_until: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def outsider_topics(self) -> frozenset[Topic]:
        direct = self.direct or set()
        return frozenset(
            topic
            for peer in self.peers()
            if peer not in direct
            for topic in self.hub.endpoints[peer]._topics
        )

    def drops(self) -> dict[str, int]:
        """As `Libp2pNetwork.drops`: here only the receivers' inbox lanes drop."""
        return {
            "consensus_received": self.inbox.dropped_consensus,
            "txs_received": self.inbox.dropped_txs,
        }

    def refused_peers(self) -> dict[str, int]:
        """In-memory links have no handshake: a peer not admitted is never linked, and nothing
        is refused at a door."""
        return {}

    def admits(self, peer: str) -> bool:
        return peer in self.allowed and self.banned_until.get(peer, 0.0) <= time.monotonic()

    async def start(self) -> None:
        self.hub.endpoints[self.local_id] = self

    async def stop(self) -> None:
        self.hub.endpoints.pop(self.local_id, None)
        for task in list(self._tasks):
            task.cancel()

    def peers(self) -> list[str]:
        return sorted(
            p
            for p in self.hub.endpoints
            if p != self.local_id and self.hub.linked(self.local_id, p)
        )

    def allow(self, peer_ids: set[str], direct: set[str] | None = None) -> None:
        self.allowed = set(peer_ids)
        self.direct = None if direct is None else set(direct)

    def _deliver(self, peer: str, topic: Topic, payload: bytes) -> None:
        target = self.hub.endpoints[peer]
        if not target.inbox.put(Inbound(self.local_id, topic, payload)):
            self.hub.dropped += 1
            return
        lane = Lane.of(topic).value
        self._sent_bytes[lane] = self._sent_bytes.get(lane, 0) + len(payload)

    def sent_bytes(self) -> dict[str, int]:
        return dict(self._sent_bytes)

    async def broadcast(self, topic: Topic, payload: bytes) -> None:
        for peer in self.peers():
            if self.direct is None or peer in self.direct:
                self._deliver(peer, topic, payload)

    # -- gossip ---------------------------------------------------------------------------------
    def serve_gossip(self, handler: GossipHandler, topics: frozenset[Topic]) -> None:
        self._gossip = handler
        self._topics = topics

    async def publish(self, topic: Topic, payload: bytes) -> None:
        if self._mark_seen(
            message_id(topic, payload)
        ):  # as GossipSub: a seen message is not resent
            self._forward(None, topic, payload)

    def _mark_seen(self, key: bytes) -> bool:
        """Whether `key` is new; remembers it (the oldest are forgotten past SEEN_MAX)."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def _forward(self, source: str | None, topic: Topic, payload: bytes) -> None:
        for peer in self.peers():
            target = self.hub.endpoints[peer]
            if peer != source and topic in target._topics:
                task = asyncio.get_running_loop().create_task(
                    target._on_gossip(self.local_id, topic, payload)
                )
                target._tasks.add(task)
                task.add_done_callback(target._tasks.discard)

    async def _on_gossip(self, source: str, topic: Topic, payload: bytes) -> None:
        key = message_id(topic, payload)
        if self._gossip is None or not self._mark_seen(key):
            return  # a duplicate costs one hash
        verdict = await self._gossip(source, topic, payload)
        if verdict is Verdict.ACCEPT:
            self._forward(source, topic, payload)
        elif verdict is Verdict.REJECT:
            self._seen.pop(key, None)  # a genuine copy under the same id may follow
            self._strikes[source] = self._strikes.get(source, 0) + 1
            if self._strikes[source] >= GOSSIP_STRIKES_MAX:
                self.disconnected_for[source] = "forwarded invalid gossip messages"
                self.banned_until[source] = time.monotonic() + BAN_S

    async def send(self, peer: str, topic: Topic, payload: bytes) -> None:
        if self.hub.linked(self.local_id, peer):
            self._deliver(peer, topic, payload)

    def serve_range(self, provider: RangeProvider) -> None:
        self._ranges = provider

    async def request_range(self, peer: str, first: int, last: int) -> AsyncIterator[bytes]:
        if not self.hub.linked(self.local_id, peer):
            raise PeerError(f"{peer} is not connected")
        provider = self.hub.endpoints[peer]._ranges
        if provider is None:
            raise PeerError(f"{peer} serves no blocks")
        async for item in _refusals_as_peer_errors(peer, provider(self.local_id, first, last)):
            if not self.hub.linked(self.local_id, peer):
                raise PeerError(f"the stream from {peer} broke")
            yield item

    def serve_blobs(self, provider: BlobProvider) -> None:
        self._blobs = provider

    async def fetch_blob(self, peer: str, request: bytes) -> AsyncIterator[bytes]:
        if not self.hub.linked(self.local_id, peer):
            raise PeerError(f"{peer} is not connected")
        provider = self.hub.endpoints[peer]._blobs
        if provider is None:
            raise PeerError(f"{peer} serves no blobs")
        async for piece in _refusals_as_peer_errors(peer, provider(self.local_id, request)):
            yield piece


async def _refusals_as_peer_errors(peer: str, items: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """What a serving node raises reaches the requester as a refusal, as over libp2p."""
    try:
        async for item in items:
            yield item
    except PeerError:
        raise
    except Exception as exc:
        raise PeerError(f"{peer} refused: {exc}") from None
