"""Output helpers shared by every command: rich consoles and `--json`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(function: F) -> F:
    """`--json`: machine-readable output instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))
