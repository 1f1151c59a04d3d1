"""Power loss at any instant: a child process commits blocks in a loop and is killed with
SIGKILL at random moments, 100 times. Every reopen must pass the consistency check, its head
must be a fully committed block, and no block the child acknowledged as committed may be lost.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext
from carechain.storage.chain import ChainStore
from carechain.tests.chain_fixture import certified_blocks, fixture_genesis

SEED = 20261130
KILLS = 100
BLOCKS = 300


def _commit_forever(path: Path, report: Connection) -> None:
    """The child: commit the fixture's blocks; acknowledge each after its durable commit."""
    store = ChainStore.open(path, fixture_genesis())
    chain = ChainContext.from_genesis(fixture_genesis())
    for block, certificate in certified_blocks(BLOCKS)[store.height :]:
        store.commit(block, certificate, apply_block(store, block, chain))
        report.send(block.header.height)
    report.send(-1)
    time.sleep(60)


@pytest.mark.slow
def test_sigkill_during_commits_never_loses_or_tears_a_block(tmp_path: Path) -> None:
    blocks = certified_blocks(BLOCKS)  # built before forking, so the child inherits them
    rng = random.Random(SEED)
    context = multiprocessing.get_context("fork")
    path = tmp_path / "chain"
    highest_seen = 0
    mid_stream = 0  # kills that landed while the child was still committing
    for kill in range(KILLS):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_commit_forever, args=(path, sender), daemon=True)
        child.start()
        sender.close()
        time.sleep(rng.uniform(0.005, 0.08))
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(timeout=30)
        acknowledged = 0
        while receiver.poll():
            try:
                acknowledged = max(acknowledged, receiver.recv())
            except EOFError:
                break
        receiver.close()
        store = ChainStore.open(path, fixture_genesis(), verify_state=kill % 10 == 0)
        try:
            context_note = f"kill {kill} (seed {SEED}): acknowledged {acknowledged}"
            assert store.height >= acknowledged, f"{context_note}, reopened at {store.height}"
            assert store.height >= highest_seen, f"{context_note}: the head went backwards"
            if store.height:
                head_block = store.block(store.height)
                assert head_block == blocks[store.height - 1][0], context_note
                assert store.certificate(store.height) == blocks[store.height - 1][1]
            if highest_seen < store.height < BLOCKS:
                mid_stream += 1
            highest_seen = store.height
        finally:
            store.close()
        if highest_seen >= BLOCKS:  # start over so later kills land mid-chain again
            for item in sorted(path.rglob("*"), reverse=True):
                item.unlink() if item.is_file() else item.rmdir()
            highest_seen = 0
    assert mid_stream >= KILLS // 2, f"only {mid_stream} of {KILLS} kills interrupted commits"
