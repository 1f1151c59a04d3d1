"""The node under load, in one process over the in-memory network: sync starts only when a
peer is far enough ahead, talks to the network without the node's lock and asks only the
peers known to be ahead, up to the height they showed; peers' transactions are admitted in
batches (one engine event each), are not executed on admission, and wait in the inbox, never
dropped, while the mempool is full."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.poa.application import ProposalLimit
from carechain.consensus.poa.events import Tick
from carechain.consensus.poa.messages import Proposal, WalKind, decode_message
from carechain.consensus.poa.votes import proposer_of
from carechain.consensus.types import Tx, Vote
from carechain.node.peer_messages import API_BATCH_WORKERS_MIN
from carechain.node.proposals import PEER_ADMIT_PROPOSALS
from carechain.node.wallet import builders
from carechain.node.wallet.keystore import load_key
from carechain.p2p.memory import MemoryNetwork
from carechain.p2p.network import Topic
from carechain.tests.integration.cluster import Cluster, eventually, running_cluster

LOADGEN = PrivateKey(b"\x44" * 32)


def _registrations(cluster: Cluster, count: int, seed: int) -> list[Tx]:
    chain_id = cluster.members[0].node.genesis.chain_id
    expiry = int(time.time() * 1000) + 3_600_000
    txs = []
    for index in range(count):
        one = PrivateKey(seed.to_bytes(4, "big") + index.to_bytes(28, "big"))
        two = PrivateKey(b"\x02" + one.seed[1:])
        draft = builders.register_patient(chain_id, (one.public_key, two.public_key), expiry)
        txs.append(draft.signed(one, two))
    return txs


async def _commit_all(cluster: Cluster, txs: list[Tx], via: int = 0) -> None:
    node = cluster.members[via].node
    for tx in txs:
        await node.submit(tx)
    await eventually(
        lambda: all(m.node.store.tx_location(t.id) for m in cluster.members for t in txs)
    )


@pytest.mark.asyncio
async def test_sync_waits_for_a_lead_of_two_heights_unless_consensus_stalled(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        await _commit_all(cluster, _registrations(cluster, 2, seed=1))
        node, peer = cluster.members[0].node, cluster.members[1].node.node_id
        ours, before = node.store.height, node.catchup.syncs
        node.catchup.peer_ahead(peer, ours + 1)  # routine: a commit reaches validators unevenly
        assert node.catchup.syncs == before
        assert node.catchup.peer_heights[peer] == ours + 1
        node.catchup.peer_ahead(peer, ours + 2)
        assert node.catchup.syncs == before + 1
        # a non-validator's claim starts a sync from it, but is not kept to steer later ones
        node.catchup.peer_ahead("an-observer", ours + 2**40)
        assert "an-observer" not in node.catchup.peer_heights


@pytest_asyncio.fixture
async def lagging(tmp_path: Path) -> AsyncIterator[tuple[Cluster, Any, asyncio.Event]]:
    """A cluster whose fourth validator was stopped while the others committed, restarted
    with every peer's range streams held at a gate (`asyncio.Event`)."""
    async with running_cluster(tmp_path) as cluster:
        late = cluster.members[3]
        home = late.node.home
        await cluster.stop_member(late)
        await _commit_all(cluster, _registrations(cluster, 6, seed=2))
        for _ in range(3):  # heights of their own, one per block
            await _commit_all(cluster, _registrations(cluster, 1, seed=3 + _))
        gate = asyncio.Event()
        for member in cluster.members:
            network: MemoryNetwork = member.node.network  # type: ignore[assignment]
            serve = network._ranges
            assert serve is not None

            async def held(remote: str, first: int, last: int, serve: Any = serve) -> Any:
                await gate.wait()
                async for item in serve(remote, first, last):
                    yield item

            network._ranges = held
        restarted = await cluster.start_node(home)
        yield cluster, restarted, gate


@pytest.mark.asyncio
async def test_sync_leaves_the_node_free_while_it_waits_for_the_network(
    lagging: tuple[Cluster, Any, asyncio.Event],
) -> None:
    cluster, restarted, gate = lagging
    node = restarted.node
    asked: list[tuple[str, int, int]] = []
    request = node.network.request_range

    def recording(peer: str, first: int, last: int) -> Any:
        asked.append((peer, first, last))
        return request(peer, first, last)

    node.network.request_range = recording
    node.catchup.syncer.network = node.network
    await eventually(lambda: node.catchup.syncing)
    for _ in range(5):  # the stream waits at the gate; the node goes on
        assert not node.lock.locked()
        await asyncio.wait_for(node.handle(Tick(node.clock_ms())), 1.0)
        await asyncio.sleep(0.05)
    gate.set()
    top = cluster.members[0].node.store.height
    await eventually(lambda: node.store.height >= top)
    assert asked, "the node asked a peer for blocks"
    for peer, first, last in asked:
        assert node.catchup.peer_heights.get(peer, 0) > first - 1, (
            f"{peer} was not known to be ahead"
        )
        assert last <= max(node.catchup.peer_heights.values()), "asked past the height shown"


@pytest.mark.asyncio
@pytest.mark.parametrize("held_by", ["a full mempool", "proposals' worth pending"])
async def test_peers_transactions_wait_in_the_inbox_while_the_mempool_holds_enough(
    tmp_path: Path, held_by: str
) -> None:
    """Peers' transactions are taken in while the mempool has room and holds less than
    PEER_ADMIT_PROPOSALS proposals' worth; the rest waits in the inbox, none dropped."""
    loadgen = peer_id(LOADGEN.public_key)
    async with running_cluster(tmp_path, observers=(loadgen,)) as cluster:
        node = cluster.members[0].node
        for member in cluster.members:
            if held_by == "a full mempool":
                member.node.mempool.txs_max = 5
            else:  # proposals of two transactions: the pool holds a few of them ahead
                small = lambda round: ProposalLimit(2, 1 << 20)  # noqa: E731
                member.node.proposal_budget.limit = small  # type: ignore[method-assign]
                member.node.app.proposal_limit = small
        bound = 5 if held_by == "a full mempool" else 2 * PEER_ADMIT_PROPOSALS
        events = 0
        notify = node.transactions_available

        async def counting() -> None:
            nonlocal events
            events += 1
            await notify()

        node.transactions_available = counting  # type: ignore[method-assign]
        validators = {m.node.node_id for m in cluster.members}
        sender = MemoryNetwork(cluster.hub, loadgen, validators)
        await sender.start()
        pool, waiting = [0], [0]

        async def sample() -> None:
            while True:
                pool[0] = max(pool[0], len(node.mempool))
                waiting[0] = max(waiting[0], len(node.network.inbox.txs))
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        try:
            await eventually(lambda: set(sender.peers()) == validators)
            txs = _registrations(cluster, 40, seed=9)
            for tx in txs:
                await sender.broadcast(Topic.TX, tx.encode())
            await eventually(lambda: all(node.store.tx_location(t.id) for t in txs), 60)
        finally:
            sampler.cancel()
            await sender.stop()
        assert pool[0] <= bound, f"more than {bound} taken in"
        assert waiting[0] > 0, "the rest waited in the inbox"
        assert [m.node.peer_messages.pool_full_drops for m in cluster.members] == [0] * 4
        assert cluster.hub.dropped == 0
        assert events < len(txs), f"{events} engine events for {len(txs)} transactions"


@pytest.mark.asyncio
async def test_a_peers_transaction_is_executed_by_the_proposal_not_on_admission(
    tmp_path: Path,
) -> None:
    """A record for a vault that does not exist: the API refuses it at once; sent by a peer
    it waits in the mempool until a proposal executes it and drops it, with the reason."""
    loadgen = peer_id(LOADGEN.public_key)
    async with running_cluster(tmp_path, observers=(loadgen,)) as cluster:
        node = cluster.members[0].node
        patient = PrivateKey(b"\x45" * 32)
        draft = builders.receipt(
            node.genesis.chain_id, patient.public_key, 1, int(time.time() * 1000) + 60_000,
            vault=bytes(20), record_id=bytes(16),
        )  # fmt: skip
        tx = draft.signed(patient)
        sender = MemoryNetwork(cluster.hub, loadgen, {node.node_id})
        await sender.start()
        try:
            await eventually(lambda: node.node_id in sender.peers())
            await sender.send(node.node_id, Topic.TX, tx.encode())
            await eventually(lambda: tx.id in node.mempool.rejected, 30)
        finally:
            await sender.stop()
        assert node.store.tx_location(tx.id) is None
        assert node.mempool.rejected[tx.id] != "bad_signature"


@pytest.mark.asyncio
async def test_a_validator_whose_wal_fails_sends_nothing_unlogged_and_stops_signing(
    tmp_path: Path,
) -> None:
    """A WAL record that cannot be written (here: every record, with the WAL's bound made
    tiny) is counted, never ends the process, and nothing it guards leaves the node, not even
    in the engine's re-sends a second later; the validator signs nothing more, and the other
    three keep committing."""
    async with running_cluster(tmp_path) as cluster:
        broken = cluster.members[0].node
        broken.wal.record_bytes_max = 8
        sent: list[bytes] = []
        broadcast = broken.network.broadcast

        async def recording(topic: Topic, payload: bytes) -> None:
            if topic is Topic.CONSENSUS:
                sent.append(payload)
            await broadcast(topic, payload)

        broken.network.broadcast = recording  # type: ignore[method-assign]
        txs = _registrations(cluster, 6, seed=11)
        for tx in txs:
            await cluster.members[1].node.submit(tx)
            await asyncio.sleep(0.3)
        await eventually(
            lambda: all(m.node.store.tx_location(t.id) for m in cluster.members for t in txs), 60
        )
        await asyncio.sleep(1.5)  # past the engine's re-sends
        assert broken.signing.wal_failures > 0
        assert broken.signing.held
        assert not cluster.members[0].task.done(), "the node runs on"
        own = broken.engine.me
        for payload in sent:
            message = decode_message(payload, max_bytes=len(payload))
            if isinstance(message, Proposal) and message.proposer == own:
                slot = (WalKind.PROPOSAL, message.height, message.round)
                assert slot not in broken.signing.unlogged, "an unlogged proposal left the node"
            if isinstance(message, Vote) and message.validator == own:
                slot = (WalKind.VOTE, message.height, message.round)
                assert slot not in broken.signing.unlogged, "an unlogged vote left the node"


@pytest.mark.asyncio
async def test_a_proposals_unseen_signatures_are_checked_in_the_workers(tmp_path: Path) -> None:
    """Transactions only the proposer held: the other validators check their signatures in
    the worker processes when the proposal arrives, not one by one while validating it on
    the event loop."""
    async with running_cluster(tmp_path) as cluster:
        proposer = cluster.members[0].node
        txs = _registrations(cluster, API_BATCH_WORKERS_MIN + 8, seed=12)
        for member in cluster.members:
            member.node.verifier.workers = 2  # whatever this machine's core count
        for tx in txs:  # into its pool alone: never gossiped, never relayed
            assert proposer.mempool.add(tx, proposer.clock_ms())
        await proposer.transactions_available()
        await eventually(
            lambda: all(m.node.store.tx_location(t.id) for m in cluster.members for t in txs), 60
        )
        others = [m.node.verifier.verified for m in cluster.members[1:]]
    assert all(verified >= len(txs) for verified in others), others


@pytest.mark.asyncio
async def test_only_a_proposal_the_engine_would_take_is_checked_ahead(tmp_path: Path) -> None:
    """The workers check a proposal's signatures ahead only for this height, this round or
    the next, from that round's proposer and signed by it: a peer cannot make a node spend
    its workers on proposals the engine refuses for one signature check."""
    async with running_cluster(tmp_path) as cluster:
        node = cluster.members[0].node
        keys = [load_key(m.node.home / "keys" / "validator.json", None) for m in cluster.members]
        by_key = {key.public_key: key for key in keys}
        state = node.engine.state
        assert state is not None
        height, round = state.height, state.round + 1  # no await below: the state holds still

        def proposal(round: int, key: PrivateKey, height: int = height) -> Proposal:
            block = node.app.propose(state.height, round, node.clock_ms(), key.public_key)
            draft = Proposal(node.genesis.chain_id, height, round, -1, block, key.public_key)
            return draft.signed_by(key)

        def proposer(round: int) -> PrivateKey:
            return by_key[proposer_of(state.validators, height, round)]

        right = proposal(round, proposer(round))
        assert node.peer_messages.checked_ahead(right)
        other = next(key for key in keys if key.public_key != proposer(round).public_key)
        assert not node.peer_messages.checked_ahead(proposal(round, other)), (
            "not that round's proposer"
        )
        forged = dataclasses.replace(right, signature=bytes(64))
        assert not node.peer_messages.checked_ahead(forged), "not signed by the proposer"
        assert not node.peer_messages.checked_ahead(proposal(round + 1, proposer(round + 1))), (
            "too far ahead"
        )
        later = proposal(round, proposer(round), height=height + 1)
        assert not node.peer_messages.checked_ahead(later), "another height"
