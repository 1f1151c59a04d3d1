"""The patient's and hospitals' flows on the command line: patients, vaults, records, grants,
emergencies, partial transactions, governance, blobs, and the patient's co-signing agent.
Every command signs locally with keys from `--home` and talks to a node's API."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import click
from rich.table import Table

from carechain.cli.context import (
    flow_options,
    hex_bytes,
    institution_kind,
    make_context,
    patient_account,
    report_outcome,
    vault_arg,
)
from carechain.cli.output import console, emit_json, json_option
from carechain.cli.patient_actions import grant_access, read_record, revoke_grant
from carechain.consensus import crypto
from carechain.consensus.ledger.bodies import PutRecord
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import (
    Grant,
)
from carechain.consensus.ledger.state import Table as StateTable
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.node import builders
from carechain.node.client import RemoteState

TEMPLATES = {"patient-controlled": Template.PATIENT_CONTROLLED, "nem-2-of-n": Template.NEM_2_OF_N}


# --- patients and vaults -----------------------------------------------------------------------


@click.group()
def patient() -> None:
    """Patient accounts."""


@patient.command("register")
@flow_options
@click.option("--key1", required=True, help="Name of the patient's first key in --home.")
@click.option("--key2", required=True, help="Name of the patient's second key.")
def patient_register(
    home: Path, api: str | None, passphrase_file: Path | None, key1: str, key2: str
) -> None:
    """Register a patient account controlled by two keys."""
    context = make_context(home, api, passphrase_file)
    first, second = context.key(key1), context.key(key2)
    draft = builders.register_patient(
        context.chain_id, (first.public_key, second.public_key), context.expiry()
    )
    report_outcome(context.send(draft.signed(first, second)), "patient registered")
    console.print(f"patient address {crypto.encode_address(patient_account(first))}")


@click.group()
def vault() -> None:
    """Patient vaults, one per data type."""


@vault.command("create")
@flow_options
@click.option("--key1", required=True)
@click.option("--key2", required=True)
@click.option("--type", "data_type", required=True, help="glucose, cgm, hba1c, blood-pressure, ...")
@click.option(
    "--template",
    type=click.Choice(sorted(TEMPLATES)),
    default="patient-controlled",
    show_default=True,
)
@click.option("--team", multiple=True, help="Public key (hex) of a team hospital; repeatable.")
@json_option
def vault_create(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    key1: str,
    key2: str,
    data_type: str,
    template: str,
    team: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a vault; its first epoch key is sealed to the patient, team and trusted parties."""
    context = make_context(home, api, passphrase_file)
    first, second = context.key(key1), context.key(key2)
    team_keys = [hex_bytes(t, 32, "--team") for t in team]
    members = {first.public_key, second.public_key, *team_keys, *context.trusted()}
    patient_id = patient_account(first)
    draft, _ = builders.create_vault(
        context.chain_id,
        patient_id,
        context.nonce(patient_id),
        context.expiry(),
        data_type=data_type,
        template=TEMPLATES[template],
        team=team_keys,
        members=members,
    )
    answer = context.send(draft.signed(first, second))
    vault_id = vault_id_of(patient_id, data_type).hex()
    if as_json:
        emit_json({"vault": vault_id, **answer})
    else:
        report_outcome(answer, f"{data_type} vault created")
        console.print(f"vault id {vault_id}")


# --- records -----------------------------------------------------------------------------------


@click.group()
def record() -> None:
    """Encrypted records."""


@record.command("put")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option(
    "--file", "path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--key", "key_names", multiple=True, required=True, help="Signing key name; repeatable."
)
@json_option
def record_put(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    path: Path,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Encrypt a file, store it (inline or as a blob), and submit the record."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    vault_state = context.vault(vault_arg(vault_hex))
    epoch_key = context.epoch_key(vault_state, keys[0])
    plaintext = path.read_bytes()
    record_id = secrets.token_bytes(16)
    content_id = None
    if len(plaintext) > 1024:
        data_key = crypto.new_data_key()
        ciphertext = b"".join(crypto.encrypt_stream(data_key, [plaintext]))
        content_id = context.client.blob_put(ciphertext)
        body = PutRecord(
            record_id,
            vault_state.data_type,
            content_id,
            len(plaintext),
            vault_state.epoch,
            crypto.encrypt_small(epoch_key, data_key),
            b"",
            context.now_ms(),
        )
    else:
        body = builders.encrypt_record(
            plaintext,
            record_id=record_id,
            data_type=vault_state.data_type,
            epoch=vault_state.epoch,
            epoch_key=epoch_key,
            record_time_ms=context.now_ms(),
        ).body
    draft = builders.TxDraft(
        context.chain_id,
        "record.put",
        vault_state.vault_id,
        context.nonce(vault_state.vault_id),
        context.expiry(),
        body,
    )
    answer = context.send(draft.signed(*keys))
    if as_json:
        emit_json({"record": record_id.hex(), "content_id": content_id or "inline", **answer})
    else:
        report_outcome(answer, "record submitted")
        console.print(f"record id {record_id.hex()}")


@record.command("get")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--record", "record_hex", required=True)
@click.option("--key", "key_name", required=True, help="The reader's key name.")
@click.option("--grant", "grant_hex", default="", help="Grant id the reader reads under.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def record_get(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    record_hex: str,
    key_name: str,
    grant_hex: str,
    out: Path,
) -> None:
    """Fetch, verify and decrypt a record; an institution anchors a read receipt."""
    context = make_context(home, api, passphrase_file)
    reader = context.key(key_name)
    vault_id, record_id = vault_arg(vault_hex), bytes.fromhex(record_hex)
    plaintext = read_record(context, reader, vault_id, record_id)
    out.write_bytes(plaintext)
    console.print(f"wrote {len(plaintext):,} bytes to {out}")
    if institution_kind(context, reader.public_key) is not None:
        receipt = builders.receipt(
            context.chain_id,
            reader.public_key,
            context.nonce(crypto.account_id(reader.public_key)),
            context.expiry(),
            vault=vault_id,
            record_id=record_id,
            grant_id=bytes.fromhex(grant_hex),
        )
        report_outcome(context.send(receipt.signed(reader)), "read receipt")


# --- grants ------------------------------------------------------------------------------------


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
) -> None:
    """Grant an institution access to a vault for a number of days."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    grantee_key = hex_bytes(grantee, 32, "--grantee")
    tx = grant_access(
        context, keys, vault_arg(vault_hex), grantee_key, days=days, purpose=purpose, write=write
    )
    report_outcome(context.send(tx), "grant")
    console.print(f"grant id {tx.id.hex()}")


@grant.command("revoke")
@flow_options
@click.option("--vault", "vault_hex", required=True)
@click.option("--grant", "grant_hex", required=True)
@click.option("--key", "key_names", multiple=True, required=True)
def grant_revoke(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    grant_hex: str,
    key_names: tuple[str, ...],
) -> None:
    """Revoke a grant; the vault's epoch rotates to the remaining readers."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    grant_id = hex_bytes(grant_hex, 32, "--grant")
    tx = revoke_grant(context, keys, vault_arg(vault_hex), grant_id)
    report_outcome(context.send(tx), "grant revoked, epoch rotated")


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
    table = Table("grant", "grantee", "access", "until", "purpose", "revoked")
    for row in rows:
        until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(row["until_ms"]) / 1000))  # type: ignore[call-overload]
        table.add_row(
            str(row["grant"])[:16],
            str(row["grantee"])[:16],
            str(row["access"]),
            until,
            str(row["purpose"]),
            str(row["revoked_height"] or ""),
        )
    console.print(table)
