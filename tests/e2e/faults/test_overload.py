"""Overload: an admitted peer offers transactions over p2p at twice the rate the network
commits, for 30 s, to validator processes on loopback. Liveness is the promise: the chain
keeps committing (no gap between commits of `GAP_S_MAX` or more while the flood lasts), every
transaction offered commits, no consensus frame is dropped anywhere, no process exits, and
every node holds the same blocks. The peer pauses when the validators hold it back (their
transaction credit ran out); it is never dropped at its own queue.

The gap bound is the issue's 3 s at 4 validators. At 7 it is not yet met on a 2-core machine:
eight processes and their signature workers share the two cores, and now and then a proposal
arrives after the devnet's 1.5 s propose timeout; the round change that follows is a gap of
3.2-4.4 s (one in most runs of 2026-12-07, none in others, blocks otherwise 0.5-2.7 s apart).
The 7-validator scenario holds the chain to at most one such round change
(`GAP_S_MAX_SEVEN`) and prints the figure; the 3 s target stays open (issue 28).

Run with `make overload` (CI runs it after `make test`); each scenario prints its figures.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from carechain.cli.demo.burst import CommitWatch, send_burst
from carechain.cli.nodes import Devnet, spawn, wait_for_api
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError, Client
from carechain.tests.leaks import LEAKED_SOCKET

# py-libp2p leaves the sockets of the flooding peer's dropped connections to the collector
# (see tests.leaks); a collection at the module's end reaps them here, not in a later test
pytestmark = [
    pytest.mark.overload,
    pytest.mark.filterwarnings(LEAKED_SOCKET),
    pytest.mark.timeout(600),  # a 7-validator flood and its drain take minutes on 2 cores
]


@pytest.fixture(scope="module", autouse=True)
def _reap_leaked_sockets() -> Iterator[None]:
    yield
    gc.collect()


CHAIN = "carechain-overload"
SEED = 28
FLOOD_S = 30.0
GAP_S_MAX = 3.0
GAP_S_MAX_SEVEN = 6.0  # one round change: a 1.5 s propose timeout, then round 1 (see above)
OFFERED_X = 2.0  # times the saturation rate measured first
CALIBRATION_TXS = 3000
DRAIN_DEADLINE_S = 180.0
LOADGEN_KEY = PrivateKey(SEED.to_bytes(1, "big") * 32)
# the nodes' log level: `debug` logs every engine step (node.log in each node's folder)
LOG_LEVEL = os.environ.get("CARECHAIN_OVERLOAD_LOG_LEVEL", "info")


def registrations(first: int, count: int) -> list[Tx]:
    """Patient registrations with keys derived from the seed and an index: the same run
    every time (reproduce with the seed printed on failure)."""
    expiry = int(time.time() * 1000) + 3_600_000
    txs = []
    for index in range(first, first + count):
        one = PrivateKey(SEED.to_bytes(4, "big") + index.to_bytes(28, "big"))
        two = PrivateKey(b"\x02" + one.seed[1:])
        draft = builders.register_patient(CHAIN, (one.public_key, two.public_key), expiry)
        txs.append(draft.signed(one, two))
    return txs


@contextmanager
def overload_net(folder: Path, validators: int, base_port: int) -> Iterator[Devnet]:
    devnet = Devnet(folder, validators, base_port, chain_id=CHAIN, heartbeat_interval_ms=1000)
    for node in devnet.nodes:
        config = load_node_config(node.home)
        p2p = config.p2p.model_copy(update={"observers": [peer_id(LOADGEN_KEY.public_key)]})
        mempool = config.mempool.model_copy(update={"txs_max": 100_000})
        log = config.log.model_copy(update={"level": LOG_LEVEL})
        update = {"p2p": p2p, "mempool": mempool, "log": log}
        save_node_config(node.home, config.model_copy(update=update))
    try:
        for node in devnet.nodes:
            devnet.processes[node.name] = spawn(node.home, node.home / "node.log")
        for node in devnet.nodes:
            wait_for_api(node.home, devnet.processes[node.name])
        yield devnet
    finally:
        devnet.stop()


def committed_ids(client: Client) -> set[str]:
    height = int(client.status()["height"])
    return {tx for h in range(1, height + 1) for tx in client.get(f"/v1/blocks/{h}/txs")["txs"]}


def wait_committed(client: Client, ids: set[str], deadline_s: float) -> tuple[float, set[str]]:
    """Seconds until every id is committed, or the deadline passed; and the ids that were
    not committed by then."""
    started = time.monotonic()
    seen: set[str] = set()
    height = 0
    while True:
        top = int(client.status()["height"])
        for h in range(height + 1, top + 1):
            seen.update(client.get(f"/v1/blocks/{h}/txs")["txs"])
        height = top
        missing = ids - seen
        elapsed = time.monotonic() - started
        if not missing or elapsed > deadline_s:
            return elapsed, missing
        time.sleep(0.2)


def where_missing(clients: list[Client], missing: set[str]) -> dict[str, list[str]]:
    """What each node says of a few transactions that did not commit."""
    sample = sorted(missing)[:4]
    found: dict[str, list[str]] = {}
    for client in clients:
        name = str(client.status()["moniker"])
        found[name] = []
        for tx_id in sample:
            try:
                answer = client.get(f"/v1/txs/{tx_id}")
                found[name].append(f"{answer['status']} {answer.get('reason', '')}".strip())
            except ApiRequestError as exc:
                found[name].append(f"{exc.status}")
    return found


def saturation_rate(clients: list[Client]) -> float:
    """Committed transactions per second with the APIs given more than they can take
    (batches of 100 from 8 threads, spread over the nodes)."""
    txs = registrations(0, CALIBRATION_TXS)
    batches = [txs[i : i + 100] for i in range(0, len(txs), 100)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = pool.map(
            lambda n: clients[n % len(clients)].submit_batch(batches[n]), range(len(batches))
        )
        refused = [r for batch in answers for r in batch if "error" in r]
    assert not refused, f"calibration transactions refused: {refused[:3]}"
    _, missing = wait_committed(clients[0], {tx.id.hex() for tx in txs}, 120)
    assert not missing, f"{len(missing)} calibration transactions never committed"
    return CALIBRATION_TXS / (time.monotonic() - started)


def flood_scenario(folder: Path, validators: int, base_port: int, gap_s_max: float) -> None:
    with overload_net(folder, validators, base_port) as devnet:
        clients = [Client(wait_for_api(n.home, devnet.processes[n.name]).base_url, timeout_s=5)
                   for n in devnet.nodes]  # fmt: skip
        rate = saturation_rate(clients)
        offered = OFFERED_X * rate
        txs = registrations(CALIBRATION_TXS, int(offered * FLOOD_S))
        addresses = {
            n.node_id: f"/ip4/127.0.0.1/tcp/{n.p2p_port}/p2p/{n.node_id}" for n in devnet.nodes
        }
        with CommitWatch(clients) as watch:
            since, dropped = asyncio.run(send_burst(LOADGEN_KEY, addresses, txs, offered))
            sent_s = time.monotonic() - since
            gap = watch.longest_gap_s(since, since + sent_s)
            ids = {tx.id.hex() for tx in txs}
            drained, missing = wait_committed(clients[0], ids, DRAIN_DEADLINE_S)
        statuses = [c.status() for c in clients]
        consensus_drops = {
            s["moniker"]: s["p2p_drops"]["consensus_sent"] + s["p2p_drops"]["consensus_received"]
            for s in statuses
        }
        print(
            f"{validators} validators, seed {SEED}: saturation {rate:.0f} tx/s, offered "
            f"{offered:.0f} tx/s; {len(txs)} sent in {sent_s:.1f} s, {len(txs) - len(missing)} "
            f"committed {drained:.1f} s later; longest gap between commits during the flood "
            f"{gap:.2f} s; consensus frames dropped {consensus_drops}; the peer dropped "
            f"{dropped}; syncs {[s['syncs'] for s in statuses]}"
        )
        assert not missing, (
            f"seed {SEED}: {len(missing)} of {len(txs)} never committed; the peer dropped "
            f"{dropped}; where a few are: {where_missing(clients, missing)}; drops "
            f"{[s['p2p_drops'] for s in statuses]}"
        )
        exited = {n.name: devnet.processes[n.name].poll() for n in devnet.nodes}
        assert all(code is None for code in exited.values()), f"processes exited: {exited}"
        assert gap < gap_s_max, f"seed {SEED}: commits stopped for {gap:.2f} s during the flood"
        assert set(consensus_drops.values()) == {0}, f"consensus frames dropped: {consensus_drops}"
        assert dropped == 0, "the flooding peer dropped transactions at its own queue"
        # every node reaches the highest height any showed (the chain moves on meanwhile: a
        # heartbeat block a second), and all hold the same block there
        level = max(int(s["height"]) for s in statuses)
        deadline = time.monotonic() + 30
        while (lowest := min(int(c.status()["height"]) for c in clients)) < level:
            assert time.monotonic() < deadline, f"a node stayed at {lowest}, below {level}"
            time.sleep(0.2)
        hashes = {c.get(f"/v1/blocks/{level}")["hash"] for c in clients}
        assert len(hashes) == 1, f"height {level}: nodes disagree: {hashes}"
        assert committed_ids(clients[-1]) >= {tx.id.hex() for tx in txs}


def test_seven_validators_keep_committing_under_a_flood_of_twice_their_rate(
    tmp_path: Path,
) -> None:
    flood_scenario(tmp_path, 7, 27800, GAP_S_MAX_SEVEN)


def test_four_validators_keep_committing_under_a_flood_of_twice_their_rate(
    tmp_path: Path,
) -> None:
    flood_scenario(tmp_path, 4, 27900, GAP_S_MAX)
