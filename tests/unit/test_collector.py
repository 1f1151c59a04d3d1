"""The node daemon and the audit replay run with the collector thresholds of
node/collector.py (why: its docstring; the effect: `make bench`), and leave the process's
collector as they found it."""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from click.testing import CliRunner

from carechain.cli import audit
from carechain.cli.main import cli
from carechain.config.genesis import save_genesis
from carechain.node import runner
from carechain.node.audit.replay import replay
from carechain.node.collector import THRESHOLDS, tuned_collector
from carechain.storage.chain import ChainStore
from carechain.tests.chain_fixture import committee_chain, committee_genesis

DEFAULTS = (700, 10, 10)


@pytest.fixture(autouse=True)
def default_collector() -> Any:
    before = gc.get_threshold()
    gc.set_threshold(*DEFAULTS)
    yield
    gc.set_threshold(*before)


def test_the_thresholds_hold_inside_the_block_only_even_when_it_raises() -> None:
    with tuned_collector():
        assert gc.get_threshold() == THRESHOLDS
    assert gc.get_threshold() == DEFAULTS
    with pytest.raises(RuntimeError), tuned_collector():
        raise RuntimeError("boom")
    assert gc.get_threshold() == DEFAULTS


def test_the_daemon_runs_its_event_loop_with_the_tuned_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, int]] = []

    def fake_loop(main: Coroutine[Any, Any, None]) -> None:
        seen.append(gc.get_threshold())
        main.close()

    monkeypatch.setattr(uvloop, "run", fake_loop)
    runner.run(Path("unused"), None)
    assert seen == [THRESHOLDS]


def test_the_audit_replay_runs_with_the_tuned_collector_and_restores_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ChainStore.open(tmp_path / "chain", committee_genesis())
    committee_chain(store, 2, txs_per_block=3)
    store.close()
    save_genesis(tmp_path / "genesis.json", committee_genesis())
    seen: list[tuple[int, int, int]] = []

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.get_threshold())
        return replay(*args, **kwargs)

    monkeypatch.setattr(audit, "replay", watched)
    arguments = ["--data", str(tmp_path / "chain"), "--genesis", str(tmp_path / "genesis.json")]
    result = CliRunner().invoke(cli, ["audit", "replay", *arguments])
    assert result.exit_code == 0, result.output
    assert seen == [THRESHOLDS]
    assert gc.get_threshold() == DEFAULTS
