"""`carechain tx`: partial transactions waiting for co-signatures: list them, co-sign one,
and report a transaction's outcome."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from carechain.cli.context import flow_options, make_context
from carechain.cli.output import console, emit_json, json_option
from carechain.consensus.errors import InvalidInput
from carechain.consensus.types import Tx
from carechain.node.wallet.context import hex_bytes
from carechain.node.wallet.patient_actions import cosignature


@click.group()
def tx() -> None:
    """Transactions and co-signing."""


@tx.command("show")
@flow_options
@click.argument("tx_id")
@json_option
def txreport_outcome(
    home: Path, api: str | None, passphrase_file: Path | None, tx_id: str, as_json: bool
) -> None:
    """A transaction's status: committed, pending, partial or rejected."""
    context = make_context(home, api, passphrase_file)
    status = context.client.tx_status(hex_bytes(tx_id, 32, "TX_ID"))
    if as_json:
        emit_json(status)
    else:
        for key, value in status.items():
            console.print(f"{key:>9}  {value}")


@tx.command("pending")
@flow_options
@click.option("--key", "key_name", help="Only partials still waiting for this key.")
@json_option
def tx_pending(
    home: Path, api: str | None, passphrase_file: Path | None, key_name: str | None, as_json: bool
) -> None:
    """Partial transactions waiting for co-signatures."""
    context = make_context(home, api, passphrase_file)
    awaiting = context.key(key_name).public_key if key_name else None
    partials = context.client.partials(awaiting)
    if as_json:
        emit_json(partials)
        return
    table = Table("id", "kind", "account", "signed by")
    for partial in partials:
        table.add_row(
            partial["id"][:16],
            partial["kind"],
            partial["account"][:16],
            ", ".join(s[:8] for s in partial["signers"]),
        )
    console.print(table)


@tx.command("cosign")
@flow_options
@click.argument("tx_id")
@click.option("--key", "key_name", required=True)
def tx_cosign(
    home: Path, api: str | None, passphrase_file: Path | None, tx_id: str, key_name: str
) -> None:
    """Add this key's signature to a partial transaction."""
    context = make_context(home, api, passphrase_file)
    key = context.key(key_name)
    wanted = hex_bytes(tx_id, 32, "TX_ID").hex()
    partial = next((p for p in context.client.partials() if p["id"] == wanted), None)
    if partial is None:
        raise InvalidInput(f"no partial transaction {tx_id} waits at this node")
    transaction = Tx.decode(bytes.fromhex(partial["tx"]))
    answer = context.client.cosign(transaction.id, cosignature(key, transaction))
    console.print(f"co-signed; the transaction is {answer['status']}")
