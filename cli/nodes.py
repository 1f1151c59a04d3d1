"""Commands that create and run nodes: `testnet`, `start`, `devnet`, `status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from carechain.cli.keys import HOME_ENVIRONMENT_VARIABLE, HOME_OPTION
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.cli.passphrase import ENVIRONMENT_VARIABLE, obtain_passphrase, passphrase_option
from carechain.config.node import load_node_config
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Institution
from carechain.node.runner import run
from carechain.node.testnet import TestnetNode, make_testnet
from carechain.node.wallet.client import Client, NodeUnreachable, api_address
from carechain.node.wallet.keystore import read_key_info


@click.command()
@click.option("--validators", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-port", default=26600, show_default=True, type=click.IntRange(1024, 65000))
@click.option("--chain-id", default="carechain-devnet", show_default=True)
@click.option("--insecure-plaintext", is_flag=True, help="Development only: unencrypted keys.")
@passphrase_option
@json_option
def testnet(
    validators: int,
    out: Path,
    base_port: int,
    chain_id: str,
    insecure_plaintext: bool,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Generate homes for an N-validator network on this machine."""
    passphrase = None if insecure_plaintext else obtain_passphrase(passphrase_file, confirm=True)
    nodes = make_testnet(
        out, validators, base_port=base_port, chain_id=chain_id, passphrase=passphrase
    )
    if as_json:
        emit_json([{"home": str(n.home), "node_id": n.node_id, "api": n.api_url} for n in nodes])
        return
    table = human_table("home", "node id", "p2p port", "API")
    for node in nodes:
        table.add_row(str(node.home), node.node_id, str(node.p2p_port), node.api_url)
    console.print(table)
    console.print(f"start each with: carechain start --home {out}/nodeN")


@click.command()
@HOME_OPTION
@passphrase_option
def start(home: Path, passphrase_file: Path | None) -> None:
    """Run a node in the foreground (Ctrl-C or SIGTERM stops it cleanly)."""
    config = load_node_config(home)
    needs_passphrase = config.validator and _encrypted(home / "keys" / "validator.json")
    passphrase = obtain_passphrase(passphrase_file, confirm=False) if needs_passphrase else None
    run(home, passphrase)


def _encrypted(path: Path) -> bool:
    return read_key_info(path).encrypted


def spawn(
    home: Path,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `carechain start --home HOME` as a child process logging to `log_path`, with
    `extra_env` added to its environment and the command after `prefix` (a wrapper such as
    `ip netns exec NAME`)."""
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [*prefix, sys.executable, "-m", "carechain.cli", "start", "--home", str(home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                ENVIRONMENT_VARIABLE: os.environ.get(ENVIRONMENT_VARIABLE, ""),
                **(extra_env or {}),
            },
        )


def wait_for_api(
    home: Path, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 60
) -> Client:
    """The client of a starting node, once its API answers; a node that exits first is an
    error that quotes the end of its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            log = (home / "node.log").read_text(errors="replace")[-2000:]
            raise NodeUnreachable(f"the node at {home} exited with {process.returncode}:\n{log}")
        try:
            client = Client(api_address(home), timeout_s=10)
            client.status()
            return client
        except NodeUnreachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Devnet:
    """N validator processes on loopback; stop() terminates them with SIGTERM."""

    def __init__(
        self,
        folder: Path,
        validators: int,
        base_port: int,
        *,
        chain_id: str = "carechain-devnet",
        institutions: tuple[Institution, ...] = (),
        heartbeat_interval_ms: int = 10_000,
        console: bool = False,
    ) -> None:
        self.nodes: list[TestnetNode] = make_testnet(
            folder,
            validators,
            base_port=base_port,
            chain_id=chain_id,
            institutions=institutions,
            heartbeat_interval_ms=heartbeat_interval_ms,
            console=console,
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> list[Client]:
        """Start every node and wait for their APIs; if one cannot start, the others are
        stopped too before the error goes on."""
        for node in self.nodes:
            self.processes[node.name] = spawn(node.home, node.home / "node.log")
        try:
            return [wait_for_api(node.home, self.processes[node.name]) for node in self.nodes]
        except BaseException:
            self.stop()
            raise

    def terminate(self, name: str, timeout_s: float = 30) -> int:
        """SIGTERM one node and wait for it; its exit code."""
        process = self.processes[name]
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout_s)

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(30)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@click.command()
@click.option("--validators", default=4, show_default=True, type=click.IntRange(1, 16))
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base-port", default=26600, show_default=True, type=click.IntRange(1024, 65000))
def devnet(validators: int, folder: Path | None, base_port: int) -> None:
    """Generate a local network and run every node as a child process until Ctrl-C."""
    folder = folder or Path(tempfile.mkdtemp(prefix="carechain-devnet-"))
    network = Devnet(folder, validators, base_port)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        clients = network.start()
        for node, client in zip(network.nodes, clients, strict=True):
            console.print(f"{node.name}: API {client.base_url}  home {node.home}")
        console.print("running; Ctrl-C stops every node")
        while not stop and all(p.poll() is None for p in network.processes.values()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        network.stop()
        console.print("stopped")


def node_options(function: click.decorators.FC) -> click.decorators.FC:
    """`--home` or `--api`: which running node a read command asks."""
    function = click.option("--api", help="The node's API URL (instead of --home).")(function)
    return click.option(
        "--home",
        envvar=HOME_ENVIRONMENT_VARIABLE,
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The node's home.",
    )(function)


def node_client(home: Path | None, api: str | None) -> Client:
    """The client of the node `node_options` named."""
    if home is None and api is None:
        raise InvalidInput("give --home (a running node's home) or --api (its URL)")
    return Client(api or api_address(home or Path()))


def node_status(home: Path | None, api: str | None) -> dict[str, Any]:
    report: dict[str, Any] = node_client(home, api).status()
    return report


@click.command()
@node_options
@json_option
def status(home: Path | None, api: str | None, as_json: bool) -> None:
    """A running node's status (of the node of --home, or at --api)."""
    report = node_status(home, api)
    if as_json:
        emit_json(report)
        return
    for key in (
        "chain_id",
        "height",
        "head_hash",
        "state_root",
        "round",
        "syncing",
        "mempool",
        "partials",
    ):
        console.print(f"{key:>10}  {report[key]}")
    console.print(
        f"{'peers':>10}  {len(report['peers'])}: {', '.join(p[-8:] for p in report['peers'])}"
    )
    console.print(f"{'validators':>10}  {', '.join(v['name'] for v in report['validators'])}")


@click.command()
@node_options
@json_option
def validators(home: Path | None, api: str | None, as_json: bool) -> None:
    """The validators of the node's next height, and whether the node is linked to each."""
    report = node_status(home, api)
    linked = set(report["peers"])
    rows = [
        {**v, "linked": v["node_id"] in linked or v["node_id"] == report["node_id"]}
        for v in report["validators"]
    ]
    if as_json:
        emit_json(rows)
        return
    table = human_table("name", "power", "node id", "linked", "public key")
    for row in rows:
        mine = row["node_id"] == report["node_id"]
        linked_text = "this node" if mine else ("yes" if row["linked"] else "NO")
        table.add_row(
            row["name"], str(row["power"]), row["node_id"], linked_text, row["public_key"]
        )
    console.print(table)


@click.command()
@node_options
@json_option
def peers(home: Path | None, api: str | None, as_json: bool) -> None:
    """The peers the node is linked to, named where they are validators, with the heights
    their heartbeats showed."""
    report = node_status(home, api)
    names = {v["node_id"]: v["name"] for v in report["validators"]}
    beats = report.get("heartbeats", {})
    rows = [
        {"node_id": peer, "validator": names.get(peer), "heartbeat": beats.get(peer)}
        for peer in report["peers"]
    ]
    if as_json:
        emit_json(rows)
        return
    table = human_table("node id", "validator", "heartbeat height")
    for row in rows:
        beat = row["heartbeat"]
        table.add_row(row["node_id"], row["validator"] or "-", str(beat["height"]) if beat else "-")
    console.print(table)


__all__ = [
    "Devnet",
    "InvalidInput",
    "devnet",
    "peers",
    "start",
    "status",
    "testnet",
    "validators",
]
