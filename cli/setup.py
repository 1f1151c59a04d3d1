"""`carechain init` (a node's home: keys and config) and `carechain config check`."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import click

from carechain.cli.keys import HOME_OPTION, info_json
from carechain.cli.output import console, emit_json, json_option, plural
from carechain.cli.passphrase import obtain_passphrase, passphrase_option
from carechain.config.genesis import GENESIS_FILE, load_genesis, save_genesis
from carechain.config.node import (
    CONFIG_FILE,
    NodeConfig,
    load_node_config,
    parse_host_port,
    save_node_config,
)
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import ConsensusParams, Genesis, default_governance_threshold
from carechain.consensus.types import Validator, ValidatorSet
from carechain.node.wallet.keystore import key_path, read_key_info, save_key
from carechain.storage.blobs.backends import installed_backends
from carechain.storage.wal import mark_never_signed

NODE_KEY = "node"
VALIDATOR_KEY = "validator"


@click.command()
@HOME_OPTION
@click.option("--moniker", default="carechain-node", show_default=True, help="This node's name.")
@click.option("--validator/--no-validator", default=False, help="Create a validator key.")
@click.option(
    "--new-chain",
    metavar="CHAIN_ID",
    help="Also write a genesis.json for a new one-validator network with this chain id.",
)
@click.option("--genesis-time-ms", type=int, default=None, hidden=True)
@click.option("--insecure-plaintext", is_flag=True, help="Development only: unencrypted keys.")
@passphrase_option
@json_option
def init(
    home: Path,
    moniker: str,
    validator: bool,
    new_chain: str | None,
    genesis_time_ms: int | None,
    insecure_plaintext: bool,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Create a node's home: node key, optional validator key, config.toml."""
    if (home / CONFIG_FILE).exists():
        raise InvalidInput(f"{home / CONFIG_FILE} exists already; this home is initialised")
    if new_chain and not validator:
        raise InvalidInput("--new-chain needs --validator: a network needs a validator")
    passphrase = None if insecure_plaintext else obtain_passphrase(passphrase_file, confirm=True)
    node_key = PrivateKey.generate()
    # The node key is the p2p identity the daemon needs unattended, like CometBFT's
    # node_key.json; it protects no data, so it is stored unencrypted with mode 0600.
    save_key(key_path(home, NODE_KEY), node_key, name=NODE_KEY, purpose="node", passphrase=None)
    summary: dict[str, object] = {"home": str(home), "node_id": peer_id(node_key.public_key)}
    if validator:
        validator_key = PrivateKey.generate()
        info = save_key(
            key_path(home, VALIDATOR_KEY),
            validator_key,
            name=VALIDATOR_KEY,
            purpose="validator",
            passphrase=passphrase,
        )
        summary["validator"] = info_json(info)
        if new_chain:
            genesis = Genesis(
                chain_id=new_chain,
                genesis_time_ms=genesis_time_ms or int(time.time() * 1000),
                validators=ValidatorSet.of(
                    [Validator(moniker[:64], validator_key.public_key, node_key.public_key, 10)]
                ),
                governance_threshold=default_governance_threshold(1),
                institutions=(),
                params=ConsensusParams(),
                extra_data_types=(),
            )
            save_genesis(home / GENESIS_FILE, genesis)
            summary["genesis_hash"] = genesis.genesis_hash.hex()
    save_node_config(home, NodeConfig(moniker=moniker, validator=validator))
    mark_never_signed(home / "data" / "wal")
    if as_json:
        emit_json(summary)
        return
    console.print(f"initialised [bold]{home}[/bold]")
    console.print(f"  node id       {summary['node_id']}")
    if validator:
        console.print(f"  validator key {validator_key.public_key.hex()}")
    if new_chain:
        console.print(f"  genesis       {home / GENESIS_FILE} (chain {new_chain})")
    else:
        console.print(f"  next: copy the network's {GENESIS_FILE} into {home}")


@click.group()
def config() -> None:
    """Inspect and validate configuration."""


@config.command("check")
@HOME_OPTION
@json_option
def config_check(home: Path, as_json: bool) -> None:
    """Validate config.toml and genesis.json, and that they fit this home's keys; print what
    they say. Exit 3 if the node could not run as configured."""
    node_config = load_node_config(home)
    genesis = load_genesis(home / GENESIS_FILE)
    errors, warnings = home_problems(home, node_config, genesis)
    report = {
        "config": node_config.model_dump(mode="json"),
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.genesis_hash.hex(),
        "validators": [
            {"name": v.name, "power": v.power, "node_id": peer_id(v.node_key)}
            for v in genesis.validators.validators
        ],
        "errors": errors,
        "warnings": warnings,
    }
    if as_json:
        emit_json(report)
    else:
        _print_check(home, node_config, genesis, warnings)
    if errors:
        raise InvalidInput("; ".join(errors))


def _print_check(
    home: Path, node_config: NodeConfig, genesis: Genesis, warnings: list[str]
) -> None:
    console.print(f"{home / CONFIG_FILE}: ok (moniker {node_config.moniker})")
    console.print(
        f"{home / GENESIS_FILE}: ok (chain {genesis.chain_id}, "
        f"{plural(len(genesis.validators.validators), 'validator')}, "
        f"hash {genesis.genesis_hash.hex()[:16]})"
    )
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def home_problems(home: Path, config: NodeConfig, genesis: Genesis) -> tuple[list[str], list[str]]:
    """What stops this home's node from running as configured (errors), and what it will do
    that the operator may not expect (warnings)."""
    errors: list[str] = []
    warnings: list[str] = []
    if config.blobs.backend not in installed_backends():
        errors.append(
            f"blobs.backend {config.blobs.backend!r} is not an installed backend "
            f"({', '.join(sorted(installed_backends()))})"
        )
    api_host, _ = parse_host_port(config.api.listen)
    if not _loopback(api_host):
        warnings.append(
            f"api.listen {config.api.listen} is reachable from other machines and the API has no "
            "authentication yet: keep it on 127.0.0.1 or behind a firewall"
        )
    if not config.validator:
        return errors, warnings
    try:
        validator_key = read_key_info(key_path(home, VALIDATOR_KEY)).public_key
        node_key = read_key_info(key_path(home, NODE_KEY)).public_key
    except InvalidInput as exc:
        errors.append(str(exc))
        return errors, warnings
    if (home / "data" / "chain").exists():
        # governance may have changed the set since genesis: the running node says what it
        # is at startup (see `carechain validators`); genesis is no judge here any more
        return errors, warnings
    listed = genesis.validators.by_key.get(validator_key)
    if listed is None:
        warnings.append(
            f"this home's validator key {validator_key.hex()[:16]}... is not in genesis's "
            "validator set: the node follows the chain without voting until governance adds it"
        )
    elif listed.node_key != node_key:
        errors.append(
            f"genesis lists validator {listed.name!r} with node id {peer_id(listed.node_key)}, "
            f"but this home's node key is {peer_id(node_key)}: the other validators would refuse "
            "its connections (copy the home's keys/node.json that genesis was made with)"
        )
    return errors, warnings
