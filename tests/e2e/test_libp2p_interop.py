"""End to end with another libp2p implementation: an observer written on js-libp2p (pinned in
tests/interop/libp2p) follows a 4-validator testnet of real processes. It dials a validator
over TCP, Noise and Yamux, receives committed blocks by GossipSub as valid messages under the
StrictNoSign policy, fetches a height range over `/carechain/sync/1`, and checks every block's
hash itself; the hashes must be the API's. The validator opens no message stream to it, and a
js peer nobody registered is refused at the handshake, with its cause counted.

Needs node and npm (the test installs the pinned packages); `make interop` runs it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carechain.cli.nodes import Devnet
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.node.wallet.client import Client
from carechain.tests.leaks import LEAKED_SOCKET
from carechain.tests.unixfs_blobs import interop_tools

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings(LEAKED_SOCKET)]
PORT = 28800
OBSERVER = PrivateKey(hashlib.sha256(b"carechain js-libp2p observer").digest())
STRANGER = PrivateKey(hashlib.sha256(b"carechain js-libp2p stranger").digest())


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, list[Client]]]:
    """Four validators; the first admits the js observer's peer id."""
    devnet = Devnet(tmp_path_factory.mktemp("js") / "net", 4, PORT, heartbeat_interval_ms=3000)
    first = devnet.nodes[0].home
    config = load_node_config(first)
    p2p = config.p2p.model_copy(update={"observers": [peer_id(OBSERVER.public_key)]})
    save_node_config(first, config.model_copy(update={"p2p": p2p}))
    clients = devnet.start()
    try:
        yield devnet, clients
    finally:
        devnet.stop()


def _observe(tools: Path, tmp_path: Path, key: PrivateKey, **config: Any) -> dict[str, Any]:
    """Run the js observer with `key` and `config`; its JSON report."""
    path = tmp_path / f"{peer_id(key.public_key)}.json"
    path.write_text(json.dumps({"seed": key.seed.hex(), **config}))
    done = subprocess.run(
        ["node", "observer.mjs", str(path)],
        cwd=tools, capture_output=True, text=True, timeout=config["seconds"] + 60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _wait_for_height(client: Client, height: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while int(client.status()["height"]) < height:
        assert time.monotonic() < deadline, f"height {height} not reached"
        time.sleep(0.2)


def _address(devnet: Devnet, client: Client) -> str:
    """The first validator's libp2p address, with its peer id."""
    listen = load_node_config(devnet.nodes[0].home).p2p.listen
    return f"{listen}/p2p/{client.status()['node_id']}"


def _api_hash(client: Client, height: int) -> str:
    return str(client.get(f"/v1/blocks/{height}")["hash"])


def test_a_js_libp2p_observer_follows_the_chain(
    network: tuple[Devnet, list[Client]], tmp_path: Path
) -> None:
    devnet, clients = network
    tools = interop_tools(tmp_path, "libp2p")
    api = clients[0]
    _wait_for_height(api, 3)
    address = _address(devnet, api)
    report = _observe(tools, tmp_path, OBSERVER, address=address, blocks=3, first=1, last=3,
                      seconds=60)  # fmt: skip
    assert report["error"] is None, report
    assert report["peer_id"] == peer_id(OBSERVER.public_key), "the same key, the same peer id"
    assert [b["height"] for b in report["sync"]] == [1, 2, 3], report
    assert len(report["gossip"]) >= 3, report
    for block in report["sync"] + report["gossip"]:
        assert block["hash"] == _api_hash(api, block["height"]), block
    assert report["message_streams"] == 0, "a validator opens message streams to validators only"
    assert report["score"] >= 0, "no message the validator sent counted against it"

    stranger = _observe(tools, tmp_path, STRANGER, address=address, blocks=1, first=1, last=1,
                        seconds=20)  # fmt: skip
    assert stranger["error"] is not None, stranger
    assert stranger["gossip"] == [], stranger
    assert stranger["sync"] == [], stranger
    metrics = api.request("GET", "/metrics", headers={"Accept": "text/plain"}).decode()
    refused = re.search(r'carechain_p2p_refused_peers_total\{cause="unregistered"\} (\d+)', metrics)
    assert refused is not None, metrics
    assert int(float(refused.group(1))) >= 1
    log = (devnet.nodes[0].home / "node.log").read_text()
    assert f"refused peer {peer_id(STRANGER.public_key)}: it is not registered" in log
