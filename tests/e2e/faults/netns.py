"""Validators in Linux network namespaces, for faults that need the kernel: each node runs in
its own namespace with one address on a shared bridge, and a partition is a pair of
blackhole routes (packets between the two sides are dropped silently, as a cut cable would;
established connections stall instead of closing). The test process reaches every node's API
through the bridge.

Needs root and iproute2 (`ip netns`, bridges, veth pairs). This kernel has no `netem`
queueing discipline, so delay and loss are not injected here (the simulator covers them)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

from carechain.config.node import load_node_config, save_node_config

SUBNET = "10.231"


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"ccprobe{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def _ip(*args: str, namespace: str | None = None) -> None:
    command = ["ip", *args] if namespace is None else ["ip", "-n", namespace, *args]
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.decode().strip()}")


class Namespaces:
    """`count` namespaces on one bridge: node i has address SUBNET.<net>.<i+1>."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
        self.net = 1 + os.getpid() % 250
        self.bridge = f"ccbr{tag}"
        self.names = [f"cc{tag}n{i}" for i in range(count)]
        self.blocked: set[tuple[int, int]] = set()

    def address(self, index: int) -> str:
        return f"{SUBNET}.{self.net}.{index + 1}"

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SUBNET}.{self.net}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for index, name in enumerate(self.names):
            outside, inside = f"{name}h", f"{name}c"
            _ip("netns", "add", name)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", name)
            _ip("link", "set", outside, "master", self.bridge)
            _ip("link", "set", outside, "up")
            _ip("addr", "add", f"{self.address(index)}/24", "dev", inside, namespace=name)
            _ip("link", "set", inside, "up", namespace=name)
            _ip("link", "set", "lo", "up", namespace=name)

    def down(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

    def command(self, index: int) -> list[str]:
        """The prefix that runs a command inside node `index`'s namespace."""
        return ["ip", "netns", "exec", self.names[index]]

    def split(self, *sides: list[int]) -> None:
        """Cut every link between nodes on different sides."""
        for one, other in itertools.combinations(sides, 2):
            for a, b in itertools.product(one, other):
                self._route("add", a, b)
                self._route("add", b, a)
                self.blocked |= {(a, b), (b, a)}

    def heal(self) -> None:
        for a, b in sorted(self.blocked):
            self._route("del", a, b)
        self.blocked.clear()

    def _route(self, verb: str, at: int, to: int) -> None:
        _ip("route", verb, "blackhole", f"{self.address(to)}/32", namespace=self.names[at])


def readdress(homes: list[Path], spaces: Namespaces) -> None:
    """Point a testnet's configs at the namespace addresses (same ports as on loopback)."""
    for index, home in enumerate(homes):
        config = load_node_config(home)
        own = spaces.address(index)
        p2p = config.p2p.model_copy(
            update={
                "listen": config.p2p.listen.replace("127.0.0.1", own),
                "peers": [_moved(p, homes, spaces) for p in config.p2p.peers],
                "heartbeat_listen": config.p2p.heartbeat_listen.replace("127.0.0.1", own),
                "heartbeat_peers": [_moved(p, homes, spaces) for p in config.p2p.heartbeat_peers],
            }
        )
        api = config.api.model_copy(update={"listen": config.api.listen.replace("127.0.0.1", own)})
        save_node_config(home, config.model_copy(update={"p2p": p2p, "api": api}))


def _moved(address: str, homes: list[Path], spaces: Namespaces) -> str:
    """A loopback peer address of the testnet, rewritten to that peer's namespace address:
    the peer is found by its port (each node's ports are distinct)."""
    for index, home in enumerate(homes):
        config = load_node_config(home)
        ports = {config.p2p.listen.rsplit("/", 1)[-1], config.p2p.heartbeat_listen.rsplit(":")[-1]}
        port = (
            address.split("/tcp/")[1].split("/", maxsplit=1)[0]
            if "/tcp/" in address
            else address.rsplit(":", maxsplit=1)[-1]
        )
        if port in ports:
            return address.replace("127.0.0.1", spaces.address(index))
    raise ValueError(f"{address}: not an address of this testnet")
