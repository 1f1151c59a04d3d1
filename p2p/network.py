"""What the node sees of the network: one `Network` protocol, implemented over libp2p
(`p2p.libp2p_net`) and in memory (`p2p.memory`) for integration tests.

- `broadcast(topic, payload)` / `send(peer, topic, payload)`: framed messages on persistent
  streams; received ones arrive on the bounded `inbox` as `Inbound`.
- `request_range(peer, first, last)`: block sync; the peer streams items (encoded blocks with
  their certificates) that `serve_range` provides. Never one request per block.
- `fetch_blob(peer, request)`: a content-addressed stream the peer's `serve_blobs` handler
  answers (after checking the signed request against the chain).
- `allow(peer_ids)`: the permissioned set (genesis plus governance), updated live; a peer
  outside it is refused at the handshake and disconnected if already connected.

Every frame has a size limit and every peer a rate limit; a peer that breaks either, or sends
garbage, is disconnected and reported, and the node keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from carechain.consensus.errors import InvalidInput

FRAME_HEADER: Final = struct.Struct(">IB")  # payload length, topic
INBOX_MAX: Final = 10_000


class Topic(enum.IntEnum):
    CONSENSUS = 1
    TX = 2
    PARTIAL = 3


class PeerError(InvalidInput):
    """A peer broke the protocol; it is disconnected."""

    code = "peer_error"


@dataclasses.dataclass(frozen=True, slots=True)
class Inbound:
    peer: str
    topic: Topic
    payload: bytes


RangeProvider = Callable[[str, int, int], AsyncIterator[bytes]]
BlobProvider = Callable[[str, bytes], AsyncIterator[bytes]]


class Network(Protocol):
    local_id: str
    inbox: asyncio.Queue[Inbound]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def peers(self) -> list[str]: ...

    def allow(self, peer_ids: set[str]) -> None: ...

    async def broadcast(self, topic: Topic, payload: bytes) -> None: ...

    async def send(self, peer: str, topic: Topic, payload: bytes) -> None: ...

    def serve_range(self, provider: RangeProvider) -> None: ...

    def request_range(self, peer: str, first: int, last: int) -> AsyncIterator[bytes]: ...

    def serve_blobs(self, provider: BlobProvider) -> None: ...

    def fetch_blob(self, peer: str, request: bytes) -> AsyncIterator[bytes]: ...


def encode_frame(topic: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), topic) + payload


class FrameReader:
    """Splits a byte stream into (topic, payload) frames, enforcing the size limit."""

    def __init__(self, frame_bytes_max: int) -> None:
        self.frame_bytes_max = frame_bytes_max
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= FRAME_HEADER.size:
            length, topic = FRAME_HEADER.unpack_from(self.buffer)
            if length > self.frame_bytes_max:
                raise PeerError(f"frame of {length} bytes exceeds the {self.frame_bytes_max} limit")
            if len(self.buffer) < FRAME_HEADER.size + length:
                break
            payload = bytes(self.buffer[FRAME_HEADER.size : FRAME_HEADER.size + length])
            del self.buffer[: FRAME_HEADER.size + length]
            frames.append((topic, payload))
        return frames


class RateLimit:
    """A token bucket per peer: `rate` messages per second, bursts up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens: dict[str, tuple[float, float]] = {}

    def allow(self, peer: str) -> bool:
        now = self.clock()
        tokens, then = self.tokens.get(peer, (self.rate, now))
        tokens = min(self.rate, tokens + (now - then) * self.rate)
        if tokens < 1:
            self.tokens[peer] = (tokens, now)
            return False
        self.tokens[peer] = (tokens - 1, now)
        return True


def parse_topic(value: int) -> Topic:
    try:
        return Topic(value)
    except ValueError:
        raise PeerError(f"unknown topic {value}") from None


Handler = Callable[[Inbound], Awaitable[None]]
