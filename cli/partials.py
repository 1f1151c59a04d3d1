"""`carechain tx`: partial transactions waiting for co-signatures: list them, co-sign one,
and report a transaction's outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import click
from rich.table import Column

from carechain.cli.context import flow_options, make_context
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.consensus.errors import InvalidInput
from carechain.consensus.types import Tx
from carechain.node.wallet.context import hex_bytes
from carechain.node.wallet.patient_actions import cosignature

PREFIX_MIN: Final = 8  # hex characters of an id that name a partial


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
    table = human_table(
        Column("id", no_wrap=True),  # never folded: `tx cosign` takes this prefix
        "kind",
        "what it does",
        "signed by",
        "still needs one of",
    )
    for partial in partials:
        table.add_row(
            partial["id"][:16],
            partial["kind"] + (f" ({partial['problem']})" if partial["problem"] else ""),
            summary(partial["body"]),
            ", ".join(s[:8] for s in partial["signers"]),
            ", ".join(s[:8] for s in partial["needs"]),
        )
    console.print(table)


def summary(body: object, depth: int = 0) -> str:
    """A decoded body in one line: `field=value`, long hex shortened, nested bodies in
    brackets (enough to tell what a proposal changes before signing it)."""
    if isinstance(body, dict):
        if depth > 2:
            return "{...}"
        fields = " ".join(f"{k}={summary(v, depth + 1)}" for k, v in body.items())
        return fields if depth == 0 else "{" + fields + "}"
    if isinstance(body, list):
        return (
            "["
            + ", ".join(summary(v, depth + 1) for v in body[:4])
            + (", ..." if len(body) > 4 else "")
            + "]"
        )
    text = str(body)
    if len(text) > 20 and all(c in "0123456789abcdef" for c in text):
        return text[:12] + "..."
    return text


@tx.command("cosign")
@flow_options
@click.argument("tx_id")
@click.option("--key", "key_name", required=True)
@json_option
def tx_cosign(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    tx_id: str,
    key_name: str,
    as_json: bool,
) -> None:
    """Add this key's signature to a partial transaction."""
    context = make_context(home, api, passphrase_file)
    key = context.key(key_name)
    partial = _partial_named(context.client.partials(), tx_id)
    transaction = Tx.decode(bytes.fromhex(partial["tx"]))
    answer = context.client.cosign(transaction.id, cosignature(key, transaction))
    if as_json:
        emit_json({**answer, "kind": transaction.kind, "body": partial["body"]})
        return
    console.print(f"co-signed {transaction.kind}: {summary(partial['body'])}")
    console.print(f"the transaction is {answer['status']}")


def _partial_named(partials: list[dict[str, Any]], tx_id: str) -> dict[str, Any]:
    """The partial whose id is `tx_id` or begins with it (at least 8 hex characters, as
    `tx pending` prints 16), or a clear error."""
    wanted = tx_id.strip().lower()
    if len(wanted) < PREFIX_MIN or any(c not in "0123456789abcdef" for c in wanted):
        raise InvalidInput(
            f"TX_ID {tx_id!r} must be the transaction id or its first {PREFIX_MIN}+ hex "
            "characters (see `carechain tx pending`)"
        )
    found = [p for p in partials if p["id"].startswith(wanted)]
    if not found:
        raise InvalidInput(f"no partial transaction {tx_id} waits at this node")
    if len(found) > 1:
        raise InvalidInput(
            f"{tx_id} begins {len(found)} partial transactions' ids",
            hint="give more of the id",
        )
    return found[0]
