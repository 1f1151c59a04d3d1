"""A fault-injection harness on real node processes: 4 validators on loopback, a steady load
of patient registrations through their APIs, and the checks every scenario ends with: all live
nodes hold the same blocks (hash by hash), every transaction a node acknowledged as committed is
committed on every live node, an accepted transaction no live node knows was lost only with the
mempool of the node that accepted it (stopped since), and no validator was caught signing
twice."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import libfaketime

from carechain.cli.nodes import Devnet, spawn, wait_for_api
from carechain.config.genesis import GENESIS_FILE
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError, Client, NodeUnreachable
from carechain.node.wallet.keystore import save_key
from carechain.storage.wal import mark_never_signed
from carechain.tests.e2e.faults.netns import Namespaces, readdress

CHAIN = "carechain-faults"
# Short, so that a request caught by a node's SIGSTOP or SIGKILL cannot stall the load or the
# watcher for long (a stalled watcher would report an outage that did not happen).
REQUEST_TIMEOUT_S = 1.0


@dataclasses.dataclass
class Commit:
    height: int
    seen_at: float  # monotonic


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A transaction a node's API accepted (202: pending in its mempool, not yet durable)."""

    tx_id: bytes
    node: str
    at: float  # monotonic, when the request was sent


class Load:
    """Registrations at `per_second` through the live nodes in turn; remembers each one a node
    accepted, and the time every new height was first seen."""

    def __init__(self, net: FaultNet, per_second: float = 10.0, seed: int = 1) -> None:
        self.net = net
        self.per_second = per_second
        self.seed = seed
        self.accepted: list[Accepted] = []
        self.heights: list[Commit] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._submit, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _submit(self) -> None:
        counter = 0
        while not self._stop.wait(1 / self.per_second):
            counter += 1
            first = PrivateKey(self.seed.to_bytes(4, "big") + counter.to_bytes(28, "big"))
            second = PrivateKey(b"\x02" + first.seed[1:])
            expiry = int(time.time() * 1000) + 3_600_000
            draft = builders.register_patient(CHAIN, (first.public_key, second.public_key), expiry)
            tx = draft.signed(first, second)
            live = self.net.live_names()
            if not live:
                continue
            name = live[counter % len(live)]
            # the time the request left: a node killed while it was answering (the answer
            # came back, the process died) has its kill recorded after this, not before
            sent = time.monotonic()
            try:
                self.net.clients[name].submit(tx)
            except (NodeUnreachable, ApiRequestError):
                continue  # a node going down may refuse; the load goes on
            self.accepted.append(Accepted(tx.id, name, sent))

    def _watch(self) -> None:
        last = 0
        while not self._stop.wait(0.05):
            for client in self.net.live_clients():
                try:
                    height = int(client.status()["height"])
                except (NodeUnreachable, ApiRequestError):
                    continue
                if height > last:
                    self.heights.extend(
                        Commit(h, time.monotonic()) for h in range(last + 1, height + 1)
                    )
                    last = height

    def longest_gap_s(self, since: float, until: float) -> float:
        """The longest time without a new height between `since` and `until`."""
        times = [since] + [c.seen_at for c in self.heights if since < c.seen_at < until] + [until]
        return max(b - a for a, b in itertools.pairwise(times))


class FaultNet:
    """Four validators on loopback, or each in its own network namespace (`spaces`)."""

    def __init__(self, folder: Path, base_port: int, spaces: Namespaces | None = None) -> None:
        self.devnet = Devnet(folder, 4, base_port, chain_id=CHAIN, heartbeat_interval_ms=1000)
        self.spaces = spaces
        self.clients: dict[str, Client] = {}
        self.stopped: set[str] = set()
        self.stops: list[tuple[str, float]] = []  # (name, monotonic time) of each kill or stop
        self.byzantine: set[str] = set()
        self.extra: dict[str, Path] = {}  # validators added after genesis
        if spaces is not None:
            readdress([node.home for node in self.devnet.nodes], spaces)

    @property
    def names(self) -> list[str]:
        return [node.name for node in self.devnet.nodes] + list(self.extra)

    def _prefix(self, name: str) -> list[str]:
        return [] if self.spaces is None else self.spaces.command(self.names.index(name))

    def start(self) -> None:
        for node in self.devnet.nodes:
            log = node.home / "node.log"
            self.devnet.processes[node.name] = spawn(node.home, log, prefix=self._prefix(node.name))
        for node in self.devnet.nodes:
            client = wait_for_api(node.home, self.devnet.processes[node.name])
            self.clients[node.name] = Client(client.base_url, timeout_s=REQUEST_TIMEOUT_S)

    def live_names(self) -> list[str]:
        """The honest nodes that are running."""
        out = self.stopped | self.byzantine
        return [name for name in list(self.clients) if name not in out]

    def live_clients(self) -> list[Client]:
        return [self.clients[name] for name in self.live_names()]

    def kill(self, name: str) -> None:
        self.stopped.add(name)
        self.stops.append((name, time.monotonic()))
        self.devnet.kill(name)

    def terminate(self, name: str) -> int:
        self.stopped.add(name)
        self.stops.append((name, time.monotonic()))
        return self.devnet.terminate(name)

    def home(self, name: str) -> Path:
        if name in self.extra:
            return self.extra[name]
        return next(n.home for n in self.devnet.nodes if n.name == name)

    def pause(self, name: str) -> None:
        self.stopped.add(name)
        os.kill(self.devnet.processes[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.kill(self.devnet.processes[name].pid, signal.SIGCONT)
        self.stopped.discard(name)

    def restart(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        node = next(n for n in self.devnet.nodes if n.name == name)
        process = spawn(node.home, node.home / "node.log", extra_env, self._prefix(name))
        self.devnet.processes[name] = process
        client = wait_for_api(node.home, process)
        self.clients[name] = Client(client.base_url, timeout_s=REQUEST_TIMEOUT_S)
        self.stopped.discard(name)

    def add_validator_home(self, folder: Path) -> tuple[str, Path]:
        """A new validator's home beside the others (fresh keys, the network's genesis, the
        next ports, the others as peers); its name and home. Governance must add it."""
        name = f"hospital-{len(self.names)}"
        home = folder / name
        first = self.devnet.nodes[0]
        save_key(home / "keys" / "node.json", PrivateKey.generate(), name="node",
                 purpose="node", passphrase=None)  # fmt: skip
        save_key(home / "keys" / "validator.json", PrivateKey.generate(), name="validator",
                 purpose="validator", passphrase=None)  # fmt: skip
        shutil.copy(first.home / GENESIS_FILE, home / GENESIS_FILE)
        model = load_node_config(first.home)
        port = self.devnet.nodes[-1].p2p_port + 2 * (len(self.extra) + 1)
        own_p2p = f"/ip4/127.0.0.1/tcp/{port}"
        own_heartbeat = f"127.0.0.1:{port + 1000}"
        first_p2p = f"{model.p2p.listen}/p2p/{first.node_id}"
        p2p = model.p2p.model_copy(
            update={
                "listen": own_p2p,
                "peers": [*model.p2p.peers, first_p2p],
                "heartbeat_listen": own_heartbeat,
                "heartbeat_peers": [*model.p2p.heartbeat_peers, model.p2p.heartbeat_listen],
            }
        )
        api = model.api.model_copy(update={"listen": f"127.0.0.1:{port + 1}"})
        config = model.model_copy(update={"moniker": name, "p2p": p2p, "api": api})
        save_node_config(home, config)
        mark_never_signed(home / "data" / "wal")
        self.extra[name] = home
        return name, home

    def start_extra(self, name: str) -> None:
        home = self.extra[name]
        process = spawn(home, home / "node.log")
        self.devnet.processes[name] = process
        client = wait_for_api(home, process)
        self.clients[name] = Client(client.base_url, timeout_s=REQUEST_TIMEOUT_S)

    def restart_byzantine(self, name: str) -> None:
        """Stop `name` and run it again as the Byzantine validator of byzantine.py."""
        assert self.terminate(name) == 0
        node = next(n for n in self.devnet.nodes if n.name == name)
        module = "carechain.tests.e2e.faults.byzantine"
        with (node.home / "node.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module, "--home", str(node.home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.devnet.processes[name] = process
        wait_for_api(node.home, process)
        self.stopped.discard(name)
        self.byzantine.add(name)

    def heights(self) -> dict[str, int]:
        return {name: int(c.status()["height"]) for name, c in self.clients.items()
                if name not in self.stopped | self.byzantine}  # fmt: skip

    def wait_until_level(self, timeout_s: float = 60) -> int:
        """Until every live node reports the same height; that height."""
        deadline = time.monotonic() + timeout_s
        while True:
            heights = set(self.heights().values())
            if len(heights) == 1:
                return heights.pop()
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes did not level: {self.heights()}")
            time.sleep(0.2)

    def check_agreement(self, accepted: list[Accepted], *, evidence: bool = False) -> int:
        """Every live honest node holds the same blocks, every committed transaction
        everywhere, and (unless `evidence`) no equivocation evidence was recorded; the common
        height. An accepted transaction may be known nowhere only if the node that accepted
        it was stopped afterwards (a mempool is not durable: a node killed before it passed a
        transaction on takes it down with it; the client sees it never commit and sends it
        again)."""
        height = self.wait_until_level()
        clients = self.live_clients()
        for h in range(1, height + 1):
            hashes = {c.get(f"/v1/blocks/{h}")["hash"] for c in clients}
            assert len(hashes) == 1, f"height {h}: nodes disagree: {hashes}"
            kinds = {c.get(f"/v1/blocks/{h}")["header"]["chain_id"] for c in clients[:1]}
            assert kinds == {CHAIN}
        committed = 0
        for entry in accepted:
            answers = {_tx_status(c, entry.tx_id) for c in clients}
            if "committed" in answers:
                assert answers == {"committed"}, f"{entry.tx_id.hex()}: {answers}"
                committed += 1
            elif answers == {"unknown"}:
                stopped = any(n == entry.node and t > entry.at for n, t in self.stops)
                assert stopped, f"{entry.tx_id.hex()}, accepted by {entry.node}, is known nowhere"
        assert committed > 0, "the load committed nothing"
        if not evidence:
            entries = clients[0].get("/v1/state/evidence")["entries"]
            assert entries == [], f"a validator signed twice: {entries}"
            # and from every node's own received votes, evidence submitted or not
            seen = {c.base_url: int(c.status()["equivocations_seen"]) for c in clients}
            assert set(seen.values()) == {0}, f"conflicting votes received: {seen}"
        return height

    def stop(self) -> None:
        for name in list(self.stopped):
            if name in self.devnet.processes:
                with suppress(ProcessLookupError):
                    os.kill(self.devnet.processes[name].pid, signal.SIGCONT)
        self.devnet.stop()


def _tx_status(client: Client, tx_id: bytes) -> str:
    try:
        return str(client.tx_status(tx_id)["status"])
    except ApiRequestError as exc:
        if exc.status == 404:
            return "unknown"
        raise


def skewed_clock(offset_s: int) -> dict[str, str]:
    """The environment that runs a process with its wall clock `offset_s` seconds off (the
    libfaketime library, preloaded); monotonic time, which the node's timers use, stays true."""
    _, env = libfaketime.get_reload_information()
    return {**env, "DONT_FAKE_MONOTONIC": "1", "FAKETIME": f"{offset_s:+d}s"}


@contextmanager
def fault_net(folder: Path, base_port: int, spaces: Namespaces | None = None) -> Iterator[FaultNet]:
    net = FaultNet(folder, base_port, spaces)
    try:
        net.start()
        yield net
    finally:
        net.stop()
