"""Several real `Node`s in one process over the in-memory network, each with its own home
folder, stores and HTTP API on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from carechain.config.genesis import load_genesis
from carechain.config.node import APISection, NodeConfig, P2PSection
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.genesis import Genesis, Institution
from carechain.node.api.app import Api, serve
from carechain.node.daemon import Node
from carechain.node.testnet import LOCAL_TIMEOUTS, make_testnet
from carechain.node.wallet.keystore import load_key
from carechain.p2p.memory import MemoryHub, MemoryNetwork


@dataclasses.dataclass
class Member:
    node: Node
    stop: asyncio.Event
    task: asyncio.Task[None]
    runner: web.AppRunner

    @property
    def url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"


@dataclasses.dataclass
class Cluster:
    folder: Path
    hub: MemoryHub = dataclasses.field(default_factory=MemoryHub)
    members: list[Member] = dataclasses.field(default_factory=list)
    observers: tuple[str, ...] = ()  # peer ids every node admits as read-only observers

    async def start_node(self, home: Path) -> Member:
        genesis = load_genesis(home / "genesis.json")
        node_key = load_key(home / "keys" / "node.json", None)
        validator_key = load_key(home / "keys" / "validator.json", None)
        return await self._start(home, genesis, node_key, validator_key, list(self.observers))

    async def start_full_node(
        self, name: str, node_key: PrivateKey, admits: tuple[str, ...] = ()
    ) -> Member:
        """A non-validator node (a clinic's): the first validator's genesis, its own key; it
        admits `admits` (other full nodes) besides the validators."""
        home = self.folder / name
        home.mkdir()
        genesis = load_genesis(self.members[0].node.home / "genesis.json")
        return await self._start(home, genesis, node_key, None, list(admits))

    async def _start(
        self,
        home: Path,
        genesis: Genesis,
        node_key: PrivateKey,
        validator_key: PrivateKey | None,
        observers: list[str],
    ) -> Member:
        config = NodeConfig(
            moniker=home.name,
            validator=validator_key is not None,
            consensus=LOCAL_TIMEOUTS,
            api=APISection(listen="127.0.0.1:0"),
            p2p=P2PSection(observers=observers),
        )
        network = MemoryNetwork(self.hub, peer_id(node_key.public_key))
        node = Node(home, config, genesis, node_key, validator_key, network)
        runner = await serve(Api(node), "127.0.0.1", 0)
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(node.run(stop, ready.set))
        await asyncio.wait_for(ready.wait(), 30)
        member = Member(node, stop, task, runner)
        self.members.append(member)
        return member

    async def stop_member(self, member: Member) -> None:
        member.stop.set()
        await asyncio.wait_for(member.task, 30)
        await member.runner.cleanup()
        self.members.remove(member)

    async def close(self) -> None:
        for member in list(self.members):
            with contextlib.suppress(Exception):
                await self.stop_member(member)


async def eventually(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_cluster(
    folder: Path,
    validators: int = 4,
    institutions: tuple[Institution, ...] = (),
    observers: tuple[str, ...] = (),
) -> AsyncIterator[Cluster]:
    homes = [n.home for n in make_testnet(folder, validators, institutions=institutions)]
    cluster = Cluster(folder, observers=observers)
    try:
        for home in homes:
            await cluster.start_node(home)
        await eventually(
            lambda: all(len(m.node.network.peers()) == validators - 1 for m in cluster.members)
        )
        yield cluster
    finally:
        await cluster.close()


def hospital_keys(count: int) -> list[PrivateKey]:
    return [PrivateKey(bytes([200 + i]) * 32) for i in range(count)]
