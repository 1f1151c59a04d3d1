"""The node's own configuration: `<home>/config.toml`.

Each section has defaults (production), test defaults (`NodeConfig.for_tests`) and validation.
Local configuration tunes how this node runs (addresses, timeouts, limits); it never changes
what the chain accepts: that is genesis and chain state alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Self

import pydantic
import tomli_w

from carechain.config.loading import ConfigError, StrictModel, read_toml, validate, write_atomic
from carechain.consensus.crypto import public_key_from_peer_id
from carechain.consensus.errors import AddressError

CONFIG_FILE = "config.toml"

_MULTIADDR = re.compile(r"^/(ip4|ip6|dns4|dns6|dns)/([^/]+)/tcp/(\d{1,5})(?:/p2p/(\w+))?$")

PositiveMs = Annotated[int, pydantic.Field(ge=1, le=3_600_000)]


def parse_multiaddr(text: str, *, need_peer: bool) -> tuple[str, int, str | None]:
    """`/ip4/HOST/tcp/PORT[/p2p/PEERID]` -> (host, port, peer id)."""
    match = _MULTIADDR.match(text)
    if not match:
        raise ValueError(
            "expected /ip4/<host>/tcp/<port>" + ("/p2p/<peer id>" if need_peer else "")
        )
    proto, host, port_text, peer = match.groups()
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    if proto in ("ip4", "ip6"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
    if need_peer and peer is None:
        raise ValueError("the address must end with /p2p/<peer id> of the node to trust")
    if peer is not None:
        try:
            public_key_from_peer_id(peer)
        except AddressError as exc:
            raise ValueError(str(exc)) from None
    return host, port, peer


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("expected <host>:<port>, for example 127.0.0.1:26680")
    return host.strip("[]"), int(port_text)


def _each(field: str, values: list[str], parse: Callable[[str], object]) -> list[str]:
    """Check every entry of a list field with `parse`; the error names the entry."""
    for index, value in enumerate(values):
        try:
            parse(value)
        except (ValueError, AddressError) as exc:
            raise ValueError(f"{field}[{index}] {value!r}: {exc}") from None
    return values


class P2PSection(StrictModel):
    listen: str = "/ip4/0.0.0.0/tcp/26656"
    peers: list[str] = pydantic.Field(default_factory=list)
    heartbeat_listen: str = "0.0.0.0:26657"
    heartbeat_peers: list[str] = pydantic.Field(default_factory=list)  # other validators' host:port
    heartbeat_interval_ms: PositiveMs = 1000
    # Peer ids of non-validator nodes this node admits besides the validators: full nodes
    # (clinics, pharmacies; blocks and transactions reach them over GossipSub) and auditors
    # (`carechain audit replay --peer`). They never vote.
    observers: list[str] = pydantic.Field(default_factory=list)
    message_bytes_max: Annotated[int, pydantic.Field(ge=1024, le=64 * 1024 * 1024)] = (
        16 * 1024 * 1024
    )
    peer_messages_per_second_max: Annotated[int, pydantic.Field(ge=1, le=1_000_000)] = 5000

    @pydantic.field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_multiaddr(value, need_peer=False)
        return value

    @pydantic.field_validator("peers")
    @classmethod
    def _peers(cls, value: list[str]) -> list[str]:
        return _each("peers", value, lambda peer: parse_multiaddr(peer, need_peer=True))

    @pydantic.field_validator("observers")
    @classmethod
    def _observers(cls, value: list[str]) -> list[str]:
        return _each("observers", value, public_key_from_peer_id)

    @pydantic.field_validator("heartbeat_listen")
    @classmethod
    def _heartbeat(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @pydantic.field_validator("heartbeat_peers")
    @classmethod
    def _heartbeat_peers(cls, value: list[str]) -> list[str]:
        return _each("heartbeat_peers", value, parse_host_port)


class APISection(StrictModel):
    listen: str = "127.0.0.1:26680"
    console: bool = False
    body_bytes_max: Annotated[int, pydantic.Field(ge=1024, le=64 * 1024 * 1024)] = 4 * 1024 * 1024

    @pydantic.field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_host_port(value)
        return value


class BlobSection(StrictModel):
    backend: Annotated[str, pydantic.Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "fs"
    path: str = "blobs"  # fs backend, relative to home
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_env: str = "CARECHAIN_S3_ACCESS_KEY"
    s3_secret_key_env: str = "CARECHAIN_S3_SECRET_KEY"  # noqa: S105 - a variable name

    @pydantic.model_validator(mode="after")
    def _s3_complete(self) -> Self:
        if self.backend == "s3" and not (self.s3_endpoint and self.s3_bucket):
            raise ValueError("backend 's3' needs s3_endpoint and s3_bucket")
        return self


class LogSection(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class ConsensusSection(StrictModel):
    """Round timeouts (liveness only). Each grows with the round, by `timeout_delta_ms` times
    2^round - 1 (0, 1, 3, 7 steps...), and is capped at `timeout_ms_max`, so a slow network or
    a large block is waited for after a few rounds and a long outage never leaves a node
    waiting for hours."""

    timeout_propose_ms: PositiveMs = 3000
    timeout_prevote_ms: PositiveMs = 1000
    timeout_precommit_ms: PositiveMs = 1000
    timeout_delta_ms: Annotated[int, pydantic.Field(ge=0, le=600_000)] = 500
    timeout_commit_ms: Annotated[int, pydantic.Field(ge=0, le=600_000)] = 200
    timeout_ms_max: PositiveMs = 30_000

    @pydantic.model_validator(mode="after")
    def _capped(self) -> Self:
        for name in ("timeout_propose_ms", "timeout_prevote_ms", "timeout_precommit_ms"):
            if getattr(self, name) > self.timeout_ms_max:
                raise ValueError(f"{name} must not exceed timeout_ms_max ({self.timeout_ms_max})")
        return self


class MempoolSection(StrictModel):
    txs_max: Annotated[int, pydantic.Field(ge=1, le=1_000_000)] = 50_000
    bytes_max: Annotated[int, pydantic.Field(ge=1024, le=4 * 1024**3)] = 256 * 1024 * 1024
    partials_max: Annotated[int, pydantic.Field(ge=1, le=1_000_000)] = 10_000


class StateSection(StrictModel):
    """The state tree's history: the trees of the last `proof_heights_kept` heights stay whole,
    so a node proves an entry at any of them; older nodes are pruned as blocks commit."""

    proof_heights_kept: Annotated[int, pydantic.Field(ge=1, le=100_000_000)] = 1000
    # walk the whole tree at start: a tampered node or entry is named and the node refuses to
    # run on it (about 16 s per million entries on 2 cores); off, the start checks the root only
    verify_on_start: bool = True


class NodeConfig(StrictModel):
    moniker: Annotated[str, pydantic.Field(min_length=1, max_length=64)] = "carechain-node"
    validator: bool = False
    p2p: P2PSection = P2PSection()
    api: APISection = APISection()
    blobs: BlobSection = BlobSection()
    log: LogSection = LogSection()
    consensus: ConsensusSection = ConsensusSection()
    mempool: MempoolSection = MempoolSection()
    state: StateSection = StateSection()

    @classmethod
    def for_tests(cls, **overrides: object) -> NodeConfig:
        """Short timeouts and loopback addresses for tests and local networks."""
        base = cls(
            p2p=P2PSection(listen="/ip4/127.0.0.1/tcp/0", heartbeat_listen="127.0.0.1:0"),
            api=APISection(listen="127.0.0.1:0"),
            consensus=ConsensusSection(
                timeout_propose_ms=500,
                timeout_prevote_ms=200,
                timeout_precommit_ms=200,
                timeout_delta_ms=100,
                timeout_commit_ms=10,
                timeout_ms_max=5_000,
            ),
        )
        return base.model_copy(update=overrides)


def load_node_config(home: Path) -> NodeConfig:
    path = home / CONFIG_FILE
    return validate(NodeConfig, read_toml(path), path)


def save_node_config(home: Path, config: NodeConfig) -> Path:
    path = home / CONFIG_FILE
    text = tomli_w.dumps(config.model_dump(mode="json"))
    write_atomic(path, text)
    return path


__all__ = [
    "CONFIG_FILE",
    "APISection",
    "BlobSection",
    "ConfigError",
    "ConsensusSection",
    "LogSection",
    "MempoolSection",
    "NodeConfig",
    "P2PSection",
    "load_node_config",
    "parse_host_port",
    "parse_multiaddr",
    "save_node_config",
]
