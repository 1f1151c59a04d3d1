"""What every flow command adds to the wallet's context (node/wallet/context.py): the options
naming the home folder, the node's API and the passphrase file, and how an outcome is told.
"""

from __future__ import annotations

from pathlib import Path

import click

from carechain.cli.keys import HOME_ENVIRONMENT_VARIABLE
from carechain.cli.output import console, emit_json
from carechain.cli.passphrase import obtain_passphrase
from carechain.consensus.errors import InvalidInput
from carechain.node.wallet.client import Client, api_address
from carechain.node.wallet.context import FlowContext, hex_bytes


def vault_arg(value: str) -> bytes:
    try:
        return hex_bytes(value, 20, "--vault")
    except InvalidInput:
        raise InvalidInput(
            "--vault is the vault id: 40 hex characters (see `vault create`)"
        ) from None


def report_outcome(
    answer: dict[str, object], what: str, *, as_json: bool = False, **extra: object
) -> None:
    """A submitted transaction's outcome: with `as_json` the node's answer and `extra` as one
    JSON object, else one line (the caller says the `extra` in its own words)."""
    if as_json:
        emit_json({**answer, **extra})
    elif answer["status"] == "partial":
        console.print(f"{what}: waiting for co-signatures (transaction {answer['id']})")
    else:
        console.print(f"{what}: committed at height {answer.get('height')}")


def flow_options(function: click.decorators.FC) -> click.decorators.FC:
    function = click.option(
        "--api", help="The node's API URL (default: the running node of --home)."
    )(function)
    function = click.option(
        "--passphrase-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File holding the keystore passphrase (else $CARECHAIN_PASSPHRASE or a prompt).",
    )(function)
    return click.option(
        "--home",
        required=True,
        envvar=HOME_ENVIRONMENT_VARIABLE,
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Home folder holding the keys (and, without --api, a running node).",
    )(function)


def make_context(home: Path, api: str | None, passphrase_file: Path | None) -> FlowContext:
    def passphrase() -> str:
        return obtain_passphrase(passphrase_file, confirm=False)

    return FlowContext(home, Client(api or api_address(home)), passphrase)
