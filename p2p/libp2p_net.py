"""The `Network` over py-libp2p: TCP, Noise only, Yamux, one connection per peer, a
permission gate, persistent message streams, block sync and blob streams.

py-libp2p runs on trio; the daemon on asyncio. Here trio runs in its own thread, and the two
sides talk through bounded queues: asyncio -> trio through a trio memory channel fed with
`TrioToken.run_sync_soon`, trio -> asyncio with `loop.call_soon_threadsafe` into the node's
bounded inbox (a full inbox drops and counts, it never blocks the network thread). Sync and
blob providers live on the asyncio side and are pulled in batches.

Why a thread and not trio guest mode (`bench/adapter_modes.py` measures both in one run; three
runs on 2 cores agreed): the thread crossed asyncio -> trio -> asyncio faster (median 44 vs
60 us) and carried 1.1-1.3x the loopback TCP ping-pong rate, the shape of libp2p's work; guest
mode queued bursts of commands about 1.1x faster and kept the daemon's 1 ms timers closer (p99
lateness 0.1 vs 0.4-0.5 ms, both far inside consensus timeouts of hundreds of ms). Network
throughput and latency decide it, and a thread also keeps a stuck or crashing libp2p host off
the loop that runs consensus timeouts and the API.

What py-libp2p 0.8.1 does by default, and why this module overrides it (DESIGN.md section 6):
plaintext and secio are accepted, so only Noise is offered; dials wait 250 ms unless
`max_connections_per_peer=1`; there is no peer allow-list, so the Noise transport below refuses
any peer outside the registered set right after the handshake, in both directions.

GossipSub, which carries transactions and committed blocks to non-validator nodes, is tuned
(`_gossipsub`): its spam protection (10 messages/s per peer and topic, silently dropped beyond)
and its eclipse protection (a mesh needs 3 distinct IPs, so hosts on one address never form one)
are off, our own per-peer limits and permission gate stand in their place; the per-peer outbound
queue grows from 32 to `OUTBOX_MAX` RPCs; the heartbeat runs every second, not every 120 s, so a
mesh forms at once; the message id is the content hash, so duplicates are dropped by a set
lookup before any validation; envelope signing is off (`strict_signing=False`) because every
payload carries its own signatures (transaction signatures, a block's commit certificate) that
the node's handler checks, and a second Ed25519 check per message per hop would only cost time.
Validation runs in the topic validator: it hands the message to the node on the asyncio side,
which checks and takes it in one step, and only what it accepts is forwarded.

Yamux flow control: py-libp2p by default returns receive credit after every read (one
encrypted WINDOW_UPDATE frame and a socket write per message read); under load a validator
spent about 7% of its time there. `PY_YAMUX_RELEASE_ON_READ=0` (py-libp2p's own knob, set here
unless the environment sets it) returns credit as go-yamux does, in batches of half the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as MESHSUB
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.p2p.network import (
    BAN_S,
    GOSSIP_STRIKES_MAX,
    GOSSIP_TOPICS,
    TX_TOPICS,
    BlobProvider,
    Credit,
    FrameReader,
    GossipHandler,
    Inbound,
    Inbox,
    Lane,
    PeerError,
    RangeProvider,
    RateLimit,
    Released,
    Topic,
    Verdict,
    encode_frame,
    message_id,
    parse_topic,
    released_by,
)

os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")  # read at call time by py-libp2p

MESSAGES: Final = TProtocol("/carechain/messages/1")  # consensus (and, from older nodes, all)
TXS: Final = TProtocol("/carechain/txs/1")  # transactions and partials, under credit
SYNC: Final = TProtocol("/carechain/sync/1")
BLOBS: Final = TProtocol("/carechain/blob/1")
OUTBOX_MAX: Final = 4096
YAMUX_WINDOW_MAX_BYTES: Final = 16 * 1024 * 1024  # py-libp2p's largest Yamux receive window
CHECKED_MAX: Final = 65_536
READ_BYTES: Final = 256 * 1024
DIAL_INTERVAL_S: Final = 1.0
STALL_TIMEOUT_S: Final = 5
END: Final = b""
TOPIC_NAMES: Final = {
    Topic.TX: "/carechain/tx/1",
    Topic.PARTIAL: "/carechain/partial/1",
    Topic.BLOCK: "/carechain/block/1",
}

log = logging.getLogger("carechain.p2p")
logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # its refusals are reported by us


class _LargeRpcQueue(RpcQueue):
    """GossipSub's per-peer outbound queue, which holds 32 RPCs by default and drops beyond."""

    def __init__(self, max_size: int = OUTBOX_MAX, **kwargs: Any) -> None:
        super().__init__(max_size, **kwargs)


# py-libp2p builds each peer's queue with `RpcQueue()` and takes no size: the class it uses is
# replaced here (only this package imports libp2p, so nothing else sees the change).
setattr(pubsub_module, "RpcQueue", _LargeRpcQueue)  # noqa: B010


_TOPICS_BY_NAME: Final = {name: topic for topic, name in TOPIC_NAMES.items()}


def _content_id(message: Any) -> bytes:
    topics = message.topicIDs
    topic = _TOPICS_BY_NAME.get(topics[0]) if len(topics) == 1 else None
    if topic is None:
        return message_id(Topic.TX, bytes(message.data))  # refused by the allowed topics
    return message_id(topic, bytes(message.data))


class _NoValidationCache:
    """In place of py-libp2p's cache of validation results. Duplicates never reach validation
    (the seen cache, keyed by content id, drops them first), and caching a failure under a
    block's id would let one forged copy shadow the genuine block that follows it."""

    def get(self, message_id: bytes) -> None:
        return None

    def put(self, message_id: bytes, result: Any) -> None:
        pass

    def clear_expired(self) -> None:
        pass


def _gossipsub() -> GossipSub:
    return GossipSub(
        protocols=[MESHSUB],
        degree=6,
        degree_low=4,
        degree_high=12,
        time_to_live=30,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=1,
        spam_protection_enabled=False,
        eclipse_protection_enabled=False,
        max_pending_messages_per_peer=OUTBOX_MAX,
    )


class GatedNoise(NoiseTransport):
    """Noise that refuses, right after the handshake, any peer outside the allowed set."""

    def __init__(self, network: Libp2pNetwork, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    async def _gate(self, secured: Any) -> Any:
        remote = str(secured.get_remote_peer())
        if not self.network.admits(remote):
            self.network.refused += 1
            log.warning("refused unregistered peer %s", remote)
            await secured.close()
            raise PeerError(f"peer {remote} is not registered on this chain")
        return secured

    async def secure_inbound(self, conn: Any) -> Any:
        bound_stalls(conn)
        return await self._gate(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: Any, remote: Any) -> Any:
        bound_stalls(conn)
        return await self._gate(await super().secure_outbound(conn, remote))


def bound_stalls(conn: Any) -> None:
    """Let the kernel close a TCP connection whose data goes unacknowledged for
    STALL_TIMEOUT_S, or that stays silent through the keepalive probes. Without this a
    connection across a silent network cut (a pulled cable, a blackhole route) lives on and,
    after the cut heals, waits out TCP's exponential retransmission backoff (seen: 13 s after
    a 14 s cut) before it carries anything; closed, it is redialled within a second."""
    sock = getattr(getattr(getattr(conn, "stream", None), "stream", None), "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):  # options missing off Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, STALL_TIMEOUT_S * 1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


class Libp2pNetwork:
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
        self.node_key = node_key
        self.local_id = peer_id(node_key.public_key)
        self.listen = listen
        self.dial = list(dial or [])
        self.allowed: frozenset[str] = frozenset(allowed or ())
        self.direct: frozenset[str] | None = None
        self.banned_until: dict[str, float] = {}
        self.frame_bytes_max = frame_bytes_max
        self.rate = RateLimit(messages_per_second_max)  # the message stream (consensus)
        self.tx_rate = RateLimit(messages_per_second_max)  # the transaction stream
        self.on_peer_error = on_peer_error
        self.inbox = Inbox()
        self.inbox.on_release = self._release_credit
        # trio side: transaction frames handed to the node and not yet released, per peer
        self._tx_credit = Credit(self.inbox.tx_credit.frames_max, self.inbox.tx_credit.bytes_max)
        self._tx_streams: dict[str, Any] = {}  # each peer's one transaction stream
        self.listen_addrs: list[str] = []
        self.dropped_sends = {Lane.CONSENSUS: 0, Lane.TXS: 0}  # full send queues
        self.dropped_gossip = 0  # gossip publications that failed
        self.dropped_commands = 0  # commands to the libp2p thread past its queue
        self.refused = 0
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._commands: trio.MemorySendChannel[Callable[[], Any]] | None = None
        self._stop: trio.Event | None = None
        self._host: Any = None
        self._outboxes: dict[tuple[str, Lane], trio.MemorySendChannel[bytes]] = {}
        self._credit_returned: dict[str, trio.Event] = {}
        self._started: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None

    # -- lifecycle (asyncio side) ---------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.create_future()
        self._thread = threading.Thread(target=self._run_trio, name="carechain-libp2p", daemon=True)
        self._thread.start()
        await self._started

    async def stop(self) -> None:
        if self._token is not None and self._stop is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        if self.failure is not None:
            raise PeerError(f"the libp2p host failed: {self.failure!r}")

    def _run_trio(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:  # surfaced to asyncio, never lost in the thread
            self.failure = exc
            log.exception("libp2p host stopped with an error")
            if self._loop is not None and self._started is not None:
                self._loop.call_soon_threadsafe(self._fail_start, exc)

    def _fail_start(self, exc: BaseException) -> None:
        assert self._started is not None
        if not self._started.done():
            self._started.set_exception(PeerError(f"libp2p host could not start: {exc!r}"))

    def _call_async(self, function: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the asyncio loop is closing
            self._loop.call_soon_threadsafe(function, *args)

    def _to_trio(self, command: Callable[[], Any]) -> None:
        if self._token is None or self._commands is None:
            raise PeerError("the network is not running")
        commands = self._commands

        def enqueue() -> None:
            try:
                commands.send_nowait(command)
            except trio.WouldBlock:
                self.dropped_commands += 1

        self._token.run_sync_soon(enqueue)

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
                self._token.run_sync_soon(self._return_credit, released)

    def _return_credit(self, released: Released) -> None:
        self._tx_credit.give_back(released)
        for peer in released:
            event = self._credit_returned.pop(peer, None)
            if event is not None:
                event.set()

    # -- the Network protocol (asyncio side) ----------------------------------------------------
    def peers(self) -> list[str]:
        return sorted(self._connected)

    def admits(self, remote: str) -> bool:
        return remote in self.allowed and self.banned_until.get(remote, 0.0) <= time.monotonic()

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
            lambda: self._nursery.start_soon(self._client, peer, protocol, request, queue)
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
        key_pair = create_new_key_pair(self.node_key.seed)
        security = {
            NOISE_PROTOCOL: GatedNoise(self, key_pair, noise_privkey=new_x25519_pair().private_key)
        }
        self._host = new_host(
            key_pair=key_pair,
            sec_opt=security,
            muxer_preference="YAMUX",
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        self._host.set_stream_handler(MESSAGES, self._on_messages)
        self._host.set_stream_handler(TXS, self._on_txs)
        self._host.set_stream_handler(SYNC, self._on_sync)
        self._host.set_stream_handler(BLOBS, self._on_blob)
        router = _gossipsub()
        self._pubsub = Pubsub(
            self._host,
            router,
            msg_id_constructor=_content_id,
            strict_signing=False,
            max_inbound_rpc_size=self.frame_bytes_max + 64 * 1024,
            allowed_topics=set(TOPIC_NAMES.values()),
        )
        self._pubsub.validation_cache = _NoValidationCache()  # type: ignore[assignment]
        for topic, name in TOPIC_NAMES.items():
            validator = functools.partial(self._validate_gossip, topic)
            self._pubsub.set_topic_validator(name, validator, True)
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

    def _mark_started(self) -> None:
        assert self._started is not None
        if not self._started.done():
            self._started.set_result(None)

    async def _run_commands(self, receive: trio.MemoryReceiveChannel[Callable[[], Any]]) -> None:
        async for command in receive:
            command()

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
            for remote in self._connected:
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

    def _ensure_outbox(self, remote: str, lane: Lane) -> trio.MemorySendChannel[bytes]:
        outbox = self._outboxes.get((remote, lane))
        if outbox is None:
            outbox, receive = trio.open_memory_channel[bytes](OUTBOX_MAX)
            self._outboxes[(remote, lane)] = outbox
            self._nursery.start_soon(self._writer, remote, lane, outbox, receive)
        return outbox

    async def _writer(
        self,
        remote: str,
        lane: Lane,
        outbox: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        """One persistent stream per peer and lane, so that a transaction stream held back by
        the peer's credit never holds up a vote; frames are batched into each write. (A peer
        that does not speak the transaction protocol gets its transactions on the message
        stream, as before it.)"""
        protocols = [MESSAGES] if lane is Lane.CONSENSUS else [TXS, MESSAGES]
        stream: Any = None
        batch: list[bytes] = []
        try:
            stream = await self._host.new_stream(ID.from_base58(remote), protocols)
            async for frame in receive:
                batch = [frame]
                while len(batch) < 256:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await _write_within_window(stream, b"".join(batch))
                batch = []
        except Exception as exc:  # the peer went away; the dial loop reconnects
            log.debug("stream to %s ended: %r", remote, exc)
        finally:
            if self._outboxes.get((remote, lane)) is outbox:
                del self._outboxes[(remote, lane)]  # the next frame opens a new stream
            outbox.close()
            lost = len(batch)  # what this stream was writing, and what waited behind it
            with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                while True:
                    receive.receive_nowait()
                    lost += 1
            self.dropped_sends[lane] += lost
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.reset()

    async def _on_messages(self, stream: Any) -> None:
        await self._read_frames(stream, Lane.CONSENSUS)

    async def _on_txs(self, stream: Any) -> None:
        await self._read_frames(stream, Lane.TXS)

    async def _read_frames(self, stream: Any, lane: Lane) -> None:
        """Hand a peer's frames to the node, one hop to the asyncio side per read. On the
        transaction stream, no more than the peer's credit: past it, this waits (and so
        reads nothing more from the peer: its sends back up) until the node releases some."""
        remote = str(stream.muxed_conn.peer_id)
        reader = FrameReader(self.frame_bytes_max)
        if lane is Lane.TXS:
            await self._claim_tx_stream(remote, stream)
        try:
            while data := await stream.read(READ_BYTES):
                arrived = self._parse(remote, lane, reader, data)
                if lane is Lane.TXS:
                    await self._deliver_under_credit(remote, arrived, stream)
                elif arrived:  # transactions here come from a peer without the txs stream
                    for message in arrived:
                        if message.topic in TX_TOPICS:
                            self._tx_credit.take(remote, len(message.payload))
                    self._call_async(self._deliver, arrived)
        except PeerError as exc:
            log.warning("dropping peer %s: %s", remote, exc)
            await self._disconnect(remote, str(exc))
        except Exception as exc:
            log.debug("message stream from %s ended: %r", remote, exc)
        finally:
            if self._tx_streams.get(remote) is stream:
                del self._tx_streams[remote]

    async def _claim_tx_stream(self, remote: str, stream: Any) -> None:
        """One transaction stream per peer: a newer one replaces one its sender left."""
        previous = self._tx_streams.get(remote)
        self._tx_streams[remote] = stream
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous.reset()

    def _parse(self, remote: str, lane: Lane, reader: FrameReader, data: bytes) -> list[Inbound]:
        rate = self.rate if lane is Lane.CONSENSUS else self.tx_rate
        arrived = []
        for topic, payload in reader.feed(data):
            if not rate.allow(remote):
                raise PeerError(f"more than {rate.rate:.0f} messages per second")
            message = Inbound(remote, parse_topic(topic), payload)
            if lane is Lane.TXS and message.topic not in TX_TOPICS:
                raise PeerError(f"a {message.topic.name} frame on the transaction stream")
            arrived.append(message)
        return arrived

    async def _deliver_under_credit(self, remote: str, arrived: list[Inbound], stream: Any) -> None:
        """Hand `arrived` to the node as the peer's credit allows, waiting for the node to
        release some when it has none; a peer that keeps sending past its Yamux window
        meanwhile (py-libp2p buffers it anyway) is dropped."""
        while arrived:
            batch: list[Inbound] = []
            while arrived and self._tx_credit.fits(remote, len(arrived[0].payload)):
                message = arrived.pop(0)
                self._tx_credit.take(remote, len(message.payload))
                batch.append(message)
            if batch:
                self._call_async(self._deliver, batch)
                continue
            event = self._credit_returned.setdefault(remote, trio.Event())
            with trio.move_on_after(1.0):
                await event.wait()
            buffered, window = _buffered(stream)
            if buffered > 2 * window:
                raise PeerError(f"it sent {buffered} bytes past a flow-control window of {window}")

    def _deliver(self, messages: list[Inbound]) -> None:
        refused: list[Inbound] = []
        for message in messages:
            if not self.inbox.put(message) and message.topic in TX_TOPICS:
                refused.append(message)
        if refused:  # counted as taken on the trio side: give the credit back
            self._release_credit(released_by(refused))

    # -- gossip ---------------------------------------------------------------------------------
    async def _subscribe_all(self) -> None:
        assert self._pubsub is not None
        for topic in self._gossip_topics:
            subscription = await self._pubsub.subscribe(TOPIC_NAMES[topic])
            self._nursery.start_soon(_drain, subscription)

    async def _publish(self, name: str, payload: bytes) -> None:
        assert self._pubsub is not None
        if not self._pubsub.peer_topics.get(name):
            return  # no linked peer takes this topic: building the RPC would be wasted
        key = message_id(_TOPICS_BY_NAME[name], payload)
        if key in self._in_flight or self._pubsub.seen_messages.has(key):
            return  # sent already
        self._in_flight.add(key)
        try:
            await self._pubsub.publish(name, payload)
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
        payload = bytes(message.data)
        key = message_id(topic, payload)
        if key in self._checked:
            return False  # another copy is being checked or just was: a duplicate
        self._checked[key] = None
        if len(self._checked) > CHECKED_MAX:
            self._checked.popitem(last=False)
        verdict = await self._ask_node(handler, remote, topic, payload)
        if verdict is Verdict.REJECT:
            self._checked.pop(key, None)  # a genuine copy under the same id may follow
        if verdict is Verdict.REJECT:
            self._strikes[remote] = self._strikes.get(remote, 0) + 1
            if self._strikes[remote] >= GOSSIP_STRIKES_MAX:
                self._strikes.pop(remote)
                self.banned_until[remote] = time.monotonic() + BAN_S
                log.warning("dropping peer %s: it forwarded invalid gossip messages", remote)
                self._nursery.start_soon(
                    self._disconnect, remote, "forwarded invalid gossip messages"
                )
        return verdict is Verdict.ACCEPT

    async def _ask_node(
        self, handler: GossipHandler, remote: str, topic: Topic, payload: bytes
    ) -> Verdict:
        """Run `handler` on the asyncio loop and wait for its verdict without a thread."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        verdicts: list[Verdict] = []

        def settle(verdict: Verdict) -> None:
            verdicts.append(verdict)
            done.set()

        def finished(task: asyncio.Future[Verdict]) -> None:
            self._gossip_tasks.discard(task)
            verdict = Verdict.IGNORE  # a failure of ours is not the peer's fault
            if not task.cancelled() and task.exception() is None:
                verdict = task.result()
            elif not task.cancelled():
                log.error("gossip handler failed", exc_info=task.exception())
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(settle, verdict)

        def start() -> None:
            task = asyncio.ensure_future(handler(remote, topic, payload))
            self._gossip_tasks.add(task)
            task.add_done_callback(finished)

        self._call_async(start)
        await done.wait()
        return verdicts[0]

    # -- request streams ------------------------------------------------------------------------
    async def _client(
        self, remote: str, protocol: TProtocol, request: bytes, queue: asyncio.Queue[Any]
    ) -> None:
        async def put(item: Any) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), self._loop)  # type: ignore[arg-type]
            await trio.to_thread.run_sync(future.result)

        try:
            with trio.fail_after(60):
                stream = await self._host.new_stream(ID.from_base58(remote), [protocol])
                await stream.write(encode_frame(0, request))
            reader = FrameReader(self.frame_bytes_max)
            while True:
                with trio.fail_after(60):
                    data = await stream.read(READ_BYTES)
                if not data:
                    raise PeerError(f"the stream from {remote} broke before its end")
                frames = reader.feed(data)
                items = [payload for _, payload in frames]
                if frames and frames[-1][0] == 1:  # an error frame ends the stream
                    raise PeerError(f"{remote} refused: {items[-1].decode(errors='replace')}")
                if items and items[-1] == END:
                    await put(items[:-1])
                    await put(None)
                    return
                if items:
                    await put(items)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, PeerError)
                else PeerError(f"request to {remote} failed: {exc!r}")
            )
            await put(error)

    async def _serve(
        self, stream: Any, provider: Callable[[str, bytes], AsyncIterator[bytes]] | None
    ) -> None:
        remote = str(stream.muxed_conn.peer_id)
        reader = FrameReader(64 * 1024)
        frames: list[tuple[int, bytes]] = []
        try:
            with trio.fail_after(30):
                while not frames:
                    data = await stream.read(READ_BYTES)
                    if not data:
                        return
                    frames = reader.feed(data)
            if provider is None:
                raise PeerError("this node does not serve that")
            items = provider(remote, frames[0][1])
            while True:
                future = asyncio.run_coroutine_threadsafe(_pull(items, 64), self._loop)  # type: ignore[arg-type]
                batch, done = await trio.to_thread.run_sync(future.result)
                if batch:
                    await stream.write(b"".join(encode_frame(0, item) for item in batch))
                if done:
                    break
            await stream.write(encode_frame(0, END))
        except Exception as exc:
            with contextlib.suppress(Exception):
                await stream.write(encode_frame(1, str(exc).encode()[:1000]))
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    async def _on_sync(self, stream: Any) -> None:
        provider = self._ranges

        def ranges(remote: str, request: bytes) -> AsyncIterator[bytes]:
            if provider is None or len(request) != 16:
                raise PeerError("a sync request is two 8-byte heights")
            first, last = struct.unpack(">QQ", request)
            return provider(remote, first, last)

        await self._serve(stream, ranges)

    async def _on_blob(self, stream: Any) -> None:
        await self._serve(stream, self._blobs)


def _buffered(stream: Any) -> tuple[int, int]:
    """Bytes py-libp2p's Yamux holds for `stream` unread, and the receive window it grants
    the peer (it grows from 256 KiB to 16 MiB as the stream is read): a peer that honours
    the window never has more than that unread. (0 bytes if the stream is not Yamux.)"""
    muxed: Any = getattr(stream, "muxed_stream", None)
    window = getattr(muxed, "target_recv_window", YAMUX_WINDOW_MAX_BYTES)
    buffers = getattr(getattr(muxed, "conn", None), "stream_buffers", None)
    if not isinstance(buffers, dict) or not isinstance(window, int):
        return 0, YAMUX_WINDOW_MAX_BYTES
    return len(buffers.get(getattr(muxed, "stream_id", None), b"")), window


async def _write_within_window(stream: Any, data: bytes) -> None:
    """Write `data` no faster than the peer's Yamux window opens. py-libp2p's own write gives
    up, and the stream with it, after 5 s of a closed window; a node that holds back a peer's
    transactions (their credit ran out while its mempool is full) keeps the window closed
    for as long as that lasts, and the sender must wait, not drop the stream and what it
    carried."""
    muxed: Any = getattr(stream, "muxed_stream", None)
    if not isinstance(getattr(muxed, "send_window", None), int):
        await stream.write(data)
        return
    sent = 0
    while sent < len(data):
        while muxed.send_window <= 0:
            if muxed.closed or muxed.send_closed:
                raise PeerError("the stream closed while its window was shut")
            await trio.sleep(0.01)
        size = min(len(data) - sent, muxed.send_window)
        await stream.write(data[sent : sent + size])
        sent += size


async def _drain(subscription: Any) -> None:
    """Empty a subscription's queue: the topic validator already handed every message over."""
    while True:
        await subscription.get()


async def _pull(items: AsyncIterator[bytes], count: int) -> tuple[list[bytes], bool]:
    """Up to `count` items (on the asyncio side), and whether the iterator is finished."""
    batch: list[bytes] = []
    try:
        while len(batch) < count:
            batch.append(await anext(items))
    except StopAsyncIteration:
        return batch, True
    return batch, False
