"""`carechain vault`: create a patient's vault with its policy template and team."""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.context import flow_options, make_context, report_outcome
from carechain.cli.output import console, emit_json, json_option
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import Account
from carechain.consensus.ledger.state import Table
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.context import public_key_arg

TEMPLATES = {"patient-controlled": Template.PATIENT_CONTROLLED, "nem-2-of-n": Template.NEM_2_OF_N}


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
@click.option(
    "--signer", "signer_names", multiple=True,
    help="Sign with these keys instead of --key1 and --key2 (a full guardian's, for a minor).",
)  # fmt: skip
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
    signer_names: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a vault; its first epoch key is sealed to the patient, team and trusted parties."""
    team_keys = [public_key_arg(t, "--team") for t in team]  # before any key is opened
    context = make_context(home, api, passphrase_file)
    first, second = context.key(key1), context.key(key2)
    signers = [context.key(name) for name in signer_names] or [first, second]
    patient_id = context.account_of(first)

    def build() -> Tx:  # the members as the next block will require them (`send_sealed`)
        found = context.state().load(Table.ACCOUNT, patient_id, Account)
        guardians = found.guardian_keys if found is not None else frozenset()
        members = {first.public_key, second.public_key, *guardians, *team_keys,
                   *context.trusted()}  # fmt: skip
        draft, _ = builders.create_vault(
            context.chain_id,
            patient_id,
            context.nonce(patient_id),
            context.expiry(),
            data_type=data_type,
            template=TEMPLATES[template],
            team=team_keys,
            members=context.sealing_keys(members),
        )
        return draft.signed(*signers)

    answer = context.send_sealed(build)
    vault_id = vault_id_of(patient_id, data_type).hex()
    if as_json:
        emit_json({"vault": vault_id, **answer})
    else:
        report_outcome(answer, f"{data_type} vault created")
        console.print(f"vault id {vault_id}")
