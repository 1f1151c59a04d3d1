"""`carechain recovery`: a patient who lost a key gets control back through the trusted party
(start, cancel, finish a recovery; list the pending one). See consensus/ledger/recovery.py for
who may sign what."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, emit_json, json_option
from carechain.consensus import crypto
from carechain.consensus.errors import InvalidInput
from carechain.node.wallet.context import hex_bytes, public_key_arg
from carechain.node.wallet.recovery_actions import (
    cancel_recovery,
    finish_recovery,
    fits,
    pending_or_refuse,
    pending_recovery,
    recovery_summary,
    share_missing_epochs,
    start_recovery,
)

patient_option = click.option(
    "--patient", "patient_text", required=True,
    help="The patient's address (cc1...) or account id (40 hex characters).",
)  # fmt: skip
keys_option = click.option(
    "--key", "key_names", multiple=True, required=True, help="Signing key name; repeatable."
)


def parse_patient(text: str) -> bytes:
    if text.strip().lower().startswith(crypto.ADDRESS_HRP + "1"):
        return crypto.decode_address(text)
    try:
        return hex_bytes(text, 20, "--patient")
    except InvalidInput:
        raise InvalidInput(
            f"--patient {text[:24]!r} is neither an address (cc1...) nor a 40-hex account id",
            hint="`carechain patient register` prints the patient's address",
        ) from None


@click.group()
def recovery() -> None:
    """A lost patient key's recovery (a trusted party and the remaining key, or a trusted
    party and a team hospital after the waiting window)."""


@recovery.command("start")
@flow_options
@patient_option
@click.option("--lost", required=True, help="The lost public key (hex).")
@click.option("--replacement", required=True, help="The new public key that replaces it (hex).")
@keys_option
@json_option
def recovery_start(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    lost: str,
    replacement: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Start a recovery: it waits for its co-signers, then (on the slow path) its window."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    tx = start_recovery(
        context, keys, parse_patient(patient_text),
        public_key_arg(lost, "--lost"), public_key_arg(replacement, "--replacement"),
    )  # fmt: skip
    report_outcome(context.send(tx), "recovery started", as_json=as_json)


@recovery.command("cancel")
@flow_options
@patient_option
@keys_option
@json_option
def recovery_cancel(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Cancel the pending recovery (any one of the patient's keys)."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    tx = cancel_recovery(context, keys, parse_patient(patient_text))
    report_outcome(context.send(tx), "recovery cancelled", as_json=as_json)


@recovery.command("finish")
@flow_options
@patient_option
@keys_option
@json_option
def recovery_finish(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    patient_text: str,
    key_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Finish the pending recovery: the replacement takes the lost key's place in every vault,
    reads every past record and the lost key reads nothing new. A finish too large for one
    transaction (very many epochs) hands the past epochs' keys over right after it, in
    `epoch.share` transactions signed by the same keys."""
    context = make_context(home, api, passphrase_file)
    keys = [context.key(name) for name in key_names]
    patient = parse_patient(patient_text)
    replacement = pending_or_refuse(context, patient).replacement
    defer = not fits(context, finish_recovery(context, keys, patient))
    answer = context.send_sealed(
        lambda: finish_recovery(context, keys, patient, defer_old_epochs=defer)
    )
    shared = share_missing_epochs(context, keys, patient, replacement) if defer else 0
    report_outcome(answer, "recovery finished", as_json=as_json, shared_after=shared)
    if shared and not as_json:
        console.print(f"{shared} past epoch keys handed to the new key after the finish")


@recovery.command("list")
@flow_options
@patient_option
@json_option
def recovery_list(
    home: Path, api: str | None, passphrase_file: Path | None, patient_text: str, as_json: bool
) -> None:
    """The patient's pending recovery, if any."""
    context = make_context(home, api, passphrase_file)
    found = pending_recovery(context, parse_patient(patient_text))
    if as_json:
        emit_json([] if found is None else [recovery_summary(found)])
    elif found is None:
        console.print("no recovery pending")
    else:
        console.print(
            f"[red]recovery pending[/red] ({'fast' if found.fast else 'slow'} path): key "
            f"{found.lost.hex()[:16]}... to be replaced by {found.replacement.hex()[:16]}..., "
            f"may finish from block time {found.ready_ms} ms; any of the patient's keys can "
            "cancel it"
        )
