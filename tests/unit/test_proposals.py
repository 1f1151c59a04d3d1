"""How large a proposal a validator builds (`ProposalBudget`), and how many of peers'
transactions it takes in ahead of its proposals (`PeerIntake`)."""

from __future__ import annotations

import asyncio
import time

import pytest

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.poa.state import EngineConfig
from carechain.consensus.types import Tx
from carechain.node.pools import Mempool
from carechain.node.proposals import (
    BUILD_SHARE,
    PEER_ADMIT_PROPOSALS,
    PEER_INTAKE_WINDOW_MS,
    PROPOSAL_TXS_MIN,
    RECENT_BLOCKS,
    PeerIntake,
    ProposalBudget,
)
from carechain.node.wallet import builders
from carechain.tests.ledger_world import World

TIMEOUTS = EngineConfig("carechain-test", heartbeat_interval_ms=1000, clock_drift_ms_max=500)


def _registrations(count: int) -> list[Tx]:
    expiry = int(time.time() * 1000) + 3_600_000
    txs = []
    for index in range(count):
        one = PrivateKey(b"\x07" + index.to_bytes(31, "big"))
        two = PrivateKey(b"\x08" + index.to_bytes(31, "big"))
        draft = builders.register_patient(
            "carechain-test", (one.public_key, two.public_key), expiry
        )
        txs.append(draft.signed(one, two))
    return txs


def _budget(cost_s_per_tx: float) -> ProposalBudget:
    budget = ProposalBudget(TIMEOUTS)
    for _ in range(40):  # the smoothed cost settles on what is measured
        budget.observe(1000, 1000 * cost_s_per_tx, building=True)
        budget.observe(1000, 1000 * cost_s_per_tx, building=False)
    return budget


def test_a_proposal_carries_what_executes_in_its_share_of_the_rounds_timeout() -> None:
    budget = _budget(0.001)
    share_s = TIMEOUTS.timeout_propose_ms / 1000 * BUILD_SHARE
    assert budget.limit(0).txs == pytest.approx(share_s / 0.001, rel=0.01)
    assert budget.limit(1).txs > budget.limit(0).txs, "a later round allows more"
    budget.observe(10, 100.0, building=False)  # too few transactions to say anything
    assert budget.limit(0).txs == pytest.approx(share_s / 0.001, rel=0.01)
    assert _budget(10.0).limit(0).txs == PROPOSAL_TXS_MIN, "however slow, the chain moves"


def test_the_slower_of_building_and_validating_sizes_a_proposal() -> None:
    """Validators validate a proposal all at once, on shared cores: when that is slower than
    building it alone, the validation time is what must fit the round."""
    budget = _budget(0.001)
    share_s = TIMEOUTS.timeout_propose_ms / 1000 * BUILD_SHARE
    for _ in range(40):
        budget.observe(500, 500 * 0.003, building=False)
    assert budget.limit(0).txs == pytest.approx(share_s / 0.003, rel=0.01)
    for _ in range(40):
        budget.observe(500, 500 * 0.0005, building=False)
    assert budget.limit(0).txs == pytest.approx(share_s / 0.001, rel=0.01), "building, now"


def test_peers_transactions_are_taken_in_up_to_a_few_proposals_worth() -> None:
    budget = _budget(0.05)  # 15 transactions in round 0's share: the floor, 64, applies
    pool = Mempool(10_000, 1 << 30)
    intake = PeerIntake(pool, budget, lambda: 0)
    ahead = PEER_ADMIT_PROPOSALS * PROPOSAL_TXS_MIN
    assert intake.room() == ahead
    for tx in _registrations(10):
        pool.add(tx, 0)
    assert intake.room() == ahead - 10
    intake.committed(100)  # another proposer, measuring its own budget, built a larger block
    assert intake.room() == PEER_ADMIT_PROPOSALS * 100 - 10
    for _ in range(RECENT_BLOCKS):
        intake.committed(0)
    assert intake.room() == ahead - 10, "only the recent blocks count"


def test_a_full_mempool_leaves_no_room_and_a_commit_that_empties_it_wakes_the_intake() -> None:
    txs = _registrations(3)
    pool = Mempool(3, 1 << 30)
    intake = PeerIntake(pool, _budget(0.001), lambda: 0)
    for tx in txs:
        pool.add(tx, 0)
    assert intake.room() == 0

    async def scenario() -> None:
        waiting = asyncio.create_task(intake.wait_for_room())
        await asyncio.sleep(0.01)
        intake.committed(0)  # nothing left the pool: still no room
        await asyncio.sleep(0.01)
        assert not waiting.done()
        pool.drop_rejected(
            [(txs[0], TxRejected("expired", "past its expiry"))], World().store
        )  # as a proposal drops one
        intake.committed(0)
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())
    assert intake.room() == 1
    bytes_full = Mempool(100, len(txs[0].encode()))
    bytes_full.add(txs[0], 0)
    assert PeerIntake(bytes_full, _budget(0.001), lambda: 0).room() == 0, "no bytes left, no room"


def test_transactions_that_waited_long_do_not_keep_the_peers_out() -> None:
    """A pool full of transactions that are not about to commit (their nonce waits for a
    predecessor, say) counts them only while they are recent: the predecessor can still come
    in from a peer."""
    now = [0]
    pool = Mempool(10_000, 1 << 30)
    intake = PeerIntake(pool, _budget(0.05), lambda: now[0])
    ahead = PEER_ADMIT_PROPOSALS * PROPOSAL_TXS_MIN
    stuck = _registrations(ahead)
    for tx in stuck:
        pool.add(tx, 0)
    assert intake.room() == 0
    now[0] = PEER_INTAKE_WINDOW_MS + 1
    assert intake.room() == ahead, "the stuck ones no longer count"
    fresh = _registrations(ahead + 5)[ahead:]
    for tx in fresh:
        pool.add(tx, now[0])
    assert intake.room() == ahead - 5
    pool.txs_max = len(pool) + 2
    assert intake.room() == 2, "the mempool's own bound still holds"
