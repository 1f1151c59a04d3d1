"""More flows: emergency access, partial transactions, governance, blobs, and the patient's
co-signing agent."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click
from rich.table import Table

from carechain.cli.agent_server import PatientAgent, serve_agent
from carechain.cli.context import (
    flow_options,
    hex_bytes,
    make_context,
    report_outcome,
    vault_arg,
)
from carechain.cli.output import console, emit_json, json_option
from carechain.cli.patient_actions import agent_pass, cosignature
from carechain.config.node import parse_host_port
from carechain.consensus.errors import InvalidInput
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import (
    Emergency,
    EmergencyStatus,
    InstitutionAction,
    ValidatorAction,
)
from carechain.consensus.ledger.state import Table as StateTable
from carechain.consensus.types import Tx, Validator
from carechain.node import builders
from carechain.node.client import RemoteState
from carechain.storage.blobs.store import content_id_of

# --- emergency ---------------------------------------------------------------------------------


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
        hospital=hospital.public_key,
        epoch_key=epoch_key,
        reason=reason,
        duration_ms=hours * 3_600_000,
        note=note,
    )
    signers = [hospital] + ([context.key(trusted_key)] if trusted_key else [])
    report_outcome(context.send(draft.signed(*signers)), "emergency access")


@emergency.command("review")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--id", "emergency_hex", required=True)
@click.option("--verdict", type=click.Choice(["appropriate", "inappropriate"]), required=True)
@click.option("--note", default="")
@click.option("--key", "key_names", multiple=True, required=True)
def emergency_review(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    emergency_hex: str,
    verdict: str,
    note: str,
    key_names: tuple[str, ...],
) -> None:
    """Review an emergency access (patient keys or a trusted party)."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    vault_id = vault_arg(vault_hex)
    draft = builders.review_emergency(
        context.chain_id,
        vault_id,
        context.nonce(vault_id),
        context.expiry(),
        emergency_id=hex_bytes(emergency_hex, 32, "--id"),
        verdict=EmergencyStatus[verdict.upper()],
        note=note,
    )
    report_outcome(context.send(draft.signed(*keys)), "review")


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
    table = Table("id", "vault", "hospital", "reason", "height", "status")
    for row in rows:
        style = "bold red" if row["status"] == "unreviewed" else ""
        table.add_row(
            *(
                str(row[k])[:16]
                for k in ("id", "vault", "hospital", "reason", "opened_height", "status")
            ),
            style=style,
        )
    console.print(table)


# --- partial transactions ----------------------------------------------------------------------


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


# --- governance --------------------------------------------------------------------------------


@click.group()
def governance() -> None:
    """Validator and institution changes, signed by the validators (k of n)."""


@governance.command("propose")
@flow_options
@click.option(
    "--key", "key_name", required=True, help="This validator's key (usually 'validator')."
)
@click.option(
    "--action",
    required=True,
    type=click.Choice(
        [
            "validator-add",
            "validator-remove",
            "validator-power",
            "institution-register",
            "institution-revoke",
        ]
    ),
)
@click.option("--name", required=True)
@click.option(
    "--public-key",
    "public_key",
    required=True,
    help="Hex public key of the validator or institution.",
)
@click.option("--node-key", default="", help="Validator's node key (hex), for validator-add.")
@click.option("--power", default=10, show_default=True, type=click.IntRange(1, 2**32))
@click.option(
    "--kind", type=click.Choice([k.name.lower() for k in InstitutionKind]), default="hospital"
)
def governance_propose(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    key_name: str,
    action: str,
    name: str,
    public_key: str,
    node_key: str,
    power: int,
    kind: str,
) -> None:
    """Propose a change; other validators approve it with `governance approve`."""
    context = make_context(home, api, passphrase_file)
    key = context.key(key_name)
    nonce = context.nonce(GOVERNANCE_ACCOUNT)
    subject = hex_bytes(public_key, 32, "--public-key")
    if action.startswith("validator"):
        validator = Validator(
            name, subject, hex_bytes(node_key, 32, "--node-key") if node_key else subject, power
        )
        verb = {
            "validator-add": ValidatorAction.ADD,
            "validator-remove": ValidatorAction.REMOVE,
            "validator-power": ValidatorAction.SET_POWER,
        }[action]
        draft = builders.change_validator(
            context.chain_id, nonce, context.expiry(), verb, validator
        )
    else:
        institution = Institution(name, InstitutionKind[kind.upper()], subject)
        verb_i = (
            InstitutionAction.REGISTER
            if action == "institution-register"
            else InstitutionAction.REVOKE
        )
        draft = builders.change_institution(
            context.chain_id, nonce, context.expiry(), verb_i, institution
        )
    report_outcome(context.send(draft.signed(key)), "proposal")


@governance.command("approve")
@flow_options
@click.argument("tx_id")
@click.option("--key", "key_name", required=True)
def governance_approve(
    home: Path, api: str | None, passphrase_file: Path | None, tx_id: str, key_name: str
) -> None:
    """Approve (co-sign) a pending governance proposal."""
    tx_cosign.callback(
        home=home, api=api, passphrase_file=passphrase_file, tx_id=tx_id, key_name=key_name
    )  # type: ignore[misc]


# --- blobs -------------------------------------------------------------------------------------


@click.group()
def blob() -> None:
    """The node's blob store (ciphertext only)."""


@blob.command("put")
@flow_options
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def blob_put(home: Path, api: str | None, passphrase_file: Path | None, path: Path) -> None:
    """Store a file's bytes (already encrypted); print its content id."""
    context = make_context(home, api, passphrase_file)
    console.print(context.client.blob_put(path.read_bytes()))


@blob.command("get")
@flow_options
@click.argument("cid")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def blob_get(
    home: Path, api: str | None, passphrase_file: Path | None, cid: str, out: Path
) -> None:
    """Read a blob held by this node (each chunk verified against its content id)."""
    context = make_context(home, api, passphrase_file)
    data = context.client.request("GET", f"/v1/blobs/{cid}")
    out.write_bytes(data)
    console.print(f"wrote {len(data):,} bytes to {out}")


@blob.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("cid")
def blob_verify(path: Path, cid: str) -> None:
    """Check that a file is the blob a content id names (no node needed)."""
    actual = content_id_of(path.read_bytes())
    if actual != cid:
        raise InvalidInput(f"{path} is {actual}, not {cid}")
    console.print(f"{path} matches {cid}")


# --- the patient's agent -----------------------------------------------------------------------


@click.command()
@flow_options
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
@click.option("--key", "key_name", required=True, help="The patient key the agent signs with.")
@click.option(
    "--other-key",
    "other_names",
    multiple=True,
    help="The patient's other key names (their signatures do not count as initiators).",
)
@click.option("--once", is_flag=True, help="One pass, then exit (for scripts and tests).")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1, 3600))
@click.option(
    "--serve",
    metavar="HOST:PORT",
    help="Also serve the web console's patient actions here (e.g. 127.0.0.1:26690).",
)
@click.option(
    "--console-origin",
    default="",
    help="The console's origin allowed to call --serve (default: the node's API address).",
)
def agent(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    rules_path: Path,
    key_name: str,
    other_names: tuple[str, ...],
    once: bool,
    interval: float,
    serve: str | None,
    console_origin: str,
) -> None:
    """The patient's co-signing agent: signs partials that match its rules; logs every decision
    as a JSON line. With --serve, also the patient's side of the web console: grants,
    revocations, approvals, rules and decrypted downloads, signed here with the patient's keys
    (which never leave this process)."""
    context = make_context(home, api, passphrase_file)
    key = context.key(key_name)
    others = [context.key(n) for n in other_names]
    patient_keys = frozenset({key.public_key, *(k.public_key for k in others)})
    if serve is not None:
        host, port = parse_host_port(serve)
        origin = console_origin or context.client.base_url
        server = PatientAgent(context, [key, *others], rules_path, origin)
        console.print(f"patient agent on http://{host}:{port} for the console at {origin}")
        asyncio.run(serve_agent(server, host, port, interval))
        return
    seen: set[str] = set()
    while True:
        for decision in agent_pass(context, key, rules_path, patient_keys):
            if decision["tx"] not in seen:
                seen.add(str(decision["tx"]))
                click.echo(json.dumps(decision))
        if once:
            return
        time.sleep(interval)
