"""`carechain audit`: replay and verify a chain from genesis without trusting the node."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from carechain.cli.output import console, emit_json, json_option
from carechain.config.genesis import GENESIS_FILE, load_genesis
from carechain.consensus.crypto import decode_address
from carechain.node.access_report import fhir_bundle, timeline
from carechain.node.audit import AuditFailure, replay
from carechain.node.client import Client, RemoteState
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV

EXIT_FAILED = 1


@click.group()
def audit() -> None:
    """Verify the chain yourself."""


@audit.command("replay")
@click.option(
    "--home",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A stopped node's home (or a copy of it).",
)
@click.option(
    "--data",
    "data",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A chain directory (default: HOME/data/chain).",
)
@click.option(
    "--genesis",
    "genesis_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="genesis.json (default: HOME/genesis.json).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Signature-checking processes (default: all cores).",
)
@json_option
def audit_replay(
    home: Path | None,
    data: Path | None,
    genesis_path: Path | None,
    workers: int | None,
    as_json: bool,
) -> None:
    """Replay every block from genesis: hash links, proposers, certificates, signatures,
    policies, state roots. Exit 1 at the first failure, saying exactly where and what."""
    if home is None and (data is None or genesis_path is None):
        raise click.UsageError("give --home, or both --data and --genesis")
    genesis = load_genesis(genesis_path or home / GENESIS_FILE)  # type: ignore[operator]
    store = ChainStore(LevelKV(data or home / "data" / "chain", create=False))  # type: ignore[operator]
    try:
        with Progress(console=console, disable=as_json, transient=True) as bar:
            task = bar.add_task("replaying", total=store.height)
            try:
                report = replay(
                    store,
                    genesis,
                    workers=workers,
                    progress=lambda h, _: bar.update(task, completed=h),
                )
            except AuditFailure as failure:
                if as_json:
                    emit_json({"ok": False, "height": failure.height, "problem": str(failure)})
                else:
                    console.print(f"[red]FAILED[/red] {failure}")
                sys.exit(EXIT_FAILED)
    finally:
        store.close()
    if as_json:
        emit_json({"ok": True, **dataclasses.asdict(report)})
        return
    console.print(
        f"[green]verified[/green] {report.blocks} blocks, {report.txs} transactions, "
        f"{report.signatures} signatures in {report.seconds:.1f}s; "
        f"state root {report.state_root[:16]}"
    )


@audit.command("access")
@click.option("--patient", required=True, help="The patient's address (cc1...).")
@click.option(
    "--home",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A stopped node's home (or a copy).",
)
@click.option("--api", help="Read a running node through its API instead.")
@click.option(
    "--fhir",
    "fhir_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a FHIR R4 Bundle here.",
)
@json_option
def audit_access(
    home: Path | None, api: str | None, patient: str, fhir_path: Path | None, as_json: bool
) -> None:
    """The patient's access timeline: grants, reads, emergency accesses, erasures."""
    account = decode_address(patient)
    if api is not None:
        events = timeline(RemoteState(Client(api)), account)
    elif home is not None:
        store = ChainStore(LevelKV(home / "data" / "chain", create=False))
        try:
            events = timeline(store, account)
        finally:
            store.close()
    else:
        raise click.UsageError("give --home or --api")
    if fhir_path is not None:
        fhir_path.write_text(json.dumps(fhir_bundle(events, account), indent=2))
    if as_json:
        emit_json([dataclasses.asdict(e) | {"actor": e.actor.hex()} for e in events])
        return
    table = Table("height", "event", "who", "data", "details")
    for event in events:
        who = event.actor.hex()[:16] if event.actor else "patient"
        style = "bold red" if event.detail.get("status") == "unreviewed" else ""
        details = ", ".join(f"{k}={v}" for k, v in event.detail.items() if v not in (None, ""))
        table.add_row(
            str(event.height), event.kind, who, event.data_type, details[:80], style=style
        )
    console.print(table)
