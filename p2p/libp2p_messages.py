"""The libp2p adapter's direct message streams, one per peer and lane (`MESSAGES` for
consensus, `TXS` for transactions and partials), on the trio side: the writer that drains a
peer's outbox into its stream, and the reading of incoming streams under the per-peer rate
limits and, on the transaction stream, the peer's credit: past it, nothing more is read from
that peer (its sends back up to its TCP window) until the node releases some.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from carechain.p2p.libp2p_yamux import READ_BYTES, unread_and_window, write_within_window
from carechain.p2p.network import (
    TX_TOPICS,
    Credit,
    FrameReader,
    Inbound,
    Inbox,
    Lane,
    PeerError,
    RateLimit,
    Released,
    parse_topic,
    released_by,
)

MESSAGES: Final = TProtocol("/carechain/messages/1")  # consensus (and, from older nodes, all)
TXS: Final = TProtocol("/carechain/txs/1")  # transactions and partials, under credit

log = logging.getLogger("carechain.p2p")


async def write_frames(
    host: Any,
    outboxes: dict[tuple[str, Lane], trio.MemorySendChannel[bytes]],
    dropped_sends: dict[Lane, int],
    remote: str,
    lane: Lane,
    outbox: trio.MemorySendChannel[bytes],
    receive: trio.MemoryReceiveChannel[bytes],
) -> None:
    """One persistent stream per peer and lane, so that a transaction stream held back by
    the peer's credit never holds up a vote; frames are batched into each write. (A peer
    that does not speak the transaction protocol gets its transactions on the message
    stream, as before it.) `outboxes` and `dropped_sends` are the network's: the stream's
    outbox leaves the first when it ends, and what it could not write counts in the second."""
    protocols = [MESSAGES] if lane is Lane.CONSENSUS else [TXS, MESSAGES]
    stream: Any = None
    batch: list[bytes] = []
    try:
        stream = await host.new_stream(ID.from_base58(remote), protocols)
        async for frame in receive:
            batch = [frame]
            while len(batch) < 256:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await write_within_window(stream, b"".join(batch))
            batch = []
    except Exception as exc:  # the peer went away; the dial loop reconnects
        log.debug("stream to %s ended: %r", remote, exc)
    finally:
        if outboxes.get((remote, lane)) is outbox:
            del outboxes[(remote, lane)]  # the next frame opens a new stream
        outbox.close()
        lost = len(batch)  # what this stream was writing, and what waited behind it
        with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            while True:
                receive.receive_nowait()
                lost += 1
        dropped_sends[lane] += lost
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.reset()


class InboundStreams:
    """Peers' incoming message streams, read on the trio side and handed to the node's
    `inbox` on the asyncio side (through `call_async`). A peer that breaks the frame size,
    its rate limit or its credit is dropped through `disconnect`; frames the inbox refused give
    their credit back through `release_credit`. `rate`, `tx_rate` and `tx_credit` are the
    network's own, shared."""

    def __init__(
        self,
        inbox: Inbox,
        frame_bytes_max: int,
        rate: RateLimit,
        tx_rate: RateLimit,
        tx_credit: Credit,
        call_async: Callable[..., None],
        disconnect: Callable[[str, str], Awaitable[None]],
        release_credit: Callable[[Released], None],
    ) -> None:
        self.inbox = inbox
        self.frame_bytes_max = frame_bytes_max
        self.rate = rate  # the message stream (consensus)
        self.tx_rate = tx_rate  # the transaction stream
        # transaction frames handed to the node and not yet released, per peer
        self._tx_credit = tx_credit
        self._call_async = call_async
        self._disconnect = disconnect
        self._release_credit = release_credit
        self._tx_streams: dict[str, Any] = {}  # each peer's one transaction stream
        self._credit_returned: dict[str, trio.Event] = {}

    async def on_messages(self, stream: Any) -> None:
        await self._read_frames(stream, Lane.CONSENSUS)

    async def on_txs(self, stream: Any) -> None:
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
            buffered, window = unread_and_window(stream)
            if buffered > 2 * window:
                raise PeerError(f"it sent {buffered} bytes past a flow-control window of {window}")

    def _deliver(self, messages: list[Inbound]) -> None:
        refused: list[Inbound] = []
        for message in messages:
            if not self.inbox.put(message) and message.topic in TX_TOPICS:
                refused.append(message)
        if refused:  # counted as taken on the trio side: give the credit back
            self._release_credit(released_by(refused))

    def return_credit(self, released: Released) -> None:
        """Called on the trio side when the node took these frames in: their peers may send
        more, and a stream waiting for that credit reads on."""
        self._tx_credit.give_back(released)
        for peer in released:
            event = self._credit_returned.pop(peer, None)
            if event is not None:
                event.set()
