"""The network on loopback, 4 libp2p nodes in one process: broadcast messages per second at
saturation and latency p50/p99 at saturation and at 500 messages/s, for 200 B and 10 KB
payloads (one sender, three receivers) over the validators' direct streams and over the
tuned GossipSub that serves non-validator nodes (with the share of messages delivered), block-sync
items per second, blob MB/s between two nodes, and the trio-thread adapter's own round-trip
overhead.

Run: .venv/bin/python bench/p2p.py [--messages 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import struct
import time
from collections.abc import AsyncIterator

from common import report

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.p2p.network import GossipHandler, Topic, Verdict

MiB = 1024 * 1024


async def cluster(count: int) -> list[Libp2pNetwork]:
    keys = [PrivateKey(bytes([i + 1]) * 32) for i in range(count)]
    ids = {peer_id(k.public_key) for k in keys}
    nets: list[Libp2pNetwork] = []
    for key in keys:
        net = Libp2pNetwork(
            key,
            "/ip4/127.0.0.1/tcp/0",
            dial=[n.listen_addrs[0] for n in nets],
            allowed=ids - {peer_id(key.public_key)},
            messages_per_second_max=1_000_000,
        )
        await net.start()
        nets.append(net)
    while any(len(n.peers()) < count - 1 for n in nets):
        await asyncio.sleep(0.05)
    return nets


async def broadcast(
    nets: list[Libp2pNetwork], count: int, size: int, pace_s: float = 0.0
) -> dict[str, float]:
    sender, receivers = nets[0], nets[1:]
    latencies: list[float] = []

    async def receive(net: Libp2pNetwork) -> None:
        for _ in range(count):
            message = await net.inbox.get()
            (sent,) = struct.unpack(">d", message.payload[:8])
            latencies.append(time.perf_counter() - sent)

    tasks = [asyncio.create_task(receive(n)) for n in receivers]
    started = time.perf_counter()
    for index in range(count):
        await sender.broadcast(
            Topic.CONSENSUS, struct.pack(">d", time.perf_counter()) + bytes(size - 8)
        )
        if index % 200 == 199:
            await asyncio.sleep(0)  # let receivers drain like a real node would
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "messages_per_s": count / elapsed,
        "deliveries_per_s": count * len(receivers) / elapsed,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def gossip(
    nets: list[Libp2pNetwork], count: int, size: int, pace_s: float = 0.0
) -> dict[str, float]:
    """One publisher, three subscribers that accept everything (each forwards what it gets)."""
    sender, receivers = nets[0], nets[1:]
    latencies: list[float] = []
    received = {n.local_id: 0 for n in receivers}
    probed: set[str] = set()
    everything = asyncio.Event()

    def handler(local: str) -> GossipHandler:
        async def accept(peer: str, topic: Topic, payload: bytes) -> Verdict:
            (sent,) = struct.unpack(">d", payload[:8])
            if sent == 0:  # a probe, sent until the mesh carries messages to everyone
                probed.add(local)
                return Verdict.ACCEPT
            latencies.append(time.perf_counter() - sent)
            received[local] += 1
            if sum(received.values()) == count * len(receivers):
                everything.set()
            return Verdict.ACCEPT

        return accept

    for net in nets:
        net.serve_gossip(handler(net.local_id), frozenset({Topic.TX}))
    for local in received:
        received[local] = 0
    probe = 0
    while len(probed) < len(receivers):
        probe += 1
        await sender.publish(Topic.TX, struct.pack(">dQ", 0.0, probe))
        await asyncio.sleep(0.05)
    started = time.perf_counter()
    for index in range(count):
        await sender.publish(Topic.TX, struct.pack(">d", time.perf_counter()) + bytes(size - 8))
        if pace_s:
            await asyncio.sleep(pace_s)
        elif index % 200 == 199:
            await asyncio.sleep(0)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30):
            await everything.wait()
    elapsed = time.perf_counter() - started
    delivered = sum(received.values())
    latencies.sort()
    return {
        "messages_per_s": delivered / len(receivers) / elapsed,
        "delivered_fraction": delivered / (count * len(receivers)),
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


async def sync_rate(nets: list[Libp2pNetwork], items: int) -> float:
    async def provide(remote: str, first: int, last: int) -> AsyncIterator[bytes]:
        for height in range(first, last + 1):
            yield height.to_bytes(8, "big") * 128  # 1 KB items

    nets[1].serve_range(provide)
    started = time.perf_counter()
    received = 0
    async for _ in nets[0].request_range(nets[1].local_id, 1, items):
        received += 1
    return received / (time.perf_counter() - started)


async def blob_rate(nets: list[Libp2pNetwork], mib: int) -> float:
    chunk = bytes(MiB)

    async def provide(remote: str, request: bytes) -> AsyncIterator[bytes]:
        for _ in range(mib):
            yield chunk

    nets[2].serve_blobs(provide)
    started = time.perf_counter()
    size = 0
    async for piece in nets[0].fetch_blob(nets[2].local_id, b"request"):
        size += len(piece)
    return size / MiB / (time.perf_counter() - started)


async def adapter_round_trip_us(net: Libp2pNetwork, count: int) -> float:
    loop = asyncio.get_running_loop()
    samples = []
    for _ in range(count):
        done: asyncio.Future[None] = loop.create_future()

        def back_to_asyncio(future: asyncio.Future[None] = done) -> None:
            net._call_async(future.set_result, None)

        started = time.perf_counter()
        net._to_trio(back_to_asyncio)
        await done
        samples.append(time.perf_counter() - started)
    return 1e6 * statistics.median(samples)


async def run(messages: int) -> dict[str, float]:
    nets = await cluster(4)
    try:
        figures: dict[str, float] = {}
        for size in (200, 10_000):
            for key, value in (await broadcast(nets, messages, size)).items():
                figures[f"broadcast_{size}B_saturated_{key}"] = value
            paced = await broadcast(nets, 1000, size, pace_s=0.002)
            figures[f"broadcast_{size}B_at_500_per_s_latency_p50_ms"] = paced["latency_p50_ms"]
            figures[f"broadcast_{size}B_at_500_per_s_latency_p99_ms"] = paced["latency_p99_ms"]
        paced = await gossip(nets, 200, 200, pace_s=0.02)
        figures["gossip_200B_at_50_per_s_latency_p50_ms"] = paced["latency_p50_ms"]
        figures["gossip_200B_at_50_per_s_latency_p99_ms"] = paced["latency_p99_ms"]
        for key, value in (await gossip(nets, messages // 2, 200)).items():
            figures[f"gossip_200B_saturated_{key}"] = value
        figures["sync_1KB_items_per_s"] = await sync_rate(nets, 20_000)
        figures["blob_mib_per_s"] = await blob_rate(nets, 64)
        figures["adapter_round_trip_us_median"] = await adapter_round_trip_us(nets[0], 2000)
        return figures
    finally:
        for net in nets:
            await net.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    arguments = parser.parse_args()
    report("p2p", asyncio.run(run(arguments.messages)))


if __name__ == "__main__":
    main()
