"""Running a node from its home folder: config, genesis and keys in; the libp2p network, the
node and its HTTP API up; JSON logs; a clean stop on SIGINT or SIGTERM (the commit in
progress finishes, the stores close). The event loop is uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import socket
import sys
from importlib import metadata
from pathlib import Path

import structlog
import uvloop

from carechain.config.genesis import GENESIS_FILE, load_genesis
from carechain.config.node import NodeConfig, load_node_config, parse_host_port, parse_multiaddr
from carechain.consensus.crypto import peer_id
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.poa.limits import EncodedLimits
from carechain.node.api.app import Api, serve
from carechain.node.collector import tuned_collector
from carechain.node.daemon import Node
from carechain.node.wallet.keystore import load_key
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.storage.chain import ChainStore

API_ADDRESS_FILE = "api.address"


class PortInUse(InvalidInput):
    code = "port_in_use"


def _port_taken(key: str, host: str, port: int, exc: OSError) -> PortInUse:
    return PortInUse(
        f"{key} {host}:{port} cannot be listened on: {exc.strerror or exc}",
        hint=f"another process (another node?) holds it: stop it, or set {key} in config.toml "
        "to a free port",
    )


def check_ports_free(config: NodeConfig) -> None:
    """Refuse at once, naming the config key, when another process already listens on one of
    the node's ports. The libp2p listener would otherwise share a TCP port with another node
    without a word, and the API or heartbeat socket would fail only after the stores opened.
    Each probe binds as the listener will and closes again (port 0 picks a free one)."""
    host, port, _ = parse_multiaddr(config.p2p.listen, need_peer=False)
    probes = [("p2p.listen", host, port, socket.SOCK_STREAM)]
    probes.append(("api.listen", *parse_host_port(config.api.listen), socket.SOCK_STREAM))
    if config.p2p.heartbeat_peers:
        host, port = parse_host_port(config.p2p.heartbeat_listen)
        probes.append(("p2p.heartbeat_listen", host, port, socket.SOCK_DGRAM))
    for key, host, port, kind in probes:
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as TCP listeners do (a UDP one does not)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise _port_taken(key, host, port, exc) from None


def configure_logging(config: NodeConfig) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if config.log.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(config.log.level.upper())


def log_tasks() -> None:
    """What every task of the node is waiting on, to the log (`kill -USR1 <pid>`): for an
    operator whose node seems stuck."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=out)
    logging.getLogger("carechain.node").warning("tasks on SIGUSR1:\n%s", out.getvalue())


def build_node(home: Path, passphrase: str | None) -> Node:
    config = load_node_config(home)
    check_ports_free(config)
    genesis = load_genesis(home / GENESIS_FILE)
    node_key = load_key(home / "keys" / "node.json", None)
    validator_key = (
        load_key(home / "keys" / "validator.json", passphrase) if config.validator else None
    )
    store = ChainStore.open(home / "data" / "chain", genesis)
    registered = {peer_id(v.node_key) for v in validator_set_at(store, store.height + 1).validators}
    store.close()
    network = Libp2pNetwork(
        node_key,
        config.p2p.listen,
        dial=list(config.p2p.peers),
        allowed=(registered | set(config.p2p.observers)) - {peer_id(node_key.public_key)},
        # what the chain's genesis lets a peer send, or more if the config says so
        frame_bytes_max=max(
            config.p2p.message_bytes_max, EncodedLimits.of(genesis.params).frame_bytes
        ),
        messages_per_second_max=config.p2p.peer_messages_per_second_max,
    )
    return Node(home, config, genesis, node_key, validator_key, network, warm_workers=True)


async def run_node(home: Path, passphrase: str | None, stop: asyncio.Event | None = None) -> None:
    node = build_node(home, passphrase)
    configure_logging(node.config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, log_tasks)
    host, port = parse_host_port(node.config.api.listen)
    try:
        runner = await serve(Api(node), host, port)
    except OSError as exc:  # taken since the probe: the process ends, the stores with it
        raise _port_taken("api.listen", host, port, exc) from None
    bound = runner.addresses[0]
    address_file = home / "data" / API_ADDRESS_FILE
    address_file.write_text(f"http://{bound[0]}:{bound[1]}\n")
    log = logging.getLogger("carechain.node")
    api_url = f"http://{bound[0]}:{bound[1]}"
    log.info("API listening on %s", api_url)
    try:
        await node.run(stop, ready=lambda: log.info("%s", startup_summary(node, api_url)))
    finally:
        address_file.unlink(missing_ok=True)
        await runner.cleanup()
    log.info("stopped cleanly at height %d", node.stopped_height)


def role(node: Node) -> str:
    """What this node does in the network, as its operator should read it at startup."""
    if node.engine.key is None:
        return "full node (follows the chain, does not vote)"
    current = validator_set_at(node.store, node.store.height + 1)
    if node.engine.key.public_key not in current.by_key:
        return (
            "validator key not in the current validator set: follows the chain without "
            "voting until governance adds it"
        )
    if node.signing.held:
        return "validator, holding its signature until the chain passes its lost history"
    return "validator"


def startup_summary(node: Node, api_url: str) -> str:
    """One line with what an operator checks first: version, chain, identity, role, where it
    listens and whom it dials."""
    listen = ", ".join(getattr(node.network, "listen_addrs", ())[:4]) or node.config.p2p.listen
    try:
        version = metadata.version("carechain")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        version = "(not installed)"
    return (
        f"carechain {version} started: chain {node.genesis.chain_id} at "
        f"height {node.store.height}, node id {node.node_id}, {role(node)}; p2p {listen}; "
        f"{len(node.config.p2p.peers)} peers configured, "
        f"{len(node.config.p2p.observers)} observers admitted; API {api_url}"
    )


def run(home: Path, passphrase: str | None) -> None:
    with tuned_collector():
        try:
            uvloop.run(run_node(home, passphrase))
        except KeyboardInterrupt:
            # Ctrl-C before the node's own handler is set (while the stores open): the process
            # ends here, and LevelDB and the WAL need nothing more to stay whole
            print("interrupted while starting; nothing to clean up", file=sys.stderr)
            raise SystemExit(130) from None
