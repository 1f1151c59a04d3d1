"""`carechain governance`: propose and approve changes to the validator and institution
sets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Column

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.nodes import node_client, node_options
from carechain.cli.output import console, emit_json, human_table, json_option
from carechain.cli.partials import summary, tx_cosign
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import (
    InstitutionAction,
    ValidatorAction,
)
from carechain.consensus.types import Validator
from carechain.node.wallet import builders
from carechain.node.wallet.context import public_key_arg


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
@json_option
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
    as_json: bool,
) -> None:
    """Propose a change; other validators approve it with `governance approve`."""
    subject = public_key_arg(public_key, "--public-key")  # before any key is opened
    context = make_context(home, api, passphrase_file)
    key = context.key(key_name)
    nonce = context.nonce(GOVERNANCE_ACCOUNT)
    if action.startswith("validator"):
        validator = Validator(
            name, subject, public_key_arg(node_key, "--node-key") if node_key else subject, power
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
    proposal = draft.signed(key)
    answer = context.send(proposal)
    rivals = context.rivals(proposal)
    report_outcome(answer, "proposal", as_json=as_json, same_nonce=rivals)
    for rival in [] if as_json else rivals:
        console.print(
            f"note: proposal {rival} waits for approval at the same nonce ({nonce}): the first "
            "of the two approved commits, and the node drops the other (propose it again then)"
        )


@governance.command("approve")
@flow_options
@click.argument("tx_id")
@click.option("--key", "key_name", required=True)
@json_option
def governance_approve(
    home: Path,
    api: str | None,
    passphrase_file: Path | None,
    tx_id: str,
    key_name: str,
    as_json: bool,
) -> None:
    """Approve (co-sign) a pending governance proposal."""
    tx_cosign.callback(
        home=home,
        api=api,
        passphrase_file=passphrase_file,
        tx_id=tx_id,
        key_name=key_name,
        as_json=as_json,
    )  # type: ignore[misc]


@governance.command("list")
@node_options
@json_option
def governance_list(home: Path | None, api: str | None, as_json: bool) -> None:
    """Governance proposals waiting for approvals: what each changes, who signed it, and
    whose approval could still complete it."""
    partials = node_client(home, api).partials()
    pending = [p for p in partials if p["account"] == GOVERNANCE_ACCOUNT.hex()]
    if as_json:
        emit_json(pending)
        return
    if not pending:
        console.print("no governance proposal is waiting")
        return
    table = human_table(Column("id", no_wrap=True), "nonce", "what it changes", "signed", "needs")
    for proposal in pending:
        table.add_row(
            proposal["id"][:16],
            str(proposal["nonce"]),
            summary(proposal["body"]),
            str(len(proposal["signers"])),
            f"one of {len(proposal['needs'])}" if proposal["needs"] else "-",
        )
    console.print(table)
