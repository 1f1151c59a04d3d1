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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
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
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.p2p.network import (
    INBOX_MAX,
    BlobProvider,
    FrameReader,
    Inbound,
    PeerError,
    RangeProvider,
    RateLimit,
    Topic,
    encode_frame,
    parse_topic,
)

MESSAGES: Final = TProtocol("/carechain/messages/1")
SYNC: Final = TProtocol("/carechain/sync/1")
BLOBS: Final = TProtocol("/carechain/blob/1")
OUTBOX_MAX: Final = 4096
READ_BYTES: Final = 256 * 1024
DIAL_INTERVAL_S: Final = 1.0
END: Final = b""

log = logging.getLogger("carechain.p2p")
logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # its refusals are reported by us


class GatedNoise(NoiseTransport):
    """Noise that refuses, right after the handshake, any peer outside the allowed set."""

    def __init__(self, network: Libp2pNetwork, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.network = network

    async def _gate(self, secured: Any) -> Any:
        remote = str(secured.get_remote_peer())
        if remote not in self.network.allowed:
            self.network.refused += 1
            log.warning("refused unregistered peer %s", remote)
            await secured.close()
            raise PeerError(f"peer {remote} is not registered on this chain")
        return secured

    async def secure_inbound(self, conn: Any) -> Any:
        return await self._gate(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: Any, remote: Any) -> Any:
        return await self._gate(await super().secure_outbound(conn, remote))


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
        self.frame_bytes_max = frame_bytes_max
        self.rate = RateLimit(messages_per_second_max)
        self.on_peer_error = on_peer_error
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue(INBOX_MAX)
        self.listen_addrs: list[str] = []
        self.dropped = 0
        self.refused = 0
        self.disconnected_for: dict[str, str] = {}
        self._ranges: RangeProvider | None = None
        self._blobs: BlobProvider | None = None
        self._connected: frozenset[str] = frozenset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._commands: trio.MemorySendChannel[Callable[[], Any]] | None = None
        self._stop: trio.Event | None = None
        self._host: Any = None
        self._outboxes: dict[str, trio.MemorySendChannel[bytes]] = {}
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
                self.dropped += 1

        self._token.run_sync_soon(enqueue)

    # -- the Network protocol (asyncio side) ----------------------------------------------------
    def peers(self) -> list[str]:
        return sorted(self._connected)

    def allow(self, peer_ids: set[str]) -> None:
        self.allowed = frozenset(peer_ids)
        if self._token is not None:
            self._to_trio(self._enforce_allowed)

    async def broadcast(self, topic: Topic, payload: bytes) -> None:
        frame = encode_frame(topic, payload)
        self._to_trio(lambda: self._queue_frame(None, frame))

    async def send(self, peer: str, topic: Topic, payload: bytes) -> None:
        frame = encode_frame(topic, payload)
        self._to_trio(lambda: self._queue_frame(peer, frame))

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
        self._host.set_stream_handler(SYNC, self._on_sync)
        self._host.set_stream_handler(BLOBS, self._on_blob)
        async with (
            self._host.run([multiaddr.Multiaddr(self.listen)]),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            self.listen_addrs = [str(a) for a in self._host.get_addrs()]
            nursery.start_soon(self._run_commands, receive)
            nursery.start_soon(self._dial_loop)
            self._call_async(self._mark_started)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _mark_started(self) -> None:
        assert self._started is not None
        if not self._started.done():
            self._started.set_result(None)

    async def _run_commands(self, receive: trio.MemoryReceiveChannel[Callable[[], Any]]) -> None:
        async for command in receive:
            command()

    def _refresh_connected(self) -> None:
        self._connected = frozenset(str(p) for p in self._host.get_connected_peers()) & self.allowed

    async def _dial_loop(self) -> None:
        while True:
            for address in self.dial:
                info = info_from_p2p_addr(multiaddr.Multiaddr(address))
                remote = str(info.peer_id)
                if remote in self.allowed and remote not in self._connected:
                    with contextlib.suppress(Exception), trio.move_on_after(5):
                        await self._host.connect(info)
            await self._enforce_allowed_async()
            self._refresh_connected()
            for remote in self._connected:
                self._ensure_outbox(remote)
            await trio.sleep(DIAL_INTERVAL_S)

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
        outbox = self._outboxes.pop(remote, None)
        if outbox is not None:
            outbox.close()
        with contextlib.suppress(Exception):
            await self._host.disconnect(ID.from_base58(remote))
        self._refresh_connected()
        if self.on_peer_error is not None:
            self._call_async(self.on_peer_error, remote, reason)

    def _queue_frame(self, remote: str | None, frame: bytes) -> None:
        targets = self._connected if remote is None else {remote} & self._connected
        for target in targets:
            outbox = self._ensure_outbox(target)
            try:
                outbox.send_nowait(frame)
            except (trio.WouldBlock, trio.ClosedResourceError):
                self.dropped += 1

    def _ensure_outbox(self, remote: str) -> trio.MemorySendChannel[bytes]:
        outbox = self._outboxes.get(remote)
        if outbox is None:
            outbox, receive = trio.open_memory_channel[bytes](OUTBOX_MAX)
            self._outboxes[remote] = outbox
            self._nursery.start_soon(self._writer, remote, receive)
        return outbox

    async def _writer(self, remote: str, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        """One persistent stream per peer; frames are batched into each write."""
        try:
            stream = await self._host.new_stream(ID.from_base58(remote), [MESSAGES])
            async for frame in receive:
                batch = [frame]
                while len(batch) < 256:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await stream.write(b"".join(batch))
        except Exception as exc:  # the peer went away; the dial loop reconnects
            log.debug("stream to %s ended: %r", remote, exc)
        finally:
            self._outboxes.pop(remote, None)  # the next frame for this peer opens a new stream

    async def _on_messages(self, stream: Any) -> None:
        remote = str(stream.muxed_conn.peer_id)
        reader = FrameReader(self.frame_bytes_max)
        try:
            while data := await stream.read(READ_BYTES):
                for topic, payload in reader.feed(data):
                    if not self.rate.allow(remote):
                        raise PeerError(f"more than {self.rate.rate:.0f} messages per second")
                    self._call_async(self._deliver, Inbound(remote, parse_topic(topic), payload))
        except PeerError as exc:
            log.warning("dropping peer %s: %s", remote, exc)
            await self._disconnect(remote, str(exc))
        except Exception as exc:
            log.debug("message stream from %s ended: %r", remote, exc)

    def _deliver(self, message: Inbound) -> None:
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

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


async def _pull(items: AsyncIterator[bytes], count: int) -> tuple[list[bytes], bool]:
    """Up to `count` items (on the asyncio side), and whether the iterator is finished."""
    batch: list[bytes] = []
    try:
        while len(batch) < count:
            batch.append(await anext(items))
    except StopAsyncIteration:
        return batch, True
    return batch, False
