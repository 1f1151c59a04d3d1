"""Generating an N-validator network on one machine: a home folder per node with its keys,
config and the shared genesis, wired to dial each other on loopback."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from carechain.config.genesis import GENESIS_FILE, save_genesis
from carechain.config.node import (
    APISection,
    ConsensusSection,
    LogSection,
    NodeConfig,
    P2PSection,
    save_node_config,
)
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import (
    ConsensusParams,
    Genesis,
    Institution,
    default_governance_threshold,
)
from carechain.consensus.types import Validator, ValidatorSet
from carechain.node.wallet.keystore import save_key
from carechain.storage.wal import mark_never_signed

LOCAL_TIMEOUTS = ConsensusSection(
    timeout_propose_ms=1500,
    timeout_prevote_ms=500,
    timeout_precommit_ms=500,
    timeout_delta_ms=250,
    timeout_commit_ms=50,
    timeout_ms_max=5000,
)


@dataclasses.dataclass(frozen=True)
class TestnetNode:
    name: str
    home: Path
    node_id: str
    p2p_port: int
    api_port: int

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def make_testnet(
    out: Path,
    validators: int,
    *,
    base_port: int = 26600,
    chain_id: str = "carechain-devnet",
    institutions: tuple[Institution, ...] = (),
    passphrase: str | None = None,
    heartbeat_interval_ms: int = 10_000,
    console: bool = False,
) -> list[TestnetNode]:
    """Write homes `out/node0..N-1`; `passphrase=None` writes unencrypted development keys;
    `console` turns on every node's web console."""
    if not 1 <= validators <= 64:
        raise InvalidInput("a testnet has 1 to 64 validators")
    if out.exists() and any(out.iterdir()):
        raise InvalidInput(f"{out} is not empty", hint="choose a new --out folder")
    node_keys = [PrivateKey.generate() for _ in range(validators)]
    validator_keys = [PrivateKey.generate() for _ in range(validators)]
    nodes = [
        TestnetNode(
            f"hospital-{index}",
            out / f"node{index}",
            peer_id(node_keys[index].public_key),
            base_port + 2 * index,
            base_port + 2 * index + 1,
        )
        for index in range(validators)
    ]
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000),
        validators=ValidatorSet.of(
            [
                Validator(node.name, validator_keys[i].public_key, node_keys[i].public_key, 10)
                for i, node in enumerate(nodes)
            ]
        ),
        governance_threshold=default_governance_threshold(validators),
        institutions=institutions,
        params=ConsensusParams(heartbeat_interval_ms=heartbeat_interval_ms),
        extra_data_types=(),
    )
    for index, node in enumerate(nodes):
        keys = node.home / "keys"
        save_key(keys / "node.json", node_keys[index], name="node", purpose="node", passphrase=None)
        save_key(
            keys / "validator.json",
            validator_keys[index],
            name="validator",
            purpose="validator",
            passphrase=passphrase,
        )
        save_node_config(node.home, _local_config(node, nodes, console))
        save_genesis(node.home / GENESIS_FILE, genesis)
        mark_never_signed(node.home / "data" / "wal")
    return nodes


def _local_config(node: TestnetNode, nodes: list[TestnetNode], console: bool) -> NodeConfig:
    """`node`'s configuration on this machine: loopback ports, every other node its peer."""
    others = [other for other in nodes if other is not node]
    return NodeConfig(
        moniker=node.name,
        validator=True,
        p2p=P2PSection(
            listen=f"/ip4/127.0.0.1/tcp/{node.p2p_port}",
            peers=[f"/ip4/127.0.0.1/tcp/{o.p2p_port}/p2p/{o.node_id}" for o in others],
            heartbeat_listen=f"127.0.0.1:{node.p2p_port + 1000}",
            heartbeat_peers=[f"127.0.0.1:{o.p2p_port + 1000}" for o in others],
        ),
        api=APISection(listen=f"127.0.0.1:{node.api_port}", console=console),
        consensus=LOCAL_TIMEOUTS,
        log=LogSection(level="info", format="json"),
    )
