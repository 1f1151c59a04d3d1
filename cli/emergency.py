"""`carechain emergency`: open emergency access to a vault (a hospital and a trusted party),
review one afterwards, list a vault's."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome, vault_arg
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.consensus.ledger.records import (
    Emergency,
    EmergencyStatus,
)
from carechain.consensus.ledger.state import Table as StateTable
from carechain.node.wallet import builders
from carechain.node.wallet.client import RemoteState
from carechain.node.wallet.context import institution_names, unique_id


@click.group()
def emergency() -> None:
    """Break-glass access: a hospital and a trusted party together."""


@emergency.command("open")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--key", "key_name", required=True, help="The requesting hospital's key.")
@click.option("--trusted-key", help="A trusted party's key, if this home holds one.")
@click.option(
    "--reason",
    required=True,
    type=click.Choice(["unconscious", "life-threatening", "patient-unreachable", "mass-casualty"]),
)
@click.option("--hours", default=4, show_default=True, type=click.IntRange(1, 720))
@click.option("--note", default="")
@click.option(
    "--escrow-key",
    required=True,
    help="Trusted party key that unseals the epoch key for the hospital.",
)
@json_option
def emergency_open(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    key_name: str,
    trusted_key: str | None,
    reason: str,
    hours: int,
    note: str,
    escrow_key: str,
    as_json: bool,
) -> None:
    """Ask for emergency access (the trusted party co-signs with `tx cosign`)."""
    context = make_context(home, api, passphrase_file)
    hospital = context.key(key_name)
    vault_state = context.vault(vault_arg(vault_hex))
    epoch_key = context.epoch_key(vault_state, context.key(escrow_key))
    draft = builders.open_emergency(
        context.chain_id,
        vault_state.vault_id,
        context.nonce(vault_state.vault_id),
        context.expiry(),
        hospital=context.institution_of(hospital.public_key),  # as the chain names it
        epoch_key=epoch_key,
        reason=reason,
        duration_ms=hours * 3_600_000,
        note=note,
        sealing_key=hospital.public_key,  # the key it reads with now
    )
    signers = [hospital] + ([context.key(trusted_key)] if trusted_key else [])
    request = draft.signed(*signers)
    answer = context.send(request)
    report_outcome(answer, "emergency access", as_json=as_json, emergency_id=request.id.hex())


@emergency.command("review")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--id", "emergency_hex", required=True)
@click.option("--verdict", type=click.Choice(["appropriate", "inappropriate"]), required=True)
@click.option("--note", default="")
@click.option("--key", "key_names", multiple=True, required=True)
@json_option
def emergency_review(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    emergency_hex: str,
    verdict: str,
    note: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Review an emergency access (patient keys or a trusted party)."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    vault_id = vault_arg(vault_hex)
    on_vault = [
        found.emergency_id
        for _, value in RemoteState(context.client).table_entries(StateTable.EMERGENCY)
        if (found := Emergency.decode(value)).vault == vault_id
    ]
    emergency_id = unique_id(emergency_hex, on_vault, 32, "--id")  # whole, or as listed
    draft = builders.review_emergency(
        context.chain_id,
        vault_id,
        context.nonce(vault_id),
        context.expiry(),
        emergency_id=emergency_id,
        verdict=EmergencyStatus[verdict.upper()],
        note=note,
    )
    report_outcome(context.send(draft.signed(*keys)), "review", as_json=as_json)


@emergency.command("list")
@flow_options
@json_option
def emergency_list(
    home: Path, api: str | None, passphrase_file: Path | None, as_json: bool
) -> None:
    """Emergency accesses; unreviewed ones first."""
    context = make_context(home, api, passphrase_file)
    found = [
        Emergency.decode(v)
        for _, v in RemoteState(context.client).table_entries(StateTable.EMERGENCY)
    ]
    found.sort(key=lambda e: (e.status is not EmergencyStatus.UNREVIEWED, e.opened_height))
    rows = [
        {
            "id": e.emergency_id.hex(),
            "vault": e.vault.hex(),
            "hospital": e.hospital.hex(),
            "reason": e.reason,
            "opened_height": e.opened_height,
            "status": e.status.name.lower(),
        }
        for e in found
    ]
    if as_json:
        emit_json(rows)
        return
    names = institution_names(RemoteState(context.client))
    table = human_table("id (a prefix names it)", "vault", "hospital", "reason", "height", "status")
    for row in rows:
        style = "bold red" if row["status"] == "unreviewed" else ""
        hospital = str(row["hospital"])
        table.add_row(
            str(row["id"])[:16],
            str(row["vault"]),
            names.get(bytes.fromhex(hospital), hospital),
            str(row["reason"]),
            str(row["opened_height"]),
            str(row["status"]),
            style=style,
        )
    console.print(table)
