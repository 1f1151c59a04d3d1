"""`carechain guardian`: a patient's guardians (a parent, a carer, a legal proxy): name one
with a scope, remove one, hand a minor's account over, list who acts for whom. See
consensus/ledger/guardians.py for what each scope stands for."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.cli.recovery import keys_option, parse_patient, patient_option
from carechain.consensus.ledger.records import GuardianScope
from carechain.node.wallet.context import public_key_arg
from carechain.node.wallet.guardian_actions import (
    add_guardian,
    guardians_of,
    remove_guardians,
    wards_of,
)


@click.group()
def guardian() -> None:
    """A patient's guardians: who acts for whom, with what scope."""


@guardian.command("add")
@flow_options
@patient_option
@click.option("--guardian", "guardian_hex", required=True, help="The guardian's public key.")
@click.option(
    "--scope", type=click.Choice(["cosign", "full"]), required=True,
    help="cosign: stands for one patient key (co-signs a hospital's partial) and reads; full: "
    "stands for the patient in all but who controls the account, and reads.",
)  # fmt: skip
@keys_option
@json_option
def guardian_add(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    guardian_hex: str,
    scope: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Name a guardian (signed by both patient keys; for a minor, by a full guardian). Every
    epoch key of every vault is sealed to it, so it reads what the patient reads."""
    key = public_key_arg(guardian_hex, "--guardian")
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    patient = parse_patient(patient_text)
    tx = add_guardian(context, keys, patient, key, GuardianScope[scope.upper()])
    report_outcome(context.send(tx), "guardian added", as_json=as_json)


@guardian.command("remove")
@flow_options
@patient_option
@click.option("--guardian", "guardian_hex", required=True, help="The guardian's public key.")
@keys_option
@json_option
def guardian_remove(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    guardian_hex: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Remove a guardian (both patient keys; for a minor, a full guardian; or the guardian
    itself, stepping down). Every vault moves to a new epoch it does not hold."""
    key = public_key_arg(guardian_hex, "--guardian")
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    patient = parse_patient(patient_text)
    answer = context.send_sealed(lambda: remove_guardians(context, keys, patient, key))
    report_outcome(answer, "guardian removed", as_json=as_json)


@guardian.command("handover")
@flow_options
@patient_option
@keys_option
@json_option
def guardian_handover(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """A minor comes of age: its two keys with a full guardian (or a trusted party) sign;
    every guardian goes and every vault moves to a new epoch they do not hold."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    patient = parse_patient(patient_text)
    answer = context.send_sealed(lambda: remove_guardians(context, keys, patient, None))
    report_outcome(answer, "account handed over", as_json=as_json)


@guardian.command("list")
@flow_options
@click.option("--patient", "patient_text", default=None, help="A patient's address: its guardians.")
@click.option("--of", "guardian_hex", default=None, help="A guardian's public key: its wards.")
@json_option
def guardian_list(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str | None,
    guardian_hex: str | None,
    as_json: bool,
) -> None:
    """Who acts for whom: a patient's guardians (--patient), or whom a key guards (--of)."""
    if (patient_text is None) == (guardian_hex is None):
        raise click.UsageError("give --patient or --of")
    context = make_context(home, api, passphrase_file)
    if guardian_hex is not None:
        wards = wards_of(context, public_key_arg(guardian_hex, "--of"))
        if as_json:
            emit_json(wards)
            return
        table = human_table("acts for", "scope")
        for ward in wards:
            table.add_row(ward["patient"], ward["scope"])
        console.print(table)
        return
    assert patient_text is not None
    found = guardians_of(context, parse_patient(patient_text))
    if as_json:
        emit_json(found)
        return
    console.print(f"{found['patient']}{' (a minor)' if found['minor'] else ''}")
    table = human_table("guardian", "scope", "since height")
    for entry in found["guardians"]:
        table.add_row(entry["key"], entry["scope"], str(entry["added_height"]))
    console.print(table)
