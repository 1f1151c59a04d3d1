"""`carechain demo`: the paper's scenario, narrated and checked step by step.

Every step states what it does and checks its outcome against committed state; the command
exits 1 if any check fails. A patient with two keys keeps glucose, CGM and blood-pressure vaults;
readings arrive from home; hospital A files a multi-MB CGM report that the patient's agent
co-signs by rule; hospital B is granted glucose access, reads (receipts go on chain) and is
revoked; hospital C and the trusted party open an emergency access that is then reviewed; the
patient's access timeline is printed and a replay reproduces every state root. Blocks are
committed by a single-process chain until the validator network runs the same ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import click

from carechain.cli.demo.burst import clinic_burst
from carechain.cli.demo.gateway import gateway
from carechain.cli.demo.guardians import guardian_and_renewed_key
from carechain.cli.demo.ledger import Ledger
from carechain.cli.demo.recovery import recovery
from carechain.cli.demo.steps import (
    Story,
    audit,
    cgm_report,
    emergency,
    grant_and_read,
    home_readings,
    revoke,
    validator_down,
    vaults,
)
from carechain.cli.demo.verified import verified_reads
from carechain.cli.nodes import Devnet
from carechain.cli.output import console
from carechain.config.genesis import load_genesis
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus import crypto
from carechain.consensus.crypto import peer_id
from carechain.consensus.errors import AddressError, InvalidInput
from carechain.consensus.genesis import (
    Institution,
    InstitutionKind,
)
from carechain.node.wallet.client import Client, api_address
from carechain.node.wallet.keystore import KdfParams, load_key, save_key

CHAIN_ID = "carechain-demo"
CGM_REPORT_BYTES = 3 * 1024 * 1024


@dataclasses.dataclass
class Scenario:
    """Narrates steps and records every check; `failures` decides the exit code."""

    failures: list[str] = dataclasses.field(default_factory=list)
    step_number: int = 0

    def step(self, title: str) -> None:
        self.step_number += 1
        console.print(f"\n[bold cyan]{self.step_number}. {title}[/bold cyan]")

    def say(self, text: str) -> None:
        console.print(f"   {text}")

    def check(self, ok: bool, claim: str) -> None:
        mark = "[green]ok[/green]  " if ok else "[red]FAIL[/red]"
        console.print(f"   {mark} {claim}")
        if not ok:
            self.failures.append(claim)


@dataclasses.dataclass(frozen=True)
class Cast:
    patient_keys: tuple[crypto.PrivateKey, crypto.PrivateKey]
    hospitals: dict[str, crypto.PrivateKey]
    trusted_party: crypto.PrivateKey
    validator_keys: tuple[crypto.PrivateKey, ...]
    node_keys: tuple[crypto.PrivateKey, ...]
    clinic: crypto.PrivateKey  # a clinic's system, an admitted non-validator p2p peer


def _cast() -> Cast:
    return Cast(
        patient_keys=(crypto.PrivateKey.generate(), crypto.PrivateKey.generate()),
        hospitals={name: crypto.PrivateKey.generate() for name in ("A", "B", "C")},
        trusted_party=crypto.PrivateKey.generate(),
        validator_keys=tuple(crypto.PrivateKey.generate() for _ in range(4)),
        node_keys=tuple(crypto.PrivateKey.generate() for _ in range(4)),
        clinic=crypto.PrivateKey.generate(),
    )


def _identities(scenario: Scenario, cast: Cast, folder: Path) -> None:
    scenario.step("Identities: a patient with two keys, hospitals A, B, C and a trusted party")
    passphrase = "demo passphrase"  # noqa: S105 - a demo's throwaway keystore
    path = folder / "patient-key-1.json"
    save_key(
        path,
        cast.patient_keys[0],
        name="patient-1",
        purpose="account",
        passphrase=passphrase,
        kdf=KdfParams(),
    )
    reopened = load_key(path, passphrase)
    scenario.check(
        reopened.public_key == cast.patient_keys[0].public_key,
        "the patient's key survives an argon2id-encrypted keystore round trip",
    )
    try:
        load_key(path, "wrong passphrase")
        scenario.check(False, "a wrong passphrase is refused")
    except InvalidInput as exc:
        scenario.check(exc.code == "wrong_passphrase", f"a wrong passphrase is refused: {exc}")
    address = crypto.encode_address(crypto.account_id(cast.patient_keys[0].public_key))
    scenario.say(f"patient address {address}")
    typo = address[:10] + ("q" if address[10] != "q" else "p") + address[11:]
    try:
        crypto.decode_address(typo)
        scenario.check(False, "a mistyped address is detected")
    except AddressError:
        scenario.check(True, "a one-character typo in the address is detected by its checksum")


def _institutions(cast: Cast) -> tuple[Institution, ...]:
    return (
        *(
            Institution(f"hospital-{n.lower()}", InstitutionKind.HOSPITAL, k.public_key)
            for n, k in cast.hospitals.items()
        ),
        Institution("trusted-party", InstitutionKind.TRUSTED_PARTY, cast.trusted_party.public_key),
    )


def _network(scenario: Scenario, cast: Cast, folder: Path, base_port: int) -> Devnet:
    scenario.step("A 4-validator hospital network starts: 4 node processes over libp2p on loopback")
    network = Devnet(
        folder / "network",
        4,
        base_port,
        chain_id=CHAIN_ID,
        institutions=_institutions(cast),
        heartbeat_interval_ms=5_000,
        console=True,
    )
    for node in network.nodes:  # every hospital admits the clinic's system as a p2p peer
        config = load_node_config(node.home)
        p2p = config.p2p.model_copy(update={"observers": [peer_id(cast.clinic.public_key)]})
        save_node_config(node.home, config.model_copy(update={"p2p": p2p}))
    clients = network.start()
    genesis = load_genesis(network.nodes[0].home / "genesis.json")
    scenario.say(f"chain {genesis.chain_id}, genesis {genesis.genesis_hash.hex()[:16]}")
    for node, client in zip(network.nodes, clients, strict=True):
        scenario.say(f"{node.name}: node {node.node_id[:20]}... API {client.base_url}")
    scenario.check(genesis.governance_threshold == 3, "governance needs 3 of the 4 validators")
    deadline = time.monotonic() + 30
    while min(len(c.status()["peers"]) for c in clients) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    scenario.check(
        all(len(c.status()["peers"]) == 3 for c in clients),
        "every node is connected to the other three",
    )
    return network


@click.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's files here (default: a temporary folder, removed afterwards).",
)
@click.option("--base-port", default=26900, show_default=True, type=click.IntRange(1024, 65000))
@click.option(
    "--stay",
    is_flag=True,
    help="Afterwards keep the network and the web console up until Ctrl-C.",
)
def demo(folder: Path | None, base_port: int, stay: bool) -> None:
    """Run the paper's scenario on a local 4-validator network; exit 1 if any check fails."""
    started = time.monotonic()
    scenario = Scenario()
    cast = _cast()
    with tempfile.TemporaryDirectory(prefix="carechain-demo-") as temporary:
        where = folder or Path(temporary)
        where.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]carechain demo[/bold]: files in {where}")
        _identities(scenario, cast, where)
        network = _network(scenario, cast, where, base_port)
        agent: subprocess.Popen[bytes] | None = None
        try:
            _story(scenario, cast, network)
            agent = _console(scenario, cast, network, where, base_port)
            if stay:
                console.print("the network and the console stay up: Ctrl-C stops them")
                with contextlib.suppress(KeyboardInterrupt):
                    while agent.poll() is None:
                        time.sleep(1)
        finally:
            if agent is not None:
                agent.terminate()
                agent.wait(30)
            network.stop()
    elapsed = time.monotonic() - started
    if scenario.failures:
        console.print(f"\n[red]{len(scenario.failures)} check(s) failed[/red] in {elapsed:.1f}s")
        sys.exit(1)
    console.print(f"\n[green]all checks passed[/green] in {elapsed:.1f}s")


def _console(
    scenario: Scenario, cast: Cast, network: Devnet, where: Path, base_port: int
) -> subprocess.Popen[bytes]:
    """The web console: hospital A's operator view on its node; the patient's view on the
    node the patient's phone uses, with the patient's agent holding the patient's keys."""
    scenario.step("The web console: the patient's view (through the patient's agent) and A's")
    home = where / "patient-agent"
    for index, key in enumerate(cast.patient_keys, start=1):
        name = f"patient-{index}"  # unencrypted: a demo's throwaway keys, on this machine only
        save_key(home / "keys" / f"{name}.json", key, name=name, purpose="account", passphrase=None)
    (home / "rules.toml").write_text("")
    patient_api = api_address(network.nodes[3].home)
    agent_address = f"127.0.0.1:{base_port + 90}"
    with (where / "patient-agent.log").open("wb") as log:
        agent = subprocess.Popen(  # noqa: S603 - our interpreter and module
            [sys.executable, "-m", "carechain.cli", "agent", "--home", str(home),
             "--api", patient_api, "--rules", str(home / "rules.toml"), "--key", "patient-1",
             "--other-key", "patient-2", "--serve", agent_address],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    hospital_api = api_address(network.nodes[0].home)
    scenario.say(f"patient:  {patient_api}/console/?agent=http://{agent_address}#/patient")
    scenario.say(f"hospital: {hospital_api}/console/#/operator")
    with urllib.request.urlopen(f"{hospital_api}/console/", timeout=10) as page:  # noqa: S310
        served = page.read().decode()
    scenario.check("console.js" in served, "the console is served by the hospital's node")
    return agent


def _burst(scenario: Scenario, cast: Cast, network: Devnet) -> None:
    validators = {
        n.node_id: f"/ip4/127.0.0.1/tcp/{n.p2p_port}/p2p/{n.node_id}" for n in network.nodes
    }
    clients = [Client(api_address(n.home)) for n in network.nodes]
    clinic_burst(scenario.step, scenario.say, scenario.check, cast.clinic, validators, clients)


def _story(scenario: Scenario, cast: Cast, network: Devnet) -> None:
    homes = {
        name: network.nodes[index].home for index, name in enumerate(("A", "B", "C", "patient"))
    }
    clients = {name: Client(api_address(home)) for name, home in homes.items()}
    genesis = load_genesis(homes["A"] / "genesis.json")
    ledger = Ledger(genesis, clients["patient"])
    story = Story(
        check=scenario.check,
        say=scenario.say,
        step=scenario.step,
        patient=cast.patient_keys,
        hospital=cast.hospitals,
        trusted=cast.trusted_party,
        ledger=ledger,
        clients=clients,
        kill=lambda name: network.kill(network.nodes["ABC".index(name)].name),
    )
    for step in (
        vaults,
        home_readings,
        cgm_report,
        gateway,
        grant_and_read,
        revoke,
        emergency,
        lambda _: _burst(scenario, cast, network),
        validator_down,
        recovery,
        guardian_and_renewed_key,
        verified_reads,
    ):
        step(story)
    names = {k.public_key: f"hospital {n}" for n, k in cast.hospitals.items()}
    audit(story, names)
