"""`carechain audit`: replay and verify a chain from genesis without trusting the node."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click
from rich.progress import Progress

from carechain.cli.output import console, emit_json, json_option
from carechain.config.genesis import GENESIS_FILE, load_genesis
from carechain.node.audit import AuditFailure, replay
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
