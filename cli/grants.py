"""`carechain grant`: give an institution access to a vault, revoke it, list a vault's
grants."""

from __future__ import annotations

import time
from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome, vault_arg
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.consensus.ledger.records import (
    Grant,
)
from carechain.consensus.ledger.state import Table as StateTable
from carechain.node.wallet.client import RemoteState
from carechain.node.wallet.context import institution_names, public_key_arg, unique_id
from carechain.node.wallet.patient_actions import grant_access, revoke_grant


@click.group()
def grant() -> None:
    """Time-limited access grants."""


@grant.command("add")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--grantee", required=True, help="The institution's public key (hex).")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650))
@click.option("--purpose", default="TREAT", show_default=True)
@click.option("--write", is_flag=True, help="Also allow the grantee to add records.")
@click.option(
    "--key", "key_names", multiple=True, required=True, help="Admin key names (both patient keys)."
)
@json_option
def grant_add(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    grantee: str,
    days: int,
    purpose: str,
    write: bool,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Grant an institution access to a vault for a number of days."""
    grantee_key = public_key_arg(grantee, "--grantee")  # before any key is opened
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    tx = grant_access(
        context, keys, vault_arg(vault_hex), grantee_key, days=days, purpose=purpose, write=write
    )
    report_outcome(context.send(tx), "grant", as_json=as_json, grant_id=tx.id.hex())
    if not as_json:
        console.print(f"grant id {tx.id.hex()}")


@grant.command("revoke")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--grant", "grant_hex", required=True)
@click.option("--key", "key_names", multiple=True, required=True)
@json_option
def grant_revoke(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    grant_hex: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Revoke a grant; the vault's epoch rotates to the remaining readers."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    vault_id = vault_arg(vault_hex)
    on_vault = [
        Grant.decode(value).grant_id
        for _, value in RemoteState(context.client).table_entries(StateTable.GRANT)
        if Grant.decode(value).vault == vault_id
    ]
    grant_id = unique_id(grant_hex, on_vault, 32, "--grant")  # whole, or as `grant list` shows
    answer = context.send_sealed(lambda: revoke_grant(context, keys, vault_id, grant_id))
    report_outcome(answer, "grant revoked, epoch rotated", as_json=as_json)


@grant.command("list")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@json_option
def grant_list(
    home: Path, api: str | None, passphrase_file: Path | None, vault_hex: str, as_json: bool
) -> None:
    """Grants of a vault."""
    context = make_context(home, api, passphrase_file)
    vault_id = vault_arg(vault_hex)
    rows = []
    for _, value in RemoteState(context.client).table_entries(StateTable.GRANT):
        found = Grant.decode(value)
        if found.vault == vault_id:
            rows.append(
                {
                    "grant": found.grant_id.hex(),
                    "grantee": found.grantee.hex(),
                    "access": found.access.name.lower(),
                    "until_ms": found.valid_until_ms,
                    "purpose": found.purpose,
                    "revoked_height": found.revoked_height,
                    "emergency": bool(found.emergency_id),
                }
            )
    if as_json:
        emit_json(rows)
        return
    names = institution_names(RemoteState(context.client))
    table = human_table(
        "grant (a prefix names it)", "grantee", "access", "until", "purpose", "revoked"
    )
    for row in rows:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(row["until_ms"]) / 1000))  # type: ignore[call-overload]
        table.add_row(
            str(row["grant"])[:16],
            names.get(bytes.fromhex(str(row["grantee"])), str(row["grantee"])),
            str(row["access"]),
            until,
            str(row["purpose"]),
            str(row["revoked_height"] or ""),
        )
    console.print(table)
