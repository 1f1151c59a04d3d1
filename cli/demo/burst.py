"""The demo's overload step: a clinic's system, an admitted non-validator peer, sends a burst
of new patients' registrations over p2p, faster than the four validators commit. The chain
keeps committing while it lasts, every registration commits, and no consensus message is
dropped: the validators read the clinic's transactions only as fast as they take them in
(its credit), and the clinic waits when they hold it back."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

from carechain.consensus import crypto
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError, Client, NodeUnreachable
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.p2p.network import Topic

BURST_TXS = 1500
BURST_PER_SECOND = 1000.0
GAP_S_MAX = 3.0
BACKLOG_MAX = 1024  # frames queued to one validator before the clinic waits


def burst_registrations(chain_id: str, count: int) -> list[Tx]:
    expiry = int(time.time() * 1000) + 3_600_000
    txs = []
    for _ in range(count):
        one, two = crypto.PrivateKey.generate(), crypto.PrivateKey.generate()
        draft = builders.register_patient(chain_id, (one.public_key, two.public_key), expiry)
        txs.append(draft.signed(one, two))
    return txs


async def send_burst(
    sender: crypto.PrivateKey, validators: dict[str, str], txs: list[Tx], per_second: float
) -> tuple[float, int]:
    """Send `txs` to every validator (`validators`: peer id -> address) at `per_second` from
    an admitted peer's libp2p host, waiting while they hold it back; when the first was sent
    (monotonic), and what the sender had to drop itself."""
    network = Libp2pNetwork(
        sender, "/ip4/127.0.0.1/tcp/0", dial=list(validators.values()), allowed=set(validators)
    )
    await network.start()
    try:
        deadline = time.monotonic() + 30
        while len(network.peers()) < len(validators):
            if time.monotonic() > deadline:
                raise NodeUnreachable(f"the sending peer reached {len(network.peers())} nodes")
            await asyncio.sleep(0.05)
        first_sent = time.monotonic()
        began = time.perf_counter()
        for index, tx in enumerate(txs):
            delay = began + index / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            while network.backlog() > BACKLOG_MAX:
                await asyncio.sleep(0.01)
            await network.broadcast(Topic.TX, tx.encode())
        while network.backlog() > 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the last frames leave the clinic's host before it stops
        return first_sent, network.dropped
    finally:
        await network.stop()


class CommitWatch:
    """The times at which the highest height of the nodes grew: each node polled every
    100 ms in a thread of its own, so that one node slow to answer does not delay seeing
    what the others committed."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.times: list[float] = []
        self._last = 0
        self._seen = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, args=(client,), daemon=True) for client in clients
        ]

    def __enter__(self) -> CommitWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _watch(self, client: Client) -> None:
        while not self._stop.wait(0.1):
            try:
                height = int(client.status()["height"])
            except (NodeUnreachable, ApiRequestError):  # a node busy or restarting: ask again
                continue
            with self._seen:
                if height > self._last:
                    self.times.append(time.monotonic())
                    self._last = height

    def longest_gap_s(self, since: float, until: float) -> float:
        times = [since, *(t for t in self.times if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(times))


def committed_among(client: Client, ids: set[str], from_height: int) -> set[str]:
    height = int(client.status()["height"])
    found: set[str] = set()
    for h in range(from_height, height + 1):
        found.update(client.get(f"/v1/blocks/{h}/txs")["txs"])
    return found & ids


def clinic_burst(
    step: Callable[[str], None],
    say: Callable[[str], None],
    check: Callable[[bool, str], None],
    clinic: crypto.PrivateKey,
    validators: dict[str, str],
    clients: list[Client],
) -> None:
    step(
        f"A clinic's system sends {BURST_TXS:,} registrations over p2p at "
        f"{BURST_PER_SECOND:,.0f}/s, more than the network commits: consensus goes first"
    )
    chain_id = str(clients[0].status()["chain_id"])
    txs = burst_registrations(chain_id, BURST_TXS)
    ids = {tx.id.hex() for tx in txs}
    first = int(clients[0].status()["height"]) + 1
    with CommitWatch(clients) as watch:
        since, dropped = asyncio.run(send_burst(clinic, validators, txs, BURST_PER_SECOND))
        sent = time.monotonic()
        deadline = sent + 120
        while committed_among(clients[0], ids, first) != ids and time.monotonic() < deadline:
            time.sleep(0.5)
        drained = time.monotonic()
        gap = watch.longest_gap_s(since, sent)
    committed = committed_among(clients[0], ids, first)
    say(
        f"sent in {sent - since:.1f} s, all committed {drained - sent:.1f} s later; longest "
        f"pause between commits while it lasted {gap:.2f} s"
    )
    check(committed == ids, f"all {len(ids):,} registrations committed")
    check(gap < GAP_S_MAX, f"commits never paused {GAP_S_MAX:.0f} s or more during the burst")
    drops = [c.status()["p2p_drops"] for c in clients]
    consensus = sum(d.get("consensus_sent", 0) + d.get("consensus_received", 0) for d in drops)
    check(consensus == 0 and dropped == 0, "no consensus message dropped, nothing the clinic sent")
