"""`carechain patient`: register a patient's account (two keys, signed locally)."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, json_option
from carechain.consensus import crypto
from carechain.consensus.crypto import decode_address
from carechain.consensus.errors import InvalidInput
from carechain.node.wallet import builders
from carechain.node.wallet.context import patient_account
from carechain.node.wallet.recovery_actions import finish_recovery, start_recovery


@click.group()
def patient() -> None:
    """Patient accounts."""


@patient.command("register")
@flow_options
@click.option("--key1", required=True, help="Name of the patient's first key in --home.")
@click.option("--key2", required=True, help="Name of the patient's second key.")
@click.option(
    "--guardian", "guardian_name", default=None,
    help="A minor's account: the name of its guardian's key, which controls the account (and "
    "signs the registration) until `carechain guardian handover`.",
)  # fmt: skip
@json_option
def patient_register(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    key1: str,
    key2: str,
    guardian_name: str | None,
    as_json: bool,
) -> None:
    """Register a patient account controlled by two keys (a minor's: by its guardian until the
    handover)."""
    context = make_context(home, api, passphrase_file)
    first, second = context.key(key1), context.key(key2)
    keys = (first.public_key, second.public_key)
    signers = [first, second]
    if guardian_name is None:
        draft = builders.register_patient(context.chain_id, keys, context.expiry())
    else:
        guardian = context.key(guardian_name)
        draft = builders.register_minor(context.chain_id, keys, guardian.public_key,
                                        context.expiry())  # fmt: skip
        signers.append(guardian)
    address = crypto.encode_address(patient_account(first))
    answer = context.send(draft.signed(*signers))
    report_outcome(answer, "patient registered", as_json=as_json, address=address)
    if not as_json:
        console.print(f"patient address {address}")


@patient.command("rotate-key")
@flow_options
@click.option("--key1", required=True, help="Name of the patient's first key in --home.")
@click.option("--key2", required=True, help="Name of the patient's second key.")
@click.option("--old", "old_name", required=True, help="Which of the two is replaced (its name).")
@click.option("--new", "new_name", required=True, help="The new key's name (`keys new`).")
@click.option(
    "--patient", "patient_text", default=None,
    help="The patient's address; by default key 1's (give it once key 1 has been replaced).",
)  # fmt: skip
@json_option
def patient_rotate_key(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    key1: str,
    key2: str,
    old_name: str,
    new_name: str,
    patient_text: str | None,
    as_json: bool,
) -> None:
    """Replace one of the patient's keys with a new one, signed by both current keys: the new
    key takes the old one's place in every vault and reads every past record; the old key
    reads nothing written after."""
    if old_name not in (key1, key2):
        raise InvalidInput(f"--old {old_name!r} is neither --key1 nor --key2")
    context = make_context(home, api, passphrase_file)
    keys = [context.key(key1), context.key(key2)]
    old, new = context.key(old_name), context.key(new_name)
    patient = decode_address(patient_text) if patient_text else context.account_of(keys[0])
    started = context.send(start_recovery(context, keys, patient, old.public_key, new.public_key))
    if started["status"] != "committed":
        raise InvalidInput(f"the rotation's first step is {started['status']}, not committed")
    answer = context.send_sealed(lambda: finish_recovery(context, keys, patient))
    report_outcome(answer, f"key {old_name} replaced by {new_name}", as_json=as_json)
