"""What an operator meets in a first hour, on real processes: a node that cannot start says so
at once, in one line naming what to fix, with the README's exit code."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.cli.nodes import Devnet, spawn, wait_for_api
from carechain.cli.output import EXIT_INVALID_INPUT
from carechain.config.genesis import load_genesis
from carechain.config.node import NodeConfig, load_node_config, save_node_config
from carechain.consensus.ledger.state_tree import ref_version
from carechain.node.wallet.client import Client
from carechain.storage import schema
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV, WriteBatch

START_TIMEOUT_S = 60
LATE_VOTES_PORT = 28100


@pytest.fixture
def home(tmp_path: Path) -> Path:
    result = CliRunner().invoke(
        cli,
        ["testnet", "--validators", "1", "--out", str(tmp_path / "net"), "--insecure-plaintext"],
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "net" / "node0"


@pytest.fixture
def taken(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, int]]:
    """A port another process-like owner listens on (TCP or UDP, as the test asks)."""
    kind = socket.SOCK_DGRAM if getattr(request, "param", "tcp") == "udp" else socket.SOCK_STREAM
    holder = socket.socket(socket.AF_INET, kind)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        holder.listen()
    try:
        yield holder, holder.getsockname()[1]
    finally:
        holder.close()


def _configure(home: Path, change: dict[str, dict[str, object]]) -> None:
    config = load_node_config(home)
    updates = {
        section: getattr(config, section).model_copy(update=fields)
        for section, fields in change.items()
    }
    save_node_config(home, NodeConfig.model_validate({**config.model_dump(), **updates}))


def _start(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carechain.cli", "start", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("key", "section", "field", "value"),
    [
        ("p2p.listen", "p2p", "listen", "/ip4/127.0.0.1/tcp/{port}"),
        ("api.listen", "api", "listen", "127.0.0.1:{port}"),
    ],
)
def test_a_port_another_process_listens_on_is_refused_in_one_line(
    home: Path, taken: tuple[socket.socket, int], key: str, section: str, field: str, value: str
) -> None:
    _, port = taken
    _configure(home, {section: {field: value.format(port=port)}})
    finished = _start(home)
    assert finished.returncode == EXIT_INVALID_INPUT, finished.stderr[-2000:]
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, finished.stderr[-2000:]
    assert f"{key} 127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in finished.stderr
    assert not (home / "data" / "api.address").exists()


@pytest.mark.parametrize("taken", ["udp"], indirect=True)
def test_a_heartbeat_port_in_use_is_refused_in_one_line(
    home: Path, taken: tuple[socket.socket, int]
) -> None:
    _, port = taken
    _configure(
        home,
        {"p2p": {"heartbeat_listen": f"127.0.0.1:{port}", "heartbeat_peers": ["127.0.0.1:9"]}},
    )
    finished = _start(home)
    assert finished.returncode == EXIT_INVALID_INPUT, finished.stderr[-2000:]
    assert f"p2p.heartbeat_listen 127.0.0.1:{port}" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_ctrl_c_while_a_node_starts_prints_no_traceback(home: Path) -> None:
    """SIGINT at several moments of the start: before the handler is set the process says it
    was interrupted (exit 130, or the interpreter ends by the signal itself, which a shell shows
    as 130 too); after, it stops cleanly (exit 0). Never a traceback."""
    for delay_s in (0.2, 0.6, 1.2):
        process = subprocess.Popen(
            [sys.executable, "-m", "carechain.cli", "start", "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()  # never left holding the ports the next test needs
            process.wait(30)  # not communicate(): its worker processes may hold the pipes open
            pytest.fail(f"SIGINT {delay_s} s into the start was not obeyed within the timeout")
        assert process.returncode in (0, 130, -signal.SIGINT), (delay_s, stderr[-2000:])
        assert "Traceback" not in stderr, (delay_s, stderr[-2000:])


def test_a_validator_genesis_does_not_list_follows_the_chain_and_says_so(
    tmp_path: Path, home: Path
) -> None:
    """The README's join path before governance adds the key: `init --validator` with the
    network's genesis. The node follows the chain without voting and says why at startup (it
    used to die with a KeyError after ~15 s); the network goes on."""
    joiner = tmp_path / "joiner"
    made = CliRunner().invoke(
        cli, ["init", "--home", str(joiner), "--validator", "--insecure-plaintext", "--json"]
    )
    assert made.exit_code == 0, made.output
    shutil.copy(home / "genesis.json", joiner / "genesis.json")
    joiner_id = json.loads(made.output)["node_id"]
    _configure(home, {"p2p": {"observers": [joiner_id]}})  # the network admits it
    validator = spawn(home, home / "node.log")
    try:
        serving = wait_for_api(home, validator)
        listen = load_node_config(home).p2p.listen.replace("0.0.0.0", "127.0.0.1")
        node0 = f"{listen}/p2p/{serving.status()['node_id']}"
        _configure(
            joiner,
            {
                "p2p": {"listen": "/ip4/127.0.0.1/tcp/0", "peers": [node0],
                        "heartbeat_listen": "127.0.0.1:0"},
                "api": {"listen": "127.0.0.1:0"},
            },
        )  # fmt: skip
        follower = spawn(joiner, joiner / "node.log")
        try:
            client = wait_for_api(joiner, follower)
            target = serving.status()["height"] + 3
            deadline = time.monotonic() + 60
            while client.status()["height"] < target:
                assert follower.poll() is None, (joiner / "node.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the joiner did not follow the chain"
                time.sleep(0.2)
            log = (joiner / "node.log").read_text()
            assert "not in the current validator set" in log
            assert "Traceback" not in log
        finally:
            follower.send_signal(signal.SIGTERM)
            assert follower.wait(30) == 0
        assert "stopped cleanly" in (joiner / "node.log").read_text()
    finally:
        validator.send_signal(signal.SIGTERM)
        validator.wait(30)


def test_the_audit_report_tells_late_votes_from_missed_ones(tmp_path: Path) -> None:
    """A certificate keeps the first quorum of precommits, so the fourth validator of four
    is absent from nearly every one although it voted: the audit report used to call that
    "missed" (45 of 45 for a live validator). Now each node keeps the precommits that come
    after its certificate, the report counts them as late, and only a validator that did not
    vote (here one that was killed) is missed."""
    devnet = Devnet(tmp_path / "net", 4, LATE_VOTES_PORT, heartbeat_interval_ms=1000)
    clients = devnet.start()
    victim = devnet.nodes[3].name
    try:
        _wait_for_height(clients[0], 6)
        devnet.kill(victim)
        killed_at = int(clients[0].status()["height"])
        _wait_for_height(clients[0], killed_at + 5)
        with urllib.request.urlopen(f"{clients[0].base_url}/metrics") as response:
            metrics = response.read().decode()
        late_series = [
            line for line in metrics.splitlines()
            if line.startswith("carechain_validator_late_votes_total{")
        ]  # fmt: skip
        assert late_series, metrics
    finally:
        devnet.stop()
    home = devnet.nodes[0].home
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["late_votes_kept"] is True
    rows = {row["name"]: row for row in report["participation"].values()}
    replayed = CliRunner().invoke(cli, ["audit", "replay", "--home", str(home), "--json"])
    heights = json.loads(replayed.output)["blocks"]
    for name, row in rows.items():
        assert row["signed"] + row["late"] + row["missed"] == heights, (name, row)
    assert sum(row["late"] for row in rows.values()) >= 1, rows
    assert rows[victim]["missed"] >= heights - killed_at - 1, (killed_at, heights, rows)
    table = CliRunner().invoke(cli, ["audit", "report", "--home", str(home)])
    assert "late" in table.output
    assert "missed" in table.output


def _wait_for_height(client: Client, height: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while int(client.status()["height"]) < height:
        assert time.monotonic() < deadline, f"height {height} not reached"
        time.sleep(0.1)


def test_a_tampered_state_tree_node_is_named_at_start(home: Path) -> None:
    """One bit changed in a tree node of a stopped node's data folder: the start walks the
    tree (`state.verify_on_start`, on by default), names the node and refuses to run."""
    genesis = load_genesis(home / "genesis.json")
    store = ChainStore.open(home / "data" / "chain", genesis)
    root = store.state.root_ref
    store.close()
    assert root is not None
    kv = LevelKV(home / "data" / "chain", create=False)
    try:
        key = schema.tree_node_key(ref_version(root), b"")
        value = kv.get(key)
        assert value is not None
        batch = WriteBatch()
        middle = len(value) // 2  # inside a child's hash: the root hashes otherwise
        batch.put(key, value[:middle] + bytes([value[middle] ^ 1]) + value[middle + 1 :])
        kv.write(batch)
    finally:
        kv.close()
    finished = _start(home)
    assert finished.returncode != 0, finished.stderr[-2000:]
    assert "tree node written at height 0 at path root" in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stderr
