"""UDP heartbeats on loopback: peers learn each other's height, a node behind asks for sync,
and forged, garbage, oversize or flooding datagrams are dropped while the service keeps going."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time

import pytest

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.p2p.heartbeat import DATAGRAM_BYTES_MAX, Heartbeat, HeartbeatService

CHAIN = "carechain-test"


def _service(
    key: PrivateKey, height: list[int], registered: set[str], ahead: list[tuple[str, int]]
) -> HeartbeatService:
    return HeartbeatService(
        key,
        CHAIN,
        "127.0.0.1:0",
        [],
        status=lambda: (height[0], 0, ("/ip4/127.0.0.1/tcp/1",)),
        registered=lambda: registered,
        on_ahead=lambda peer, h: ahead.append((peer, h)),
        interval_ms=100,
    )


@pytest.mark.asyncio
async def test_a_node_behind_hears_the_peer_ahead() -> None:
    a_key, b_key = PrivateKey(b"\x41" * 32), PrivateKey(b"\x42" * 32)
    ids = {peer_id(a_key.public_key), peer_id(b_key.public_key)}
    ahead_a: list[tuple[str, int]] = []
    ahead_b: list[tuple[str, int]] = []
    a = _service(a_key, [5], ids, ahead_a)
    b = _service(b_key, [3], ids, ahead_b)
    ready_a, ready_b = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(a.run(ready_a)), asyncio.create_task(b.run(ready_b))]
    try:
        await asyncio.wait_for(asyncio.gather(ready_a.wait(), ready_b.wait()), 5)
        assert a.bound is not None
        assert b.bound is not None
        a.peers, b.peers = [b.bound], [a.bound]
        deadline = time.monotonic() + 5
        # each side hears the other on its own schedule: wait for both, not only b hearing a
        while (not ahead_b or peer_id(b_key.public_key) not in a.views) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        assert ahead_b[0] == (peer_id(a_key.public_key), 5)
        assert ahead_a == [], "a node ahead does not sync from one behind"
        assert a.views[peer_id(b_key.public_key)].height == 3
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_bad_datagrams_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    key, stranger = PrivateKey(b"\x43" * 32), PrivateKey(b"\x44" * 32)
    registered = {peer_id(key.public_key)}
    ahead: list[tuple[str, int]] = []
    service = _service(PrivateKey(b"\x45" * 32), [1], registered, ahead)
    good = Heartbeat(CHAIN, key.public_key, 9, 0, 1, ()).signed_by(key).encode()
    forged = Heartbeat(CHAIN, stranger.public_key, 9, 0, 1, ()).signed_by(stranger).encode()
    tampered = Heartbeat(
        CHAIN,
        key.public_key,
        99,
        0,
        1,
        (),
        Heartbeat(CHAIN, key.public_key, 9, 0, 1, ()).signed_by(key).signature,
    ).encode()
    other = Heartbeat("carechain-other", key.public_key, 9, 0, 1, ())
    other_chain = other.signed_by(key).encode()
    forged_other = dataclasses.replace(  # in a stranger's name, signed by nobody
        other, node_key=stranger.public_key, signature=b"\x00" * 64
    ).encode()
    datagrams = (b"garbage", b"\x00" * (DATAGRAM_BYTES_MAX + 1), forged, tampered, other_chain,
                 other_chain, forged_other)  # fmt: skip
    with caplog.at_level(logging.WARNING, "carechain.heartbeat"):
        for data in datagrams:
            service.receive(data, "127.0.0.1:1")
    assert service.dropped_by == {
        "unreadable": 1, "oversize": 1, "unregistered": 1, "bad_signature": 1, "wrong_chain": 3,
    }  # fmt: skip
    assert ahead == []
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"heartbeat from peer {peer_id(key.public_key)} at 127.0.0.1:1 is for chain "
        "'carechain-other', not 'carechain-test': a node of another network, or one started "
        "with another genesis, lists this node among its peers"
    ], "said once a minute for a sender; a forged one only counted"
    service.receive(good, "127.0.0.1:2")
    assert ahead == [(peer_id(key.public_key), 9)]
    for _ in range(200):  # a flood from one source exceeds its rate and is dropped
        service.receive(good, "127.0.0.1:3")
    assert service.dropped > 150


@pytest.mark.asyncio
async def test_the_service_survives_a_flood_on_its_socket() -> None:
    key = PrivateKey(b"\x46" * 32)
    service = _service(key, [1], set(), [])
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert service.bound is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for index in range(2000):
                sender.sendto(bytes([index % 256]) * 100, service.bound)
        await asyncio.sleep(0.3)
        assert service.dropped >= 100
        assert not task.done(), "the service keeps running"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_a_peer_address_that_cannot_be_sent_to_costs_a_count_not_the_service() -> None:
    """A failed send (here: the broadcast address, which needs SO_BROADCAST; in a partitioned
    network: a blackhole route) is reported by the socket on the next receive."""
    service = _service(PrivateKey(b"\x47" * 32), [1], set(), [])
    service.peers = [("255.255.255.255", 9)]
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        await asyncio.sleep(0.5)
        assert service.send_errors >= 2, "each interval's failed send is counted"
        assert not task.done(), "the service keeps running"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _LateErrorSocket:
    """A socket that reports an earlier send's failure on a receive, then gets garbage."""

    def __init__(self) -> None:
        self.calls = 0

    async def recv(self) -> tuple[bytes, tuple[str, int]]:
        self.calls += 1
        if self.calls == 1:
            raise OSError(22, "Invalid argument")
        if self.calls == 2:
            return b"garbage", ("127.0.0.1", 9)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_a_send_failure_reported_on_receive_does_not_stop_the_receiving() -> None:
    service = _service(PrivateKey(b"\x48" * 32), [1], set(), [])
    fake = _LateErrorSocket()
    task = asyncio.create_task(service._receive_loop(fake))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if fake.calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert (service.send_errors, service.dropped) == (1, 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
