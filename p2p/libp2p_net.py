"""The `Network` over py-libp2p: TCP, Noise only, Yamux, one connection per peer, a
permission gate, persistent message streams, GossipSub, block sync and blob streams.

py-libp2p runs on trio; the daemon on asyncio. Here trio runs in its own thread, and the two
sides talk through bounded queues: asyncio -> trio through a trio memory channel fed with
`TrioToken.run_sync_soon`, trio -> asyncio with `loop.call_soon_threadsafe` into the node's
bounded inbox (a full inbox drops and counts, it never blocks the network thread). Sync and
blob providers live on the asyncio side and are pulled in batches.

Its parts, each in its own module: the thread and the ways across (`p2p.libp2p_thread`, which
says why a thread), the host and its permission gate (`p2p.libp2p_gate`, which says what of
py-libp2p's defaults it overrides), the direct message streams (`p2p.libp2p_messages`),
GossipSub's tuning and validation (`p2p.libp2p_gossip`), reads and writes under Yamux flow
control (`p2p.libp2p_yamux`), and the sync and blob request streams (`p2p.libp2p_requests`).
Here: the `Network` protocol, running the host, dialling and the permitted set, each peer's
send queues, and gossip publication and validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.p2p.libp2p_gate import (
    STALL_TIMEOUT_S,
    GatedNoise,
    bound_stalls,
    gated_host,
    refusal,
)
from carechain.p2p.libp2p_gossip import (
    OUTBOX_MAX,
    TOPIC_NAMES,
    TOPICS_BY_NAME,
    ask_node,
    drain,
    gossip_pubsub,
    gossipsub,
    publish_unsigned,
    unsigned_violation,
)
from carechain.p2p.libp2p_messages import MESSAGES, TXS, InboundStreams, write_frames
from carechain.p2p.libp2p_requests import BLOBS, END, SYNC, client, serve, serve_sync
from carechain.p2p.libp2p_thread import TrioThread
from carechain.p2p.libp2p_yamux import READ_BYTES, YAMUX_WINDOW_MAX_BYTES
from carechain.p2p.network import (
    BAN_S,
    GOSSIP_STRIKES_MAX,
    GOSSIP_TOPICS,
    BlobProvider,
    Credit,
    GossipHandler,
    Inbox,
    Lane,
    RangeProvider,
    RateLimit,
    Released,
    Topic,
    Verdict,
    encode_frame,
    message_id,
)

# The adapter's names stay importable from here, those its parts now own included.
__all__ = [
    "BLOBS",
    "CHECKED_MAX",
    "DIAL_INTERVAL_S",
    "END",
    "MESSAGES",
    "OUTBOX_MAX",
    "READ_BYTES",
    "STALL_TIMEOUT_S",
    "SYNC",
    "TOPIC_NAMES",
    "TXS",
    "YAMUX_WINDOW_MAX_BYTES",
    "GatedNoise",
    "Libp2pNetwork",
    "bound_stalls",
]

CHECKED_MAX: Final = 65_536
DIAL_INTERVAL_S: Final = 1.0

log = logging.getLogger("carechain.p2p")
logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # its refusals are reported by us


class Libp2pNetwork(TrioThread):
    def __init__(
        self,
        node_key: PrivateKey,
        listen: str,
        *,
        dial: list[str] | None = None,
        allowed: set[str] | None = None,
        frame_bytes_max: int = 16 * 1024 * 1024,
        messages_per_second_max: float = 5000,
        on_peer_error: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__()
        self.node_key = node_key
        self.local_id = peer_id(node_key.public_key)
        self.listen = listen
        self.dial = list(dial or [])
        self.allowed: frozenset[str] = frozenset(allowed or ())
        self.direct: frozenset[str] | None = None
        self.banned_until: dict[str, float] = {}
        self.ban_reasons: dict[str, str] = {}
        self.frame_bytes_max = frame_bytes_max
        self.rate = RateLimit(messages_per_second_max)  # the message stream (consensus)
        self.tx_rate = RateLimit(messages_per_second_max)  # the transaction stream
        self.on_peer_error = on_peer_error
        self.inbox = Inbox()
        self.inbox.on_release = self._release_credit
        # trio side: transaction frames handed to the node and not yet released, per peer
        self._tx_credit = Credit(self.inbox.tx_credit.frames_max, self.inbox.tx_credit.bytes_max)
        self._inbound = InboundStreams(
            self.inbox,
            frame_bytes_max,
            self.rate,
            self.tx_rate,
            self._tx_credit,
            call_async=self._call_async,
            disconnect=self._disconnect,
            release_credit=self._release_credit,
        )
        self.listen_addrs: list[str] = []
        self.dropped_sends = {Lane.CONSENSUS: 0, Lane.TXS: 0}  # full send queues
        self._sent_bytes = {Lane.CONSENSUS: 0, Lane.TXS: 0}  # frames queued to peers
        self.dropped_gossip = 0  # gossip publications that failed
        self.refused_by: Counter[str] = Counter()  # peers refused at the handshake, by cause
        self.disconnected_for: dict[str, str] = {}
        self._ranges: RangeProvider | None = None
        self._blobs: BlobProvider | None = None
        self._gossip: GossipHandler | None = None
        self._gossip_topics: frozenset[Topic] = frozenset()
        self._gossip_tasks: set[asyncio.Future[Verdict]] = set()
        self._strikes: dict[str, int] = {}
        self._in_flight: set[bytes] = set()  # ids being published right now
        # ids handed to the node: pubsub marks a message seen only after validation, so a copy
        # arriving meanwhile would be validated again
        self._checked: OrderedDict[bytes, None] = OrderedDict()
        self._pubsub: Pubsub | None = None
        self._connected: frozenset[str] = frozenset()
        self._outsider_topics: frozenset[Topic] = frozenset()
        self._host: Any = None
        self._outboxes: dict[tuple[str, Lane], trio.MemorySendChannel[bytes]] = {}

    @property
    def dropped(self) -> int:
        """Everything this network dropped: full send queues and inbox lanes, failed gossip."""
        return (
            sum(self.dropped_sends.values())
            + self.inbox.dropped_consensus
            + self.inbox.dropped_txs
            + self.dropped_gossip
            + self.dropped_commands
        )

    def outsider_topics(self) -> frozenset[Topic]:
        """The gossip topics some linked peer outside the direct set subscribes to (as of
        the last second)."""
        return self._outsider_topics

    def sent_bytes(self) -> dict[str, int]:
        return {lane.value: count for lane, count in self._sent_bytes.items()}

    def drops(self) -> dict[str, int]:
        """What was dropped, by where: consensus and transaction frames at a full send queue
        or inbox lane, gossip publications, commands past the libp2p thread's queue."""
        return {
            "consensus_sent": self.dropped_sends[Lane.CONSENSUS],
            "consensus_received": self.inbox.dropped_consensus,
            "txs_sent": self.dropped_sends[Lane.TXS],
            "txs_received": self.inbox.dropped_txs,
            "gossip": self.dropped_gossip,
            "commands": self.dropped_commands,
        }

    def backlog(self) -> int:
        """Sends not yet on their way: commands waiting for the libp2p thread, and the
        transaction frames queued for the most backed-up peer. A sender that pauses while
        this is high is never dropped. (Read from the asyncio thread: `list` copies the dict
        in one step under the interpreter lock, and a channel's statistics are plain
        counters.)"""
        commands = self._commands
        waiting = 0 if commands is None else commands.statistics().current_buffer_used
        depths = [
            outbox.statistics().current_buffer_used
            for (_, lane), outbox in list(self._outboxes.items())
            if lane is Lane.TXS
        ]
        return waiting + max(depths, default=0)

    def _release_credit(self, released: Released) -> None:
        """The node took these transaction frames in: their peers may send more."""
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._inbound.return_credit, released)

    # -- the Network protocol (asyncio side) ----------------------------------------------------
    def peers(self) -> list[str]:
        return sorted(self._connected)

    @property
    def refused(self) -> int:
        return sum(self.refused_by.values())

    def refused_peers(self) -> dict[str, int]:
        return dict(self.refused_by)

    def refusal(self, remote: str) -> tuple[str, str] | None:
        return refusal(self.allowed, self.banned_until, self.ban_reasons, remote)

    def admits(self, remote: str) -> bool:
        return self.refusal(remote) is None

    def ban(self, remote: str, reason: str) -> None:
        """Refuse `remote` for BAN_S, saying `reason` to whoever looks at the refusals."""
        self.banned_until[remote] = time.monotonic() + BAN_S
        self.ban_reasons[remote] = reason

    def allow(self, peer_ids: set[str], direct: set[str] | None = None) -> None:
        self.allowed = frozenset(peer_ids)
        self.direct = None if direct is None else frozenset(direct)
        if self._token is not None:
            self._to_trio(self._enforce_allowed)

    async def broadcast(self, topic: Topic, payload: bytes) -> None:
        frame = encode_frame(topic, payload)
        lane = Lane.of(topic)
        self._to_trio(lambda: self._queue_frame(None, lane, frame))

    async def send(self, peer: str, topic: Topic, payload: bytes) -> None:
        frame = encode_frame(topic, payload)
        lane = Lane.of(topic)
        self._to_trio(lambda: self._queue_frame(peer, lane, frame))

    async def publish(self, topic: Topic, payload: bytes) -> None:
        name = TOPIC_NAMES[topic]
        self._to_trio(lambda: self._nursery.start_soon(self._publish, name, payload))

    def serve_gossip(self, handler: GossipHandler, topics: frozenset[Topic]) -> None:
        """Subscribe to `topics`; each message received on them goes to `handler` first."""
        self._gossip = handler
        self._gossip_topics = topics & GOSSIP_TOPICS
        if self._token is not None:
            self._to_trio(lambda: self._nursery.start_soon(self._subscribe_all))

    def serve_range(self, provider: RangeProvider) -> None:
        self._ranges = provider

    def serve_blobs(self, provider: BlobProvider) -> None:
        self._blobs = provider

    async def request_range(self, peer: str, first: int, last: int) -> AsyncIterator[bytes]:
        request = struct.pack(">QQ", first, last)
        async for item in self._request(peer, SYNC, request):
            yield item

    async def fetch_blob(self, peer: str, request: bytes) -> AsyncIterator[bytes]:
        async for piece in self._request(peer, BLOBS, request):
            yield piece

    async def _request(
        self, peer: str, protocol: TProtocol, request: bytes
    ) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[list[bytes] | BaseException | None] = asyncio.Queue(64)
        self._to_trio(
            lambda: self._nursery.start_soon(
                client, self._host, self._loop, self.frame_bytes_max, peer, protocol, request, queue
            )
        )
        while True:
            batch = await queue.get()
            if batch is None:
                return
            if isinstance(batch, BaseException):
                raise batch
            for item in batch:
                yield item

    # -- trio side ------------------------------------------------------------------------------
    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        send, receive = trio.open_memory_channel[Callable[[], Any]](OUTBOX_MAX)
        self._commands = send
        self._host = gated_host(self, self.node_key.seed)
        self._host.set_stream_handler(MESSAGES, self._inbound.on_messages)
        self._host.set_stream_handler(TXS, self._inbound.on_txs)
        self._host.set_stream_handler(SYNC, self._on_sync)
        self._host.set_stream_handler(BLOBS, self._on_blob)
        router = gossipsub()
        self._pubsub = gossip_pubsub(
            self._host, router, self.frame_bytes_max, self._validate_gossip
        )
        # pubsub outlives the host: stopping it first would leave the host's stream handlers
        # handing messages to a closed service
        async with (
            background_trio_service(self._pubsub),
            background_trio_service(router),
            self._host.run([multiaddr.Multiaddr(self.listen)]),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            self.listen_addrs = [str(a) for a in self._host.get_addrs()]
            nursery.start_soon(self._run_commands, receive)
            nursery.start_soon(self._dial_loop)
            if self._gossip is not None:
                nursery.start_soon(self._subscribe_all)
            self._call_async(self._mark_started)
            await self._stop.wait()
            nursery.cancel_scope.cancel()
        self._pubsub.seen_messages.stop()  # its sweeping thread would outlive the host

    def _topics_of_outsiders(self) -> frozenset[Topic]:
        assert self._pubsub is not None
        direct = self.direct or frozenset()
        return frozenset(
            topic
            for topic, name in TOPIC_NAMES.items()
            if any(str(p) not in direct for p in self._pubsub.peer_topics.get(name, ()))
        )

    def _refresh_connected(self) -> None:
        self._connected = frozenset(str(p) for p in self._host.get_connected_peers()) & self.allowed

    async def _dial_loop(self) -> None:
        while True:
            async with trio.open_nursery() as dials:  # side by side: one dead peer's 5 s
                for address in self.dial:  # timeout does not hold up the others
                    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
                    remote = str(info.peer_id)
                    if remote in self.allowed and remote not in self._connected:
                        dials.start_soon(self._dial, info)
            await self._enforce_allowed_async()
            self._refresh_connected()
            # message streams open ahead only to the peers that take part in consensus; an
            # observer (perhaps another libp2p stack, without our message protocols) gets
            # blocks and transactions by GossipSub and block sync
            for remote in self._connected if self.direct is None else self._connected & self.direct:
                self._ensure_outbox(remote, Lane.CONSENSUS)
            self._outsider_topics = self._topics_of_outsiders()
            await trio.sleep(DIAL_INTERVAL_S)

    async def _dial(self, info: Any) -> None:
        # py-libp2p refuses for 60 s to redial a peer whose dial failed; a registered
        # validator back from a network cut must be reached at once
        with contextlib.suppress(Exception):
            self._host.get_network().unblock_peer(info.peer_id)
        with contextlib.suppress(Exception), trio.move_on_after(5):
            await self._host.connect(info)

    def _enforce_allowed(self) -> None:
        self._nursery.start_soon(self._enforce_allowed_async)

    async def _enforce_allowed_async(self) -> None:
        for remote in list(self._host.get_connected_peers()):
            if str(remote) not in self.allowed:
                log.warning("disconnecting %s: no longer registered", remote)
                await self._disconnect(str(remote), "no longer registered")
        self._refresh_connected()

    async def _disconnect(self, remote: str, reason: str) -> None:
        self.disconnected_for[remote] = reason
        for lane in Lane:
            outbox = self._outboxes.pop((remote, lane), None)
            if outbox is not None:
                outbox.close()
        with contextlib.suppress(Exception):
            await self._host.disconnect(ID.from_base58(remote))
        self._refresh_connected()
        if self.on_peer_error is not None:
            self._call_async(self.on_peer_error, remote, reason)

    def _queue_frame(self, remote: str | None, lane: Lane, frame: bytes) -> None:
        targets: frozenset[str]
        if remote is not None:
            targets = frozenset({remote}) & self._connected
        elif self.direct is None:
            targets = self._connected
        else:
            targets = self._connected & self.direct
        for target in targets:
            outbox = self._ensure_outbox(target, lane)
            try:
                outbox.send_nowait(frame)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.dropped_sends[lane] += 1
            else:
                self._sent_bytes[lane] += len(frame)

    def _ensure_outbox(self, remote: str, lane: Lane) -> trio.MemorySendChannel[bytes]:
        outbox = self._outboxes.get((remote, lane))
        if outbox is None:
            outbox, receive = trio.open_memory_channel[bytes](OUTBOX_MAX)
            self._outboxes[(remote, lane)] = outbox
            self._nursery.start_soon(
                write_frames,
                self._host,
                self._outboxes,
                self.dropped_sends,
                remote,
                lane,
                outbox,
                receive,
            )
        return outbox

    # -- gossip ---------------------------------------------------------------------------------
    async def _subscribe_all(self) -> None:
        assert self._pubsub is not None
        for topic in self._gossip_topics:
            subscription = await self._pubsub.subscribe(TOPIC_NAMES[topic])
            self._nursery.start_soon(drain, subscription)

    async def _publish(self, name: str, payload: bytes) -> None:
        assert self._pubsub is not None
        if not self._pubsub.peer_topics.get(name):
            return  # no linked peer takes this topic: building the RPC would be wasted
        key = message_id(TOPICS_BY_NAME[name], payload)
        if key in self._in_flight or self._pubsub.seen_messages.has(key):
            return  # sent already
        self._in_flight.add(key)
        try:
            await publish_unsigned(self._pubsub, name, payload)
        except Exception as exc:  # reported, never fatal: re-broadcast and sync recover it
            self.dropped_gossip += 1
            log.debug("gossip publish on %s failed: %r", name, exc)
        finally:
            self._in_flight.discard(key)

    async def _validate_gossip(self, topic: Topic, forwarder: ID, message: Any) -> bool:
        """GossipSub's topic validator: ask the node, over on the asyncio side."""
        remote = str(forwarder)
        if remote == self.local_id:
            return True  # our own publication, checked before it was published
        handler = self._gossip
        if handler is None or topic not in self._gossip_topics or self._loop is None:
            return False
        violation = unsigned_violation(message)
        if violation is not None:  # not StrictNoSign: refused unread, as other stacks do
            log.debug("gossip message from %s refused: it %s", remote, violation)
            self._strike(remote)
            return False
        payload = bytes(message.data)
        key = message_id(topic, payload)
        if key in self._checked:
            return False  # another copy is being checked or just was: a duplicate
        self._checked[key] = None
        if len(self._checked) > CHECKED_MAX:
            self._checked.popitem(last=False)
        verdict = await ask_node(
            self._call_async, self._gossip_tasks, handler, remote, topic, payload
        )
        if verdict is Verdict.REJECT:
            self._checked.pop(key, None)  # a genuine copy under the same id may follow
            self._strike(remote)
        return verdict is Verdict.ACCEPT

    def _strike(self, remote: str) -> None:
        """`remote` forwarded an invalid gossip message; GOSSIP_STRIKES_MAX of them ban it."""
        self._strikes[remote] = self._strikes.get(remote, 0) + 1
        if self._strikes[remote] >= GOSSIP_STRIKES_MAX:
            self._strikes.pop(remote)
            self.ban(remote, "it forwarded invalid gossip messages")
            log.warning("dropping peer %s: it forwarded invalid gossip messages", remote)
            self._nursery.start_soon(self._disconnect, remote, "forwarded invalid gossip messages")

    # -- request streams ------------------------------------------------------------------------
    async def _on_sync(self, stream: Any) -> None:
        await serve_sync(self._loop, stream, self._ranges)

    async def _on_blob(self, stream: Any) -> None:
        await serve(self._loop, stream, self._blobs)
