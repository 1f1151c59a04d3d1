"""Output helpers shared by every command: rich consoles, `--json` and the exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Column, Table

# The exit codes the README promises: 1 a check failed, 2 usage (click's), 3 invalid input,
# 4 internal error.
EXIT_FAILED = 1
EXIT_INVALID_INPUT = 3
EXIT_INTERNAL = 4

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def human_table(*columns: str | Column) -> Table:
    """A human table whose cells wrap and are never cut short: an id, a key or a node id
    printed with "..." in the middle could not be copied into the next command."""
    made = Table()
    for column in columns:
        if isinstance(column, Column):
            made.columns.append(column)
        else:
            made.add_column(column, overflow="fold")
    return made


def json_option(function: F) -> F:
    """`--json`: machine-readable output instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def plural(count: int, noun: str) -> str:
    """`1 validator`, `4 validators`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
