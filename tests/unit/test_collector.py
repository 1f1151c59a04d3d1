"""The node daemon and the audit replay run with the collector thresholds of
node/collector.py (why: its docstring; the effect: `make bench`)."""

from __future__ import annotations

import gc
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.config.genesis import save_genesis
from carechain.node import runner
from carechain.node.collector import THRESHOLDS, tune_collector
from carechain.storage.chain import ChainStore
from carechain.tests.chain_fixture import committee_chain, committee_genesis


@pytest.fixture(autouse=True)
def default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tuning_sets_the_thresholds_and_freezes_what_is_alive() -> None:
    tune_collector()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_the_daemon_starts_its_event_loop_with_the_tuned_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, int, int]] = []

    def fake_loop(main: Coroutine[Any, Any, None]) -> None:
        seen.append(gc.get_threshold())
        main.close()

    monkeypatch.setattr(uvloop, "run", fake_loop)
    runner.run(Path("unused"), None)
    assert seen == [THRESHOLDS]


def test_the_audit_replay_runs_with_the_tuned_collector(tmp_path: Path) -> None:
    store = ChainStore.open(tmp_path / "chain", committee_genesis())
    committee_chain(store, 2, txs_per_block=3)
    store.close()
    save_genesis(tmp_path / "genesis.json", committee_genesis())
    arguments = ["--data", str(tmp_path / "chain"), "--genesis", str(tmp_path / "genesis.json")]
    result = CliRunner().invoke(cli, ["audit", "replay", *arguments])
    assert result.exit_code == 0, result.output
    assert gc.get_threshold() == THRESHOLDS
