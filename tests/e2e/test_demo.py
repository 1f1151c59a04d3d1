"""The demo, run as `carechain demo` runs it: the paper's scenario on a local 4-validator
network of real processes, every narrated check passing."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.tests.leaks import LEAKED_SOCKET


@pytest.mark.filterwarnings(LEAKED_SOCKET)  # the demo's clinic is a libp2p host in-process
def test_demo_runs_and_passes_every_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path)])
    gc.collect()  # the sockets py-libp2p left behind are reaped here, under this test's filter
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert "all checks passed" in result.output
