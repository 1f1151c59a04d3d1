"""Small signed UDP heartbeats between validators (asyncio-dgram): who is at which height and
round, and where it listens. A node that hears a peer ahead of it starts block sync.

One unconnected socket sends with `send(data, addr)` (connected sockets fail under uvloop).
Sending is paced (1 Hz by default); receiving is bounded: oversize datagrams, datagrams from a
source over its rate, and anything that does not verify as a registered node's heartbeat are
counted by cause and dropped, never raised. A heartbeat its sender signed for another chain
is also said in the log (once a minute per sender): a node of another network, or one started
with another genesis, is sending here, and an operator should hear of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import typing
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Final

import asyncio_dgram

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.crypto import PrivateKey, Purpose, peer_id, verify
from carechain.consensus.errors import CarechainError
from carechain.consensus.types import ChainId, PublicKey
from carechain.p2p.network import RateLimit

DATAGRAM_BYTES_MAX: Final = 2048
WRONG_CHAIN_WARNING_S: Final = 60.0  # how often one sender's other-chain heartbeats are said
log = logging.getLogger("carechain.heartbeat")


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat(Record):
    chain_id: ChainId
    node_key: PublicKey
    height: int
    round: Annotated[int, IntRange(0, 2**31)]
    time_ms: int
    listen: Annotated[tuple[Annotated[str, Size(1, 128)], ...], Size(0, 4)]
    signature: Annotated[bytes, Size(0, 64)] = b""

    def payload_hash(self) -> bytes:
        return dataclasses.replace(self, signature=b"").hash()

    def signed_by(self, key: PrivateKey) -> Heartbeat:
        signature = key.sign(Purpose.HEARTBEAT, self.chain_id, self.payload_hash())
        return dataclasses.replace(self, signature=signature)

    def signature_valid(self) -> bool:
        return verify(
            self.node_key, Purpose.HEARTBEAT, self.chain_id, self.payload_hash(), self.signature
        )


@dataclasses.dataclass
class PeerView:
    height: int
    round: int
    seen_s: float
    listen: tuple[str, ...]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class HeartbeatService:
    def __init__(
        self,
        node_key: PrivateKey,
        chain_id: str,
        listen: str,
        peers: list[str],
        *,
        status: Callable[[], tuple[int, int, tuple[str, ...]]],
        registered: Callable[[], set[str]],
        on_ahead: Callable[[str, int], None],
        interval_ms: int = 1000,
        per_source_per_second: float = 20,
    ) -> None:
        self.node_key = node_key
        self.node_id = peer_id(node_key.public_key)
        self.chain_id = chain_id
        self.listen = listen
        self.peers = [_address(p) for p in peers]
        self.status = status
        self.registered = registered
        self.on_ahead = on_ahead
        self.interval_s = interval_ms / 1000
        self.rate = RateLimit(per_source_per_second)
        self.views: dict[str, PeerView] = {}
        # dropped datagrams, by cause: "oversize", "rate", "unreadable", "wrong_chain",
        # "unregistered", "bad_signature"
        self.dropped_by: Counter[str] = Counter()
        self._wrong_chain_said: dict[str, float] = {}
        self.send_errors = 0
        self.bound: tuple[str, int] | None = None

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by.values())

    def _heartbeat(self) -> bytes:
        height, round, listen = self.status()
        beat = Heartbeat(
            self.chain_id, self.node_key.public_key, height, round, int(time.time() * 1000), listen
        )
        return beat.signed_by(self.node_key).encode()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        socket = await asyncio_dgram.bind(_address(self.listen))
        self.bound = socket.sockname
        if ready is not None:
            ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._send_loop(socket))
                tasks.create_task(self._receive_loop(socket))
        finally:
            socket.close()

    async def _send_loop(self, socket: asyncio_dgram.aio.DatagramServer) -> None:
        while True:
            data = self._heartbeat()
            for address in self.peers:
                try:
                    await socket.send(data, address)
                except OSError:  # this send's failure, or an earlier one reported now
                    self.send_errors += 1
            await asyncio.sleep(self.interval_s)

    async def _receive_loop(self, socket: asyncio_dgram.aio.DatagramServer) -> None:
        while True:
            try:
                data, source = await socket.recv()
            except OSError:
                # an earlier send's failure (no route to a peer, a partitioned network),
                # which the socket reports late, on the next receive: counted, never fatal
                self.send_errors += 1
                continue
            host, port = typing.cast(tuple[str, int], source)[:2]
            self.receive(data, f"{host}:{port}")

    def receive(self, data: bytes, source: str) -> None:
        """Handle one datagram; anything wrong is counted by cause and dropped."""
        if len(data) > DATAGRAM_BYTES_MAX:
            self.dropped_by["oversize"] += 1
            return
        if not self.rate.allow(source):
            self.dropped_by["rate"] += 1
            return
        try:
            beat = Heartbeat.decode(data, max_bytes=DATAGRAM_BYTES_MAX)
        except CarechainError:
            self.dropped_by["unreadable"] += 1
            return
        sender = peer_id(beat.node_key)
        if beat.chain_id != self.chain_id:
            self.dropped_by["wrong_chain"] += 1
            self._say_wrong_chain(beat, sender, source)
            return
        if sender not in self.registered():
            self.dropped_by["unregistered"] += 1
            return
        if not beat.signature_valid():
            self.dropped_by["bad_signature"] += 1
            return
        self.views[sender] = PeerView(beat.height, beat.round, time.monotonic(), beat.listen)
        own_height = self.status()[0]
        if beat.height > own_height:
            self.on_ahead(sender, beat.height)

    def _say_wrong_chain(self, beat: Heartbeat, sender: str, source: str) -> None:
        """Warn of a heartbeat its sender signed for another chain (a forged one is only
        counted), at most once a minute per sender."""
        now = time.monotonic()
        if now - self._wrong_chain_said.get(sender, -WRONG_CHAIN_WARNING_S) < WRONG_CHAIN_WARNING_S:
            return
        if not beat.signature_valid():
            return
        if len(self._wrong_chain_said) >= 1024:  # bounded: a flood of keys cannot grow it
            self._wrong_chain_said.clear()
        self._wrong_chain_said[sender] = now
        log.warning(
            "heartbeat from peer %s at %s is for chain %r, not %r: a node of another network, "
            "or one started with another genesis, lists this node among its peers",
            sender, source, beat.chain_id, self.chain_id,
        )  # fmt: skip
