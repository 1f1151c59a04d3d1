"""A live network's throughput and finality: committed transactions per second and latency
from submission to commit, for 1 validator and for 4 validators (each a separate node process
on loopback, all sharing this machine's cores with the load generator), at saturation and at a
steady half of it, submitted through the HTTP API and through the p2p layer (an admitted
non-validator peer that sends transactions to the validators at 1.1x the saturation rate);
CPU and peak memory per node.

Every phase reports what was dropped (each node's p2p layer by lane, the load generator's own
send queue, transactions a full mempool refused), the longest time between two commits in it,
and the fraction committed by its deadline (`PHASE_DEADLINE_S` after its last submission,
however long commits pause meanwhile): overload must show as slower commits, never as a
stalled chain or lost transactions.

The load is signed in advance: patients with a glucose vault each (registered through the
API first), then 90% co-signed `record.put` with an inline reading (one in ten sent first as
the hospital's partial and completed by the patient's signature) and 10% grants. Commits are
timed from the first node's event stream.

Run: .venv/bin/python bench/throughput.py [--validators 1 4] [--seconds 8] [--max-block-txs N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from common import ceilings, report
from ledger import Setup

from carechain.cli.nodes import spawn, wait_for_api
from carechain.config.genesis import load_genesis, save_genesis
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.types import Tx
from carechain.node.testnet import make_testnet
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.p2p.network import Topic

CHAIN = "carechain-throughput"
LOG_LEVEL = os.environ.get("CARECHAIN_BENCH_LOG_LEVEL", "warning")  # the nodes' log level
LOADGEN_KEY = PrivateKey(b"\x77" * 32)
CONCURRENCY = 32  # requests in flight: enough that a single validator never waits for one
PHASE_DEADLINE_S = 120.0  # after a phase's last submission, for all of it to commit
# the p2p load generator pauses while this many frames wait in its send queue to a node: it
# is held back by the nodes' credit instead of dropping at its own full queue
LOADGEN_BACKLOG_MAX = 2048


@dataclasses.dataclass(frozen=True)
class Item:
    """One transaction to commit: the submissions that make it (a partial first, or not)."""

    tx_id: str
    submissions: tuple[Tx, ...]


@dataclasses.dataclass
class Live:
    homes: list[Path]
    processes: list[Any]
    urls: list[str]
    p2p_addresses: list[str]
    node_ids: list[str]


class Commits:
    """Commit times of blocks and transactions, from one node's event stream (a block event
    names its height and transaction count; the ids come from /v1/blocks/{height}/txs)."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.blocks: list[tuple[float, int]] = []  # (commit time, transactions)
        self.changed = asyncio.Event()

    async def follow(self, session: aiohttp.ClientSession, url: str) -> None:
        pending: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
        reader = asyncio.create_task(self._read_ids(session, url, pending))
        try:
            timeout = aiohttp.ClientTimeout()
            async with session.get(f"{url}/v1/events", timeout=timeout) as response:
                async for line in response.content:
                    event = json.loads(line)
                    if event.get("event") != "block":
                        continue
                    now = time.perf_counter()
                    if "txs" in event:  # a node from before block events were bounded
                        event["tx_count"] = len(event["txs"])
                        self._committed(now, event["txs"])
                    self.blocks.append((now, event["tx_count"]))
                    if event["tx_count"] and "txs" not in event:
                        pending.put_nowait((now, event["height"]))
        finally:
            reader.cancel()

    async def _read_ids(
        self, session: aiohttp.ClientSession, url: str, pending: asyncio.Queue[tuple[float, int]]
    ) -> None:
        while True:
            seen_at, height = await pending.get()
            async with session.get(f"{url}/v1/blocks/{height}/txs") as response:
                answer = await response.json()
            self._committed(seen_at, answer["txs"])

    def _committed(self, seen_at: float, tx_ids: list[str]) -> None:
        for tx_id in tx_ids:
            self.at[tx_id] = seen_at
        self.changed.set()

    async def wait_for(self, ids: list[str], deadline_s: float = PHASE_DEADLINE_S) -> None:
        """Until every id committed, or `deadline_s` have passed."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if all(i in self.at for i in ids):
                return
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.changed.wait()

    def longest_gap_s(self, since: float, until: float) -> float:
        """The longest time between `since`, the commits of blocks with transactions in
        between, and `until` (perf_counter times)."""
        times = [since] + [at for at, n in self.blocks if n and since < at < until] + [until]
        return max(b - a for a, b in itertools.pairwise(times))


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def items_of(setup: Setup, rounds: int) -> list[Item]:
    items = []
    for index, (tx, partial) in enumerate(setup.workload_with_partials(rounds, receipts=False)):
        first = (partial,) if partial is not None and index % 10 == 5 else ()
        items.append(Item(tx.id.hex(), (*first, tx)))
    return items


def start(
    folder: Path, validators: int, setup: Setup, base_port: int, max_block_txs: int | None = None
) -> Live:
    nodes = make_testnet(
        folder, validators, base_port=base_port, chain_id=CHAIN, institutions=setup.institutions
    )
    for node in nodes:
        if max_block_txs is not None:
            genesis = load_genesis(node.home / "genesis.json")
            params = dataclasses.replace(genesis.params, max_block_txs=max_block_txs)
            save_genesis(node.home / "genesis.json", dataclasses.replace(genesis, params=params))
        config = load_node_config(node.home)
        p2p = config.p2p.model_copy(update={"observers": [peer_id(LOADGEN_KEY.public_key)]})
        mempool = config.mempool.model_copy(update={"txs_max": 200_000})
        log = config.log.model_copy(update={"level": LOG_LEVEL})
        update = {"p2p": p2p, "mempool": mempool, "log": log}
        save_node_config(node.home, config.model_copy(update=update))
    processes = [spawn(node.home, node.home / "node.log") for node in nodes]
    clients = [
        wait_for_api(node.home, process) for node, process in zip(nodes, processes, strict=True)
    ]
    return Live(
        [n.home for n in nodes],
        processes,
        [c.base_url for c in clients],
        [f"/ip4/127.0.0.1/tcp/{n.p2p_port}/p2p/{n.node_id}" for n in nodes],
        [n.node_id for n in nodes],
    )


def stop(live: Live) -> None:
    for process in live.processes:
        process.terminate()
    for process in live.processes:
        try:
            process.wait(30)
        except Exception:
            process.kill()


def batch_body(txs: list[Tx]) -> bytes:
    return json.dumps({"txs": [tx.encode().hex() for tx in txs]}).encode()


async def post(
    session: aiohttp.ClientSession,
    url: str,
    txs: list[Tx],
    body: bytes | None = None,
    retries: list[int] | None = None,
) -> None:
    """POST a batch to /v1/txs/batch (`body`: its JSON, made in advance), retrying what a
    full pool refused, as a client should (counted in `retries`)."""
    while txs:
        data = body or batch_body(txs)
        body = None
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{url}/v1/txs/batch", data=data, headers=headers) as response:
            answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"batch refused: {answer}")
        retry = []
        for tx, result in zip(txs, answer["results"], strict=True):
            if result.get("error") == "pool_full":
                retry.append(tx)
            elif "error" in result:
                raise RuntimeError(f"submission refused: {result}")
        if retry:
            if retries is not None:
                retries[0] += len(retry)
            await asyncio.sleep(0.05)
        txs = retry


async def submit_api(
    session: aiohttp.ClientSession,
    urls: list[str],
    items: list[Item],
    sent: dict[str, float],
    per_second: float | None = None,
    retries: list[int] | None = None,
) -> None:
    """Submit through the API in batches, spread over every node, `CONCURRENCY` requests in
    flight; at `per_second` if given (each batch of 10 ms of load at its scheduled time),
    else as fast as accepted (batches of 100)."""
    size = 100 if per_second is None else max(1, int(per_second / 100))
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    queue: asyncio.Queue[tuple[int, list[Item]]] = asyncio.Queue()
    for numbered in enumerate(batches):
        queue.put_nowait(numbered)
    # the request bodies are made before the clock starts, like the signatures: the load
    # generator shares the cores with the nodes it measures
    bodies = [batch_body([tx for item in batch for tx in item.submissions]) for batch in batches]
    began = time.perf_counter()

    async def worker(url: str) -> None:
        while not queue.empty():
            index, batch = queue.get_nowait()
            if per_second is not None:
                delay = began + index * size / per_second - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            now = time.perf_counter()
            for item in batch:
                sent.setdefault(item.tx_id, now)
            txs = [tx for item in batch for tx in item.submissions]
            await post(session, url, txs, bodies[index], retries)

    await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(CONCURRENCY)))


async def submit_p2p(
    network: Libp2pNetwork, items: list[Item], sent: dict[str, float], per_second: float
) -> None:
    """Send each transaction to every validator over the p2p layer, paced at `per_second`,
    pausing while the nodes hold the load back (their credit ran out and the frames wait in
    this sender's queue): a sender that respects backpressure loses nothing."""
    # (a network from before backpressure, in a side-by-side run, has no backlog to wait on)
    backlog = getattr(network, "backlog", lambda: 0)
    began = time.perf_counter()
    for index, item in enumerate(items):
        delay = began + index / per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while backlog() > LOADGEN_BACKLOG_MAX:
            await asyncio.sleep(0.01)
        sent.setdefault(item.tx_id, time.perf_counter())
        for tx in item.submissions:
            topic = Topic.TX if tx is item.submissions[-1] else Topic.PARTIAL
            await network.broadcast(topic, tx.encode())


def figures_of(items: list[Item], sent: dict[str, float], commits: Commits) -> dict[str, float]:
    done = [(sent[i.tx_id], commits.at[i.tx_id]) for i in items if i.tx_id in commits.at]
    if not done:
        return {"committed": 0.0}
    first_sent = min(s for s, _ in done)
    last_commit = max(c for _, c in done)
    latencies = sorted(c - s for s, c in done)
    blocks = [n for at, n in commits.blocks if first_sent <= at <= last_commit]
    return {
        "blocks_per_s": len(blocks) / (last_commit - first_sent),
        "txs_per_block": statistics.mean(blocks) if blocks else 0.0,
        "committed_tx_per_s": len(done) / (last_commit - first_sent),
        "committed_fraction": len(done) / len(items),
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def usage(processes: list[psutil.Process]) -> list[tuple[float, float]]:
    return [(sum(p.cpu_times()[:2]), time.perf_counter()) for p in processes]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclasses.dataclass
class Run:
    """One network under load: what was sent when, what committed when, the figures."""

    live: Live
    session: aiohttp.ClientSession
    prefix: str
    commits: Commits = dataclasses.field(default_factory=Commits)
    sent: dict[str, float] = dataclasses.field(default_factory=dict)
    figures: dict[str, float] = dataclasses.field(default_factory=dict)

    async def phase(
        self, name: str, items: list[Item], submit: Awaitable[object]
    ) -> dict[str, float]:
        """Submit, wait for every transaction to commit (up to the deadline), and record the
        phase: throughput, latency, committed fraction, longest gap between commits, drops."""
        started = time.perf_counter()
        await submit
        await self.commits.wait_for([i.tx_id for i in items])
        ended = time.perf_counter()
        measured = figures_of(items, self.sent, self.commits)
        measured["longest_commit_gap_s"] = self.commits.longest_gap_s(started, ended)
        measured["seconds"] = ended - started
        for key, value in measured.items():
            self.figures[f"{self.prefix}{name}_{key}"] = value
        await self.count_drops(name)
        say(
            f"{name}: {measured.get('committed_fraction', 0):.3f} committed, longest gap "
            f"{measured['longest_commit_gap_s']:.2f} s, {measured['seconds']:.1f} s"
        )
        return measured

    async def count_drops(self, phase: str) -> None:
        """What each node's p2p layer dropped so far, by lane (consensus frames and
        transaction frames, sent or received), and transactions a full mempool refused."""
        for index, url in enumerate(self.live.urls):
            async with self.session.get(f"{url}/v1/status") as response:
                status = await response.json()
            name = f"{self.prefix}node{index}_after_{phase}"
            self.figures[f"{name}_p2p_dropped"] = float(status["p2p_dropped"])
            if "p2p_drops" not in status:
                continue  # a node from before these were reported (a side-by-side run)
            drops = status["p2p_drops"]
            consensus = drops.get("consensus_sent", 0) + drops.get("consensus_received", 0)
            txs = drops.get("txs_sent", 0) + drops.get("txs_received", 0)
            self.figures[f"{name}_consensus_frames_dropped"] = float(consensus)
            self.figures[f"{name}_tx_frames_dropped"] = float(txs)
            self.figures[f"{name}_pool_full_drops"] = float(status["pool_full_drops"])
            self.figures[f"{name}_syncs"] = float(status["syncs"])
            self.figures[f"{name}_consensus_wait_ms_max"] = status["consensus_wait_ms_max"]
            self.figures[f"{name}_consensus_handle_ms_max"] = status["consensus_handle_ms_max"]
            budget = status["proposal_budget"]
            self.figures[f"{name}_execution_us_per_tx"] = budget["execution_us_per_tx"]
            self.figures[f"{name}_round_0_txs_max"] = budget["round_0_txs_max"]

    async def saturate_api(self, items: list[Item]) -> float:
        processes = [psutil.Process(p.pid) for p in self.live.processes]
        processes.append(psutil.Process())  # the load generator itself
        say(f"saturating the API with {len(items)} transactions")
        retries = [0]
        before = usage(processes)
        submit = submit_api(self.session, self.live.urls, items, self.sent, retries=retries)
        measured = await self.phase("api_saturated", items, submit)
        after = usage(processes)
        elapsed = after[0][1] - before[0][1]
        for index, (first, last) in enumerate(zip(before, after, strict=True)):
            cores = (last[0] - first[0]) / elapsed
            name = "loadgen" if index == len(self.live.processes) else f"node{index}"
            self.figures[f"{self.prefix}{name}_cpu_cores_saturated"] = cores
        self.figures[f"{self.prefix}api_saturated_loadgen_pool_full_retries"] = retries[0]
        return measured.get("committed_tx_per_s", 100.0)

    async def steady_api(self, items: list[Item], per_second: float) -> None:
        say(f"{len(items)} transactions at {per_second:.0f}/s through the API")
        retries = [0]
        submit = submit_api(self.session, self.live.urls, items, self.sent, per_second, retries)
        await self.phase("api_at_half_saturation", items, submit)
        self.figures[f"{self.prefix}api_at_half_saturation_loadgen_pool_full_retries"] = retries[0]
        self.figures[f"{self.prefix}api_half_saturation_rate_tx_per_s"] = per_second

    async def through_p2p(self, items: list[Item], per_second: float) -> None:
        network = Libp2pNetwork(
            LOADGEN_KEY, "/ip4/127.0.0.1/tcp/0", dial=self.live.p2p_addresses,
            allowed=set(self.live.node_ids),
        )  # fmt: skip
        await network.start()
        try:
            deadline = time.monotonic() + 30
            while len(network.peers()) < len(self.live.node_ids):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the load generator reached {network.peers()} only")
                await asyncio.sleep(0.05)
            say(f"{len(items)} transactions at {per_second:.0f}/s through p2p")
            submit = submit_p2p(network, items, self.sent, per_second)
            await self.phase("p2p_offered_1_1x", items, submit)
            self.figures[f"{self.prefix}p2p_offered_1_1x_loadgen_dropped"] = network.dropped
        finally:
            await network.stop()


async def run_network(
    validators: int, seconds: float, base_port: int, folder: Path, max_block_txs: int | None
) -> dict[str, float]:
    setup = Setup(1000, chain=CHAIN, start_ms=int(time.time() * 1000))
    target = 1500 if validators == 1 else 600  # sized so a phase lasts about `seconds`
    saturation = int(target * seconds)
    rounds = -(-(saturation * 2 + int(target * seconds)) // len(setup.patients)) + 1
    items = items_of(setup, rounds)
    live = start(folder, validators, setup, base_port, max_block_txs)
    try:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            run = Run(live, session, f"v{validators}_")
            follower = asyncio.create_task(run.commits.follow(session, live.urls[0]))
            await asyncio.sleep(0.5)
            for batch in setup.setup_blocks:  # registrations, then vaults
                say(f"{validators} validator(s): setting up {len(batch)} transactions")
                setup_items = [Item(tx.id.hex(), (tx,)) for tx in batch]
                await submit_api(session, live.urls, setup_items, run.sent)
                await run.commits.wait_for([i.tx_id for i in setup_items])
            rate = await run.saturate_api(items[:saturation]) / 2
            steady = items[saturation : saturation + int(rate * seconds)]
            await run.steady_api(steady, rate)
            offset = saturation + len(steady)
            pushed = items[offset : offset + saturation]
            await run.through_p2p(pushed, 2.2 * rate)
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await follower
        for index, process in enumerate(live.processes):
            run.figures[f"{run.prefix}node{index}_peak_rss_mib"] = peak_rss_mib(process.pid)
            run.figures[f"{run.prefix}node{index}_exit_code"] = float(process.poll() or 0)
        run.figures[f"{run.prefix}nodes_alive"] = sum(p.poll() is None for p in live.processes)
        run.figures[f"{run.prefix}signatures_per_tx"] = statistics.mean(
            len(i.submissions[-1].signatures) for i in items
        )
    finally:
        say("stopping the nodes")
        stop(live)
    return run.figures


async def main_async(
    validator_counts: list[int], seconds: float, max_block_txs: int | None, keep: Path | None
) -> dict[str, float]:
    figures: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        folder = keep or stack.enter_context(tempfile.TemporaryDirectory())
        for index, count in enumerate(validator_counts):
            base_port = 28100 + 100 * index
            home = Path(folder) / str(count)
            figures.update(await run_network(count, seconds, base_port, home, max_block_txs))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--validators", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--max-block-txs", type=int, default=None, help="genesis parameter")
    parser.add_argument(
        "--keep", type=Path, default=None, help="run the nodes here and keep their homes and logs"
    )
    arguments = parser.parse_args()
    figures = asyncio.run(
        main_async(arguments.validators, arguments.seconds, arguments.max_block_txs, arguments.keep)
    )
    limits = ceilings()
    cluster_ceiling = limits["ed25519_verify_per_s_one_core"] * (psutil.cpu_count() or 1)
    for count in arguments.validators:
        key = f"v{count}_api_saturated_committed_tx_per_s"
        if key in figures:
            # every validator verifies every signature once: cores x verify rate / validators,
            # in transactions per second
            ceiling = cluster_ceiling / count / figures[f"v{count}_signatures_per_tx"]
            figures[f"v{count}_verify_ceiling_tx_per_s"] = ceiling
            figures[f"v{count}_saturated_vs_verify_ceiling"] = figures[key] / ceiling
    report("throughput", figures, limits=limits)


if __name__ == "__main__":
    main()
