"""The node's inbox: consensus messages in a lane of their own that transactions can neither
delay nor fill, and a credit of transaction frames per peer that the node gives back only
when it has taken them in."""

from __future__ import annotations

import asyncio

import pytest

from carechain.p2p.network import Inbound, Inbox, Lane, Topic


def _tx(peer: str, index: int) -> Inbound:
    return Inbound(peer, Topic.TX, b"tx %d" % index)


def _vote(peer: str, index: int) -> Inbound:
    return Inbound(peer, Topic.CONSENSUS, b"vote %d" % index)


@pytest.mark.asyncio
async def test_consensus_is_read_first_and_transactions_never_take_its_room() -> None:
    inbox = Inbox(consensus_max=8, peer_consensus_max=8, peer_tx_credit=4)
    assert all(inbox.put(_tx("flooder", i)) for i in range(4))
    assert not inbox.put(_tx("flooder", 4)), "past its credit"
    assert inbox.put(_vote("flooder", 0)), "a full transaction lane leaves consensus room"
    assert inbox.put(_vote("honest", 1))
    assert (inbox.dropped_txs, inbox.dropped_consensus) == (1, 0)
    assert [m.payload for m in await inbox.next_consensus(10)] == [b"vote 0", b"vote 1"]
    assert (await inbox.get()).topic is Topic.TX
    assert len(inbox) == 3


@pytest.mark.asyncio
async def test_one_peer_cannot_fill_the_consensus_lane_for_the_others() -> None:
    inbox = Inbox(consensus_max=10, peer_consensus_max=3, peer_tx_credit=4)
    accepted = [inbox.put(_vote("loud", i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert inbox.put(_vote("quiet", 9))
    assert inbox.dropped_consensus == 2
    taken = await inbox.next_consensus(10)
    assert [m.peer for m in taken] == ["loud"] * 3 + ["quiet"]
    assert inbox.put(_vote("loud", 5)), "taking its messages gives the peer room again"


@pytest.mark.asyncio
async def test_credit_comes_back_only_when_the_node_releases_what_it_took() -> None:
    returned: list[dict[str, tuple[int, int]]] = []
    inbox = Inbox(peer_tx_credit=3)
    inbox.on_release = returned.append
    for index in range(3):
        assert inbox.put(_tx("a", index))
    assert inbox.put(_tx("b", 0))
    assert (inbox.credit("a"), inbox.credit("b")) == (0, 2)
    batch = await inbox.next_txs(10)
    assert [m.peer for m in batch] == ["a", "a", "a", "b"]
    assert inbox.credit("a") == 0, "taken is not yet taken in"
    assert not inbox.put(_tx("a", 3))
    inbox.release(batch)
    assert returned == [{"a": (3, 12), "b": (1, 4)}]  # frames and bytes, per peer
    assert (inbox.credit("a"), inbox.credit("b")) == (3, 3)
    assert inbox.put(_tx("a", 4))


@pytest.mark.asyncio
async def test_a_reader_waits_for_its_lane_only() -> None:
    inbox = Inbox()
    waiting = asyncio.ensure_future(inbox.next_consensus(1))
    inbox.put(_tx("a", 0))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "a transaction does not wake the consensus reader"
    inbox.put(_vote("a", 0))
    assert [m.payload for m in await asyncio.wait_for(waiting, 1)] == [b"vote 0"]
    assert [m.payload for m in await asyncio.wait_for(inbox.next_txs(5), 1)] == [b"tx 0"]


def test_credit_counts_bytes_as_well_as_frames_and_one_frame_always_fits() -> None:
    inbox = Inbox(peer_tx_credit=100, peer_tx_credit_bytes=1000)
    large = Inbound("a", Topic.TX, bytes(1500))  # larger than the whole byte credit
    assert inbox.put(large), "a peer with nothing waiting may always send one frame"
    assert not inbox.put(Inbound("a", Topic.TX, bytes(10)))
    inbox.release([inbox.take_txs(1)[0]])
    assert all(inbox.put(Inbound("a", Topic.TX, bytes(300))) for _ in range(3))
    assert not inbox.put(Inbound("a", Topic.TX, bytes(300))), "900 + 300 bytes exceed 1000"
    assert inbox.put(Inbound("a", Topic.TX, bytes(100)))
    assert inbox.put(Inbound("b", Topic.TX, bytes(300))), "each peer has its own credit"
    assert inbox.dropped_txs == 2


def test_each_topic_has_its_lane() -> None:
    assert Lane.of(Topic.CONSENSUS) is Lane.CONSENSUS
    assert {Lane.of(t) for t in (Topic.TX, Topic.PARTIAL)} == {Lane.TXS}
