"""`carechain record`: put an encrypted record in a vault, and read one (the read's receipt
goes on chain before the plaintext leaves)."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome, vault_arg
from carechain.cli.output import console, emit_json, json_option
from carechain.consensus import crypto
from carechain.consensus.ledger.bodies import PutRecord
from carechain.node.wallet import builders
from carechain.node.wallet.context import hex_bytes, institution_kind
from carechain.node.wallet.patient_actions import read_record, save_private


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
@json_option
def record_get(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    vault_hex: str,
    record_hex: str,
    key_name: str,
    grant_hex: str,
    out: Path,
    as_json: bool,
) -> None:
    """Fetch, verify and decrypt a record; an institution anchors a read receipt."""
    context = make_context(home, api, passphrase_file)
    reader = context.key(key_name)
    vault_id, record_id = vault_arg(vault_hex), bytes.fromhex(record_hex)
    grant_id = hex_bytes(grant_hex, 32, "--grant") if grant_hex else b""
    # an institution's receipt commits before anything is decrypted (see read_record)
    plaintext = read_record(context, reader, vault_id, record_id, grant_id=grant_id)
    save_private(out, plaintext)
    receipt = institution_kind(context, reader.public_key) is not None
    if as_json:
        emit_json({"bytes": len(plaintext), "out": str(out), "receipt_committed": receipt})
        return
    if receipt:
        console.print("read receipt: committed")
    console.print(f"wrote {len(plaintext):,} bytes to {out} (readable by you only)")
