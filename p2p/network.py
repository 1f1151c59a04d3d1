"""What the node sees of the network: one `Network` protocol, implemented over libp2p
(`p2p.libp2p_net`) and in memory (`p2p.memory`) for integration tests.

- `broadcast(topic, payload)` / `send(peer, topic, payload)`: framed messages on persistent
  streams to the direct peers (the validators: a small, fully connected set); received ones
  arrive in the `inbox` as `Inbound`. The inbox has two lanes (see `Inbox`): consensus
  messages, bounded and read first, and transactions, where each peer has a credit of frames
  it may have waiting; a peer out of credit is not read from until the node has taken its
  earlier frames (backpressure down to its TCP window), so a flood of transactions slows its
  sender and never pushes a vote or a proposal out.
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
import collections
import dataclasses
import enum
import hashlib
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from carechain.consensus.errors import InvalidInput

FRAME_HEADER: Final = struct.Struct(">IB")  # payload length, topic
CONSENSUS_INBOX_MAX: Final = 8192  # consensus frames waiting, all peers together
PEER_CONSENSUS_MAX: Final = 2048  # consensus frames one peer may have waiting
PEER_TX_CREDIT: Final = 1024  # transaction frames one peer may have waiting
PEER_TX_CREDIT_BYTES: Final = 8 * 1024 * 1024  # and their bytes (one frame always fits)
GOSSIP_STRIKES_MAX: Final = 3  # provably invalid gossip messages before a peer is dropped
BAN_S: Final = 60.0  # how long a peer dropped for invalid gossip stays refused


class Topic(enum.IntEnum):
    CONSENSUS = 1
    TX = 2
    PARTIAL = 3
    BLOCK = 4  # a committed block with its certificate (gossip only)


GOSSIP_TOPICS: Final = frozenset({Topic.TX, Topic.PARTIAL, Topic.BLOCK})
TX_TOPICS: Final = frozenset({Topic.TX, Topic.PARTIAL})  # the inbox's transaction lane


class Lane(enum.Enum):
    """The two ways a direct message travels: each has its own stream, send queue and inbox
    lane, so that transactions never delay or displace consensus messages."""

    CONSENSUS = "consensus"
    TXS = "txs"

    @classmethod
    def of(cls, topic: Topic) -> Lane:
        return cls.TXS if topic in TX_TOPICS else cls.CONSENSUS


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


Released = dict[str, tuple[int, int]]  # peer -> (frames, bytes) given back


class Credit:
    """The transaction frames, and their bytes, each peer has waiting at a node, against the
    limits. The node's inbox keeps one on the event loop; the libp2p thread keeps its own
    copy, told of each release, to know when to stop reading a peer."""

    def __init__(self, frames_max: int, bytes_max: int) -> None:
        self.frames_max = frames_max
        self.bytes_max = bytes_max
        self.frames: collections.Counter[str] = collections.Counter()
        self.bytes: collections.Counter[str] = collections.Counter()

    def fits(self, peer: str, size: int) -> bool:
        """Whether one more frame of `size` bytes fits `peer`'s credit (a frame always
        fits when the peer has none waiting)."""
        if self.frames[peer] == 0:
            return True
        return self.frames[peer] < self.frames_max and self.bytes[peer] + size <= self.bytes_max

    def take(self, peer: str, size: int) -> None:
        self.frames[peer] += 1
        self.bytes[peer] += size

    def give_back(self, released: Released) -> None:
        for peer, (frames, size) in released.items():
            self.frames[peer] -= frames
            self.bytes[peer] -= size
            if self.frames[peer] <= 0:
                del self.frames[peer]
                self.bytes.pop(peer, None)


def released_by(messages: list[Inbound]) -> Released:
    """What taking `messages` in gives back, per peer."""
    released: dict[str, tuple[int, int]] = {}
    for message in messages:
        frames, size = released.get(message.peer, (0, 0))
        released[message.peer] = (frames + 1, size + len(message.payload))
    return released


class Inbox:
    """What peers sent directly, in two lanes.

    - Consensus (proposals, votes, commits): read first (`take_consensus`), bounded in all
      (`CONSENSUS_INBOX_MAX`) and per peer (`PEER_CONSENSUS_MAX`, so one peer cannot fill it
      for the others); transactions never take its room.
    - Transactions and partials: each peer may have `PEER_TX_CREDIT` frames, and
      `PEER_TX_CREDIT_BYTES` of them, waiting (its `Credit`). The network stops reading a
      peer's transaction stream while it has none left, and the node gives credit back when
      it has taken a batch in (`release`): a peer is slowed to what the node admits, down to
      its own send queue.

    What does not fit (only a peer that ignores its credit, or a consensus flood) is dropped
    and counted by lane. Lives on the node's event loop; `put` is called there."""

    def __init__(
        self,
        *,
        consensus_max: int = CONSENSUS_INBOX_MAX,
        peer_consensus_max: int = PEER_CONSENSUS_MAX,
        peer_tx_credit: int = PEER_TX_CREDIT,
        peer_tx_credit_bytes: int = PEER_TX_CREDIT_BYTES,
    ) -> None:
        self.consensus_max = consensus_max
        self.peer_consensus_max = peer_consensus_max
        self.tx_credit = Credit(peer_tx_credit, peer_tx_credit_bytes)
        self.consensus: collections.deque[Inbound] = collections.deque()
        self._arrived: collections.deque[float] = collections.deque()  # of each consensus one
        self.consensus_wait_s_max = 0.0  # the longest a consensus message waited here
        self.txs: collections.deque[Inbound] = collections.deque()
        self.dropped_consensus = 0
        self.dropped_txs = 0
        self.received_bytes = {"consensus": 0, "txs": 0}  # payloads taken in, by lane
        self.on_release: Callable[[Released], None] | None = None
        self._consensus_of: collections.Counter[str] = collections.Counter()
        self._consensus_ready = asyncio.Event()
        self._txs_ready = asyncio.Event()
        # set while no consensus message waits or is being handled (`consensus_done`)
        self._consensus_idle = asyncio.Event()
        self._consensus_idle.set()

    def __len__(self) -> int:
        return len(self.consensus) + len(self.txs)

    def empty(self) -> bool:
        return not self.consensus and not self.txs

    def credit(self, peer: str) -> int:
        """How many more transaction frames `peer` may have waiting (bytes allowing)."""
        return self.tx_credit.frames_max - self.tx_credit.frames[peer]

    def put(self, message: Inbound) -> bool:
        """Take a message in; False if its lane has no room for it (counted as dropped)."""
        peer = message.peer
        if message.topic in TX_TOPICS:
            if not self.tx_credit.fits(peer, len(message.payload)):
                self.dropped_txs += 1
                return False
            self.tx_credit.take(peer, len(message.payload))
            self.received_bytes["txs"] += len(message.payload)
            self.txs.append(message)
            self._txs_ready.set()
            return True
        if (
            len(self.consensus) >= self.consensus_max
            or self._consensus_of[peer] >= self.peer_consensus_max
        ):
            self.dropped_consensus += 1
            return False
        self._consensus_of[peer] += 1
        self.received_bytes["consensus"] += len(message.payload)
        self.consensus.append(message)
        self._arrived.append(time.monotonic())
        self._consensus_ready.set()
        self._consensus_idle.clear()
        return True

    async def next_consensus(self, limit: int) -> list[Inbound]:
        """Up to `limit` consensus messages, oldest first; waits for one."""
        while not self.consensus:
            self._consensus_ready.clear()
            await self._consensus_ready.wait()
        count = min(limit, len(self.consensus))
        taken = [self.consensus.popleft() for _ in range(count)]
        arrived = [self._arrived.popleft() for _ in range(count)]
        self.consensus_wait_s_max = max(self.consensus_wait_s_max, time.monotonic() - arrived[0])
        for message in taken:
            self._consensus_of[message.peer] -= 1
            if not self._consensus_of[message.peer]:
                del self._consensus_of[message.peer]
        return taken

    def consensus_done(self) -> None:
        """The consensus reader handled what it took: if nothing else waits, transaction
        work (`consensus_idle`) may go on."""
        if not self.consensus:
            self._consensus_idle.set()

    async def consensus_idle(self) -> None:
        """Wait until no consensus message waits or is being handled: whatever admits
        transactions calls this between chunks, so consensus goes first within the node."""
        await self._consensus_idle.wait()

    async def next_txs(self, limit: int) -> list[Inbound]:
        """Up to `limit` transaction frames, oldest first; waits for one. Their peers get
        the credit back only when the caller `release`s them, after taking them in."""
        await self.wait_txs()
        return self.take_txs(limit)

    async def wait_txs(self) -> None:
        """Until a transaction frame waits."""
        while not self.txs:
            self._txs_ready.clear()
            await self._txs_ready.wait()

    def take_txs(self, limit: int) -> list[Inbound]:
        """Up to `limit` waiting transaction frames, oldest first (see `next_txs`)."""
        return [self.txs.popleft() for _ in range(min(limit, len(self.txs)))]

    def release(self, messages: list[Inbound]) -> None:
        """Give back the credit of transaction frames taken with `next_txs`."""
        released = released_by(messages)
        self.tx_credit.give_back(released)
        if self.on_release is not None and released:
            self.on_release(released)

    async def get(self) -> Inbound:
        """The next message, consensus first (for tools and tests that read one at a time;
        a transaction's credit is given back at once)."""
        while self.empty():
            self._consensus_ready.clear()
            self._txs_ready.clear()
            ready = [
                asyncio.ensure_future(self._consensus_ready.wait()),
                asyncio.ensure_future(self._txs_ready.wait()),
            ]
            try:
                await asyncio.wait(ready, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in ready:
                    waiter.cancel()
        if self.consensus:
            message = (await self.next_consensus(1))[0]
            self.consensus_done()  # the caller handles it in its own time
            return message
        taken = await self.next_txs(1)
        self.release(taken)
        return taken[0]


class Network(Protocol):
    local_id: str
    inbox: Inbox

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def peers(self) -> list[str]: ...

    def drops(self) -> dict[str, int]: ...

    def sent_bytes(self) -> dict[str, int]:
        """Bytes of direct frames queued to peers, by lane ("consensus", "txs")."""
        ...

    def outsider_topics(self) -> frozenset[Topic]: ...

    def refused_peers(self) -> dict[str, int]:
        """Peers refused at the handshake, by cause ("unregistered", "banned")."""
        ...

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
