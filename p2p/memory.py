"""The in-memory twin of the libp2p network, for integration tests that run several nodes in
one process. Same `Network` protocol, same permission rule (both ends must allow each other),
same bounded inbox; a hub can cut links to test partitions and broken syncs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from carechain.p2p.network import (
    INBOX_MAX,
    BlobProvider,
    Inbound,
    PeerError,
    RangeProvider,
    Topic,
)


class MemoryHub:
    def __init__(self) -> None:
        self.endpoints: dict[str, MemoryNetwork] = {}
        self.cut: set[frozenset[str]] = set()
        self.dropped = 0

    def linked(self, a: str, b: str) -> bool:
        first, second = self.endpoints.get(a), self.endpoints.get(b)
        if first is None or second is None or frozenset({a, b}) in self.cut:
            return False
        return b in first.allowed and a in second.allowed

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
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(INBOX_MAX)
        self._ranges: RangeProvider | None = None
        self._blobs: BlobProvider | None = None

    async def start(self) -> None:
        self.hub.endpoints[self.local_id] = self

    async def stop(self) -> None:
        self.hub.endpoints.pop(self.local_id, None)

    def peers(self) -> list[str]:
        return sorted(
            p
            for p in self.hub.endpoints
            if p != self.local_id and self.hub.linked(self.local_id, p)
        )

    def allow(self, peer_ids: set[str]) -> None:
        self.allowed = set(peer_ids)

    def _deliver(self, peer: str, topic: Topic, payload: bytes) -> None:
        target = self.hub.endpoints[peer]
        try:
            target.inbox.put_nowait(Inbound(self.local_id, topic, payload))
        except asyncio.QueueFull:
            self.hub.dropped += 1

    async def broadcast(self, topic: Topic, payload: bytes) -> None:
        for peer in self.peers():
            self._deliver(peer, topic, payload)

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
