"""`carechain patient`: register a patient's account (two keys, signed locally)."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, json_option
from carechain.consensus import crypto
from carechain.node.wallet import builders
from carechain.node.wallet.context import patient_account


@click.group()
def patient() -> None:
    """Patient accounts."""


@patient.command("register")
@flow_options
@click.option("--key1", required=True, help="Name of the patient's first key in --home.")
@click.option("--key2", required=True, help="Name of the patient's second key.")
@json_option
def patient_register(
    home: Path, api: str | None, passphrase_file: Path | None, key1: str, key2: str, as_json: bool
) -> None:
    """Register a patient account controlled by two keys."""
    context = make_context(home, api, passphrase_file)
    first, second = context.key(key1), context.key(key2)
    draft = builders.register_patient(
        context.chain_id, (first.public_key, second.public_key), context.expiry()
    )
    address = crypto.encode_address(patient_account(first))
    answer = context.send(draft.signed(first, second))
    report_outcome(answer, "patient registered", as_json=as_json, address=address)
    if not as_json:
        console.print(f"patient address {address}")
