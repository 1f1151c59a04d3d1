"""What the node sees of the network: one `Network` protocol, implemented over libp2p
(`p2p.libp2p_net`) and in memory (`p2p.memory`) for integration tests.

- `broadcast(topic, payload)` / `send(peer, topic, payload)`: framed messages on persistent
  streams to the direct peers (the validators: a small, fully connected set); received ones
  arrive on the bounded `inbox` as `Inbound`.
- `publish(topic, payload)`: GossipSub, for the wider set of non-validator nodes (clinics,
  pharmacies, auditors' full nodes): transactions, partials and committed blocks. The message
  id is the content hash (`message_id`), so a duplicate is dropped before anything else looks
  at it. A received gossip message goes to the node's `serve_gossip` handler, which validates
  and takes it in one step and returns a `Verdict`: only accepted messages are forwarded, and a
  peer that forwards provably invalid ones (`Verdict.REJECT`) is disconnected.
- `request_range(peer, first, last)`: block sync; the peer streams items (encoded blocks with
  their certificates) that `serve_range` provides. Never one request per block.
- `fetch_blob(peer, request)`: a content-addressed stream the peer's `serve_blobs` handler
  answers (after checking the signed request against the chain).
- `allow(peer_ids, direct)`: the permissioned set (genesis plus governance, plus the
  non-validator peers a node's config admits), updated live; a peer outside it is refused at
  the handshake and disconnected if already connected. `direct` (default: all of them) are the
  peers `broadcast` fans out to.

Every frame has a size limit and every peer a rate limit; a peer that breaks either, or sends
garbage, is disconnected and reported, and the node keeps running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from carechain.consensus.errors import InvalidInput

FRAME_HEADER: Final = struct.Struct(">IB")  # payload length, topic
INBOX_MAX: Final = 10_000
GOSSIP_STRIKES_MAX: Final = 3  # provably invalid gossip messages before a peer is dropped
BAN_S: Final = 60.0  # how long a peer dropped for invalid gossip stays refused


class Topic(enum.IntEnum):
    CONSENSUS = 1
    TX = 2
    PARTIAL = 3
    BLOCK = 4  # a committed block with its certificate (gossip only)


GOSSIP_TOPICS: Final = frozenset({Topic.TX, Topic.PARTIAL, Topic.BLOCK})


class Verdict(enum.Enum):
    """What a node says of a gossip message it received."""

    ACCEPT = "accept"  # valid and taken in: forward it
    IGNORE = "ignore"  # not for us now (a duplicate, an old block, a stateful rejection)
    REJECT = "reject"  # provably invalid (unreadable, bad signature or certificate)


BLOCK_ID_BYTES: Final = 32


def message_id(topic: Topic, payload: bytes) -> bytes:
    """A gossip message's id: the hash of its content. For a transaction, the sha256 of its
    bytes. A block message is the block's hash followed by the block and a commit certificate;
    every validator publishes the block it committed, each with the certificate it gathered, so
    the id is the block's hash and the copies after the first are dropped unread. (The node
    checks that the prefix is the block's hash before it accepts or forwards one.)"""
    if topic is Topic.BLOCK:
        return payload[:BLOCK_ID_BYTES]
    return hashlib.sha256(payload).digest()


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
GossipHandler = Callable[[str, Topic, bytes], Awaitable[Verdict]]


class Network(Protocol):
    local_id: str
    inbox: asyncio.Queue[Inbound]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def peers(self) -> list[str]: ...

    def allow(self, peer_ids: set[str], direct: set[str] | None = None) -> None: ...

    async def broadcast(self, topic: Topic, payload: bytes) -> None: ...

    async def publish(self, topic: Topic, payload: bytes) -> None: ...

    def serve_gossip(self, handler: GossipHandler, topics: frozenset[Topic]) -> None: ...

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
