"""`carechain audit`: replay and verify a chain from genesis without trusting the node."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from carechain.cli.light import light_options, verified_read
from carechain.cli.output import (
    EXIT_FAILED,
    console,
    emit_json,
    error_console,
    human_table,
    json_option,
)
from carechain.cli.passphrase import passphrase_option, unlock_key
from carechain.config.genesis import GENESIS_FILE, load_genesis, parse_genesis, save_genesis
from carechain.config.node import parse_multiaddr
from carechain.consensus.crypto import decode_address, encode_address
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger import queries
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.records import Emergency, EmergencyStatus, Evidence, Recovery, Vault
from carechain.consensus.ledger.state import StateReader
from carechain.consensus.ledger.state import Table as StateTable
from carechain.node.audit.access_report import (
    AccessEvent,
    fhir_bundle,
    readable_by_revoked,
    timeline,
)
from carechain.node.audit.archive import ArchiveSource, ChainReport, export_archive, import_archive
from carechain.node.audit.observer import observe
from carechain.node.audit.replay import AuditFailure, ChainSource, check_blobs, replay
from carechain.node.collector import tuned_collector
from carechain.node.light.client import Verified
from carechain.node.wallet.client import ApiChain, Client, RemoteState
from carechain.node.wallet.context import institution_names
from carechain.node.wallet.recovery_actions import recovery_summary
from carechain.storage.blobs.backends import FsObjects
from carechain.storage.blobs.store import BlobStore
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV, MemoryKV
from carechain.storage.state import StateStore


@click.group()
def audit() -> None:
    """Verify the chain yourself."""


ARCHIVE = click.option(
    "--archive",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A carechain archive (from `carechain export`).",
)
HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A stopped node's home (or a copy of it).",
)
DATA = click.option(
    "--data",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="A chain directory (default: HOME/data/chain).",
)
GENESIS = click.option(
    "--genesis",
    "genesis_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="genesis.json (default: HOME/genesis.json).",
)


def _source(
    home: Path | None,
    data: Path | None,
    genesis_path: Path | None,
    archive: Path | None,
    api: str | None = None,
    peer: str | None = None,
    key_file: Path | None = None,
    passphrase_file: Path | None = None,
) -> tuple[ChainSource, Genesis, Callable[[], None]]:
    """Where a replay reads from, its genesis, and how to close it."""
    if archive is not None:
        source = ArchiveSource(archive)
        return source, source.genesis, lambda: None
    if api is not None or peer is not None:
        # The node serves only blocks and certificates; the genesis (the trust anchor)
        # must be the auditor's own copy, never one fetched from the node under audit.
        if genesis_path is None:
            raise click.UsageError("--api and --peer need --genesis: your own copy of genesis.json")
        genesis = load_genesis(genesis_path)
        if api is not None:
            return ApiChain(Client(api)), genesis, lambda: None
        assert peer is not None
        try:
            parse_multiaddr(peer, need_peer=True)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--peer") from None
        if key_file is None:
            raise click.UsageError("--peer needs --key-file: the key the node admits as observer")
        key = unlock_key(key_file, passphrase_file)
        error_console.print(f"syncing from {peer} as an observer ...", soft_wrap=True)
        return asyncio.run(observe(key, peer)), genesis, lambda: None
    if home is None and (data is None or genesis_path is None):
        raise click.UsageError("give --home, --archive, or both --data and --genesis")
    genesis = load_genesis(genesis_path or home / GENESIS_FILE)  # type: ignore[operator]
    store = ChainStore(LevelKV(data or home / "data" / "chain", create=False))  # type: ignore[operator]
    return store, genesis, store.close


@audit.command("replay")
@ARCHIVE
@HOME
@DATA
@GENESIS
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    help="Signature-checking processes (default: all cores).",
)
@click.option(
    "--blobs",
    "blob_folder",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also check every record's blob in this fs blob store (e.g. HOME/blobs).",
)
@click.option(
    "--api",
    help="Read blocks from a running node's API (e.g. http://127.0.0.1:26680); needs --genesis.",
)
@click.option(
    "--peer",
    help="Sync over libp2p as an observer from /ip4/H/tcp/P/p2p/ID; needs --genesis, --key-file.",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="With --peer: your key file; the node must list its peer id under p2p.observers.",
)
@passphrase_option
@json_option
def audit_replay(
    archive: Path | None,
    home: Path | None,
    data: Path | None,
    genesis_path: Path | None,
    workers: int | None,
    blob_folder: Path | None,
    api: str | None,
    peer: str | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    as_json: bool,
) -> None:
    """Replay every block from genesis: hash links, proposers, certificates, signatures,
    policies, state roots. Exit 1 at the first failure, saying exactly where and what."""
    store, genesis, close = _source(
        home, data, genesis_path, archive, api, peer, key_file, passphrase_file
    )
    try:
        with Progress(console=console, disable=as_json, transient=True) as bar:
            task = bar.add_task("replaying", total=store.height)
            try:
                rebuilt = StateStore(MemoryKV(), heights_kept=1)
                with tuned_collector():
                    report = replay(
                        store,
                        genesis,
                        workers=workers,
                        # A live node keeps committing, so its current state is not the
                        # state at the replayed head; every header's state root was
                        # checked instead.
                        compare_state=archive is None and api is None and peer is None,
                        progress=lambda h, _: bar.update(task, completed=h),
                        into=rebuilt,
                    )
                if blob_folder is not None:
                    blobs = BlobStore(FsObjects(blob_folder))
                    found = asyncio.run(check_blobs(rebuilt, blobs))
                    if found.broken:
                        raise AuditFailure(report.blocks, None, "; ".join(found.broken))
                    report.blobs_checked, report.blobs_missing = found.checked, found.missing
            except AuditFailure as failure:
                if as_json:
                    emit_json({"ok": False, "height": failure.height, "problem": str(failure)})
                else:
                    console.print(f"[red]FAILED[/red] {failure}")
                sys.exit(EXIT_FAILED)
    finally:
        close()
    if as_json:
        emit_json({"ok": True, **dataclasses.asdict(report)})
        return
    console.print(
        f"[green]verified[/green] {report.blocks} blocks, {report.txs} transactions, "
        f"{report.signatures} signatures in {report.seconds:.1f}s; "
        f"state root {report.state_root[:16]}"
    )
    if blob_folder is not None:
        console.print(
            f"blobs: {report.blobs_checked} present and whole; {len(report.blobs_missing)} "
            "named on chain but never held by this store (not damage: fetch them from the "
            "hospital that holds them to check them too)"
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
        client = Client(api)
        remote = RemoteState(client)
        data_types = ChainContext.from_genesis(
            parse_genesis(client.get("/v1/genesis"), f"{api}/v1/genesis")
        ).data_types
        events, names = timeline(remote, account, data_types), institution_names(remote)
    elif home is not None:
        data_types = ChainContext.from_genesis(load_genesis(home / GENESIS_FILE)).data_types
        store = ChainStore(LevelKV(home / "data" / "chain", create=False))
        try:
            events, names = timeline(store, account, data_types), institution_names(store)
        finally:
            store.close()
    else:
        raise click.UsageError("give --home or --api")
    if fhir_path is not None:
        fhir_path.write_text(json.dumps(fhir_bundle(events, account), indent=2))
    if as_json:
        emit_json([dataclasses.asdict(e) | {"actor": e.actor.hex()} for e in events])
        return
    _print_timeline(events, names)


def _print_timeline(events: list[AccessEvent], names: dict[bytes, str]) -> None:
    table = human_table("height", "event", "who", "data", "details")
    for event in events:
        who = names.get(event.actor, event.actor.hex()) if event.actor else "patient"
        style = "bold red" if event.detail.get("status") in ("unreviewed", "pending") else ""
        details = ", ".join(f"{k}={v}" for k, v in event.detail.items() if v not in (None, ""))
        table.add_row(str(event.height), event.kind, who, event.data_type, details, style=style)
    console.print(table)


Sample = tuple[dict[bytes, Vault], list[AccessEvent], dict[bytes, str]]


@audit.command("sample")
@click.option("--patient", required=True, help="The patient's address (cc1...).")
@light_options
@click.option(
    "--fhir",
    "fhir_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the verified timeline as a FHIR R4 Bundle here.",
)
@json_option
def audit_sample(
    patient: str,
    apis: tuple[str, ...],
    genesis_path: Path,
    home: Path,
    trusting_period_days: int,
    fhir_path: Path | None,
    as_json: bool,
) -> None:
    """One patient's whole access history, verified with proofs instead of a full replay:
    every grant, read, emergency access, erasure and pending recovery of every vault the
    patient has, each entry proved against a header trusted from your genesis, the list proved
    whole (a node that hides one is refused, exit 1)."""
    account = decode_address(patient)
    genesis = load_genesis(genesis_path)
    data_types = ChainContext.from_genesis(genesis).data_types

    def read(state: StateReader) -> Sample:
        events = timeline(state, account, data_types)
        names = queries.institution_names(state, (e.actor for e in events))
        return queries.patient_vaults(state, account, data_types), events, names

    path = f"/v1/accounts/{account.hex()}/timeline"
    found: Verified[Sample] = verified_read(
        apis, genesis_path, home, trusting_period_days, lambda c: c.query(path, read)
    )
    vaults, events, names = found.value
    trusted = found.trusted
    if fhir_path is not None:
        fhir_path.write_text(json.dumps(fhir_bundle(events, account), indent=2))
    if as_json:
        emit_json(
            {
                "patient": patient,
                "vaults": sorted(v.data_type for v in vaults.values()),
                "events": [dataclasses.asdict(e) | {"actor": e.actor.hex()} for e in events],
                "names": {key.hex(): name for key, name in names.items()},
                "height": trusted.height,
                "signed_power": trusted.signed_power,
                "total_power": trusted.total_power,
                "entries_proved": found.entries,
            }
        )
        return
    kinds = ", ".join(sorted(v.data_type for v in vaults.values())) or "none"
    console.print(f"vaults: {kinds}")
    _print_timeline(events, names)
    console.print(
        f"{len(events)} events, proved whole by {found.entries} entries; {trusted.verified_by()}"
    )


@audit.command("report")
@click.option("--archive", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--home", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--genesis", "genesis_path", type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@json_option
def audit_report(
    archive: Path | None,
    home: Path | None,
    data: Path | None,
    genesis_path: Path | None,
    as_json: bool,
) -> None:
    """After a verified replay: validators' participation, round changes, evidence,
    governance history, emergency accesses (unreviewed ones highlighted)."""
    source, genesis, close = _source(home, data, genesis_path, archive)
    report = ChainReport()
    rebuilt = StateStore(MemoryKV(), heights_kept=1)
    try:
        replay(
            source, genesis, observer=report.observe, compare_state=archive is None, into=rebuilt
        )
    except AuditFailure as failure:
        console.print(f"[red]FAILED[/red] {failure}")
        sys.exit(EXIT_FAILED)
    finally:
        close()
    evidence = [Evidence.decode(v) for _, v in rebuilt.table_entries(StateTable.EVIDENCE)]
    pending = [
        {"patient": encode_address(account), **recovery_summary(Recovery.decode(raw))}
        for account, raw in rebuilt.table_entries(StateTable.RECOVERY)
    ]
    stale = readable_by_revoked(rebuilt)
    emergencies = sorted(
        (Emergency.decode(v) for _, v in rebuilt.table_entries(StateTable.EMERGENCY)),
        key=lambda e: (e.status is not EmergencyStatus.UNREVIEWED, e.opened_height),
    )
    document = {
        "participation": {k: dataclasses.asdict(v) for k, v in report.participation.items()},
        "late_votes_kept": report.late_votes_kept,
        "heights_with_round_changes": report.heights_with_round_changes,
        "max_round": report.max_round,
        "evidence": [
            {"validator": e.validator.hex(), "height": e.height, "round": e.round} for e in evidence
        ],
        "governance": report.governance,
        "recoveries": report.recoveries,
        "pending_recoveries": pending,
        "readable_by_revoked": stale,
        "emergencies": [
            {
                "id": e.emergency_id.hex(),
                "hospital": e.hospital.hex(),
                "reason": e.reason,
                "height": e.opened_height,
                "status": e.status.name.lower(),
            }
            for e in emergencies
        ],
    }
    if as_json:
        emit_json(document)
    else:
        _print_report(report, evidence, emergencies)
        _print_recoveries(report, pending)
        _print_readable_by_revoked(stale)


def _print_recoveries(report: ChainReport, pending: list[dict[str, Any]]) -> None:
    """Recoveries of lost patient keys: each step, and any still pending in red (a patient
    who did not start it should cancel it with a key it still holds)."""
    console.print(f"key-loss recoveries: {len(report.recoveries)} step(s), {len(pending)} pending")
    for step in report.recoveries:
        console.print(
            f"  height {step['height']}: {step['kind']} of {step['patient']} "
            f"({len(step['signers'])} signers)"
        )
    for entry in pending:
        console.print(
            f"  PENDING ({entry['path']} path) for {entry['patient']}: key {entry['lost'][:16]}... "
            f"to {entry['replacement'][:16]}..., may finish from {entry['ready_ms']} ms",
            style="bold red",
        )


def _print_readable_by_revoked(stale: list[dict[str, Any]]) -> None:
    """Vaults a revoked institution could still decrypt new records of, in red: the patient
    (or its agent) should rotate their epochs."""
    console.print(f"vaults still readable by a revoked institution's key: {len(stale)}")
    for entry in stale:
        keys = ", ".join(f"{key[:16]}..." for key in entry["revoked_keys"])
        console.print(
            f"  {entry['data_type']} vault {entry['vault']} of {entry['patient']} "
            f"(epoch {entry['epoch']}): held by {keys}",
            style="bold red",
        )


def _print_report(
    report: ChainReport, evidence: list[Evidence], emergencies: list[Emergency]
) -> None:
    table = human_table("validator", "proposed", "signed", "late", "missed")
    for row in report.participation.values():
        table.add_row(row.name, str(row.proposed), str(row.signed), str(row.late), str(row.missed))
    console.print(table)
    if report.late_votes_kept:
        console.print(
            "(signed: in the certificate, the first quorum of precommits; late: its precommit "
            "came after, before the next height was decided, as this node recorded it; missed: "
            "no precommit)"
        )
    else:
        console.print(
            "(this source keeps certificates only, the first quorum of precommits: missed "
            "counts late votes too; audit a node's home or API to tell them apart)"
        )
    changes = report.heights_with_round_changes
    console.print(f"heights needing more than one round: {changes} (max round {report.max_round})")
    console.print(f"evidence: {len(evidence)}; governance changes: {len(report.governance)}")
    for change in report.governance:
        console.print(
            f"  height {change['height']}: {change['change']} "
            f"(in effect from height {change['effective_height']}, {change['signers']} signers)"
        )
    for emergency in emergencies:
        status = emergency.status.name.lower()
        text = f"emergency at height {emergency.opened_height}: {emergency.reason}, {status}"
        console.print(text, style="bold red" if status == "unreviewed" else "")


@click.command("export")
@click.option(
    "--home", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "first", default=1, show_default=True, type=click.IntRange(1))
@click.option("--to", "last", default=2**62, type=click.IntRange(1))
@json_option
def export(home: Path, out: Path, first: int, last: int, as_json: bool) -> None:
    """Write blocks and certificates (with the genesis) to a portable archive."""
    if out.exists():
        raise InvalidInput(
            f"{out} exists already; not overwriting it", hint="remove it or choose another --out"
        )
    genesis = load_genesis(home / GENESIS_FILE)
    store = ChainStore(LevelKV(home / "data" / "chain", create=False))
    try:
        written = export_archive(store, genesis, out, first, last)
    finally:
        store.close()
    if as_json:
        emit_json({"blocks": written, "out": str(out)})
    else:
        console.print(f"wrote {written} blocks to {out}")


@click.command("import")
@click.option(
    "--archive", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option("--home", required=True, type=click.Path(file_okay=False, path_type=Path))
@json_option
def import_(archive: Path, home: Path, as_json: bool) -> None:
    """Verify an archive by replaying it, then write it into HOME/data/chain."""
    source = ArchiveSource(archive)
    try:
        replay(source, source.genesis, compare_state=False)
    except AuditFailure as failure:
        console.print(f"[red]refused[/red]: {failure}")
        sys.exit(EXIT_FAILED)
    height = import_archive(source, home / "data" / "chain")
    save_genesis(home / GENESIS_FILE, source.genesis)
    if as_json:
        emit_json({"height": height, "home": str(home)})
    else:
        console.print(f"imported and verified {height} blocks into {home}")
