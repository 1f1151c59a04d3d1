"""The whole command line, walked from `carechain --help`: every command's help prints, every
command that reads or writes says it in JSON on `--json`, and none answers junk with a
traceback (one line and an exit code instead)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from carechain.cli.main import cli

# Commands that neither read nor write one result: they run until stopped or tell a story.
NO_JSON = {
    ("start",): "runs a node in the foreground; its log lines are JSON",
    ("devnet",): "runs a local network until Ctrl-C",
    ("demo",): "narrates the paper's scenario",
    ("agent",): "the patient's agent service, or one co-signing pass that logs its decisions",
}
RUNS_LONG = {("start",), ("devnet",), ("demo",), ("agent",), ("testnet",)}


def _commands() -> Iterator[tuple[str, ...]]:
    """Every leaf command, found by reading `--help` pages as an operator would."""
    runner = CliRunner()
    pending: list[tuple[str, ...]] = [()]
    while pending:
        path = pending.pop()
        page = runner.invoke(cli, [*path, "--help"], terminal_width=200)
        assert page.exit_code == 0, (path, page.output)
        if "Commands:" not in page.output:
            yield path
            continue
        listed = page.output.split("Commands:", 1)[1]
        pending += [(*path, m) for m in re.findall(r"^  ([a-z][a-z-]*)\s", listed, re.M)]


COMMANDS = sorted(_commands())


def test_the_help_walk_finds_every_command() -> None:
    assert len(COMMANDS) >= 30
    assert ("governance", "propose") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_that_reads_or_writes_has_json(path: tuple[str, ...]) -> None:
    page = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200).output
    assert ("--json" in page) != (path in NO_JSON), f"{' '.join(path)}: --json?"


def _junk_arguments(path: tuple[str, ...], nowhere: Path) -> list[str]:
    """The command with every required option and argument given junk, and a home that does
    not exist: what a typo or a wrong folder gives."""
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    args: list[str] = [*path]
    for param in command.params:
        if isinstance(param, click.Option) and param.opts[0] == "--home":
            args += ["--home", str(nowhere)]
        elif isinstance(param, click.Option) and param.required:
            args += [param.opts[0], "zz"]
        elif isinstance(param, click.Argument) and param.required:
            args.append("zz")
    return args


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in RUNS_LONG], ids=" ".join)
def test_junk_gets_one_line_and_an_exit_code_never_a_traceback(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, _junk_arguments(path, tmp_path / "nowhere"))
    assert result.exit_code in (1, 2, 3), (path, result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), (path, repr(result.exception))
    assert "Traceback" not in result.output
