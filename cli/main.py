"""The `carechain` command: thin over the library, one clear line per error, stable exit codes.

Exit codes: 0 success; 1 a check or operation failed; 2 usage error (from click);
3 invalid input (a file, an address, a passphrase: the message says what to fix);
4 internal error (a bug: please report it with the message).
"""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any

import click
from rich.markup import escape

from carechain.cli import (
    agent,
    audit,
    blobs,
    emergency,
    governance,
    grants,
    guardians,
    institutions,
    keys,
    light,
    nodes,
    partials,
    patients,
    records,
    recovery,
    setup,
    vaults,
)
from carechain.cli.demo import runner as demo_runner
from carechain.cli.output import EXIT_INTERNAL, EXIT_INVALID_INPUT, error_console
from carechain.consensus.errors import CarechainError, InvalidInput


class CarechainGroup(click.Group):
    """Maps our typed errors to one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InvalidInput as exc:
            error_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            sys.exit(EXIT_INVALID_INPUT)
        except CarechainError as exc:
            error_console.print(f"[red]internal error:[/red] {escape(str(exc))}", soft_wrap=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=CarechainGroup)
@click.version_option(metadata.version("carechain"), prog_name="carechain")
def cli() -> None:
    """carechain: a permissioned ledger through which patients control who reads their
    medical data."""


cli.add_command(keys.keys)
cli.add_command(setup.init)
cli.add_command(setup.config)
cli.add_command(demo_runner.demo)
cli.add_command(audit.audit)
cli.add_command(audit.export)
cli.add_command(audit.import_)
for command in (
    nodes.testnet,
    nodes.start,
    nodes.devnet,
    nodes.status,
    nodes.validators,
    nodes.peers,
):
    cli.add_command(command)
for command in (
    patients.patient,
    vaults.vault,
    records.record,
    grants.grant,
    emergency.emergency,
    partials.tx,
    governance.governance,
    blobs.blob,
    agent.agent,
    recovery.recovery,
    institutions.institution,
    guardians.guardian,
    light.light,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="carechain")
