"""The network, end to end: the same tests on real libp2p hosts on 127.0.0.1 and on the
in-memory twin, plus attacks only a real socket can carry."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import re
import socket
import struct
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import multiaddr
import pytest
import pytest_asyncio
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from carechain.consensus.crypto import PrivateKey, encrypt_stream, peer_id, stream_ciphertext_bytes
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.ledger.bodies import PutRecord
from carechain.consensus.poa.application import LedgerApplication
from carechain.consensus.poa.messages import Commit
from carechain.node.audit.observer import ObserverError, observe
from carechain.node.audit.replay import replay
from carechain.node.blob_service import BlobService, fetch_from_peer
from carechain.node.sync import RANGE_MAX, BlockSync, range_provider
from carechain.node.wallet import builders
from carechain.p2p.libp2p_gossip import TOPIC_NAMES
from carechain.p2p.libp2p_net import MESSAGES, STALL_TIMEOUT_S, Libp2pNetwork, bound_stalls
from carechain.p2p.memory import MemoryHub, MemoryNetwork
from carechain.p2p.network import (
    FRAME_HEADER,
    GOSSIP_STRIKES_MAX,
    GOSSIP_TOPICS,
    Network,
    PeerError,
    Topic,
    Verdict,
    encode_frame,
)
from carechain.storage.blobs.backends import MemoryObjects
from carechain.storage.blobs.store import BlobCorruptError, BlobStore, from_bytes
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.chain_fixture import certified_blocks, fixture_genesis
from carechain.tests.integration.cluster import eventually
from carechain.tests.leaks import LEAKED_SOCKET
from carechain.tests.ledger_world import CHAIN_ID, World

# The leaked-socket warning of py-libp2p is ignored in this module (see tests.leaks), and a
# collection at the module's end reaps the leaks here rather than in a later test.
pytestmark = pytest.mark.filterwarnings(LEAKED_SOCKET)


@pytest.fixture(scope="module", autouse=True)
def _reap_leaked_sockets() -> Iterator[None]:
    yield
    gc.collect()


_eventually = functools.partial(eventually, timeout_s=20.0)  # this module's deadline


def _key(index: int) -> PrivateKey:
    return PrivateKey(bytes([index]) * 32)


@dataclasses.dataclass
class Cluster:
    kind: str
    hub: MemoryHub = dataclasses.field(default_factory=MemoryHub)
    started: list[Any] = dataclasses.field(default_factory=list)

    async def network(self, index: int, allowed: set[int], dial: list[Any] | None = None) -> Any:
        ids = {peer_id(_key(i).public_key) for i in allowed}
        if self.kind == "memory":
            net: Any = MemoryNetwork(self.hub, peer_id(_key(index).public_key), ids)
        else:
            addresses = [n.listen_addrs[0] for n in dial or []]
            net = Libp2pNetwork(_key(index), "/ip4/127.0.0.1/tcp/0", dial=addresses, allowed=ids)
        await net.start()
        self.started.append(net)
        return net

    async def full_mesh(self, count: int) -> list[Any]:
        everyone = set(range(1, count + 1))
        nets: list[Any] = []
        for index in range(1, count + 1):
            nets.append(await self.network(index, everyone - {index}, dial=list(nets)))
        await _eventually(lambda: all(len(n.peers()) == count - 1 for n in nets))
        return nets


@pytest_asyncio.fixture(params=["memory", "libp2p"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    made = Cluster(request.param)
    yield made
    for net in made.started:
        await net.stop()


async def _drain(net: Network, count: int) -> list[Any]:
    return [await asyncio.wait_for(net.inbox.get(), 10) for _ in range(count)]


@pytest.mark.asyncio
async def test_four_nodes_connect_and_fan_out(cluster: Cluster) -> None:
    nets = await cluster.full_mesh(4)
    for sender in nets:
        await sender.broadcast(Topic.CONSENSUS, f"from {sender.local_id}".encode())
    for receiver in nets:
        got = await _drain(receiver, 3)
        assert {m.peer for m in got} == {n.local_id for n in nets} - {receiver.local_id}
        assert all(m.topic is Topic.CONSENSUS for m in got)
    await nets[0].send(nets[2].local_id, Topic.TX, b"only you")
    (message,) = await _drain(nets[2], 1)
    assert (message.peer, message.payload) == (nets[0].local_id, b"only you")


@pytest.mark.asyncio
@pytest.mark.security
async def test_an_unregistered_peer_is_refused_inbound_and_outbound(cluster: Cluster) -> None:
    nets = await cluster.full_mesh(3)
    outsider = await cluster.network(9, {1, 2, 3}, dial=nets)  # dials in: inbound refusal
    if cluster.kind == "libp2p":
        nets[0].dial.append(outsider.listen_addrs[0])  # a member dials out: outbound refusal
    await asyncio.sleep(2.5)
    assert outsider.peers() == []
    assert all(outsider.local_id not in n.peers() for n in nets)
    if cluster.kind == "libp2p":
        assert sum(n.refused for n in nets) >= 1
        assert nets[0].refused >= 1, "the outbound dial was refused after the handshake"


@pytest.mark.asyncio
async def test_a_node_removed_by_governance_is_disconnected(cluster: Cluster) -> None:
    nets = await cluster.full_mesh(4)
    removed = nets[3].local_id
    for net in nets[:3]:
        net.allow({n.local_id for n in nets[:3]} - {net.local_id})
    await _eventually(lambda: all(removed not in n.peers() for n in nets[:3]))
    await nets[0].broadcast(Topic.TX, b"after removal")
    assert len(await _drain(nets[1], 1)) == 1
    await asyncio.sleep(0.3)
    assert nets[3].inbox.empty()


@dataclasses.dataclass
class GossipLog:
    """A node's gossip handler: records what it is handed; a strict one rejects b"bad..."."""

    strict: bool = False
    seen: list[tuple[str, Topic, bytes]] = dataclasses.field(default_factory=list)

    async def __call__(self, peer: str, topic: Topic, payload: bytes) -> Verdict:
        self.seen.append((peer, topic, payload))
        return Verdict.REJECT if self.strict and payload.startswith(b"bad") else Verdict.ACCEPT

    def payloads(self) -> list[bytes]:
        return [payload for _, _, payload in self.seen]


async def _gossip_line(cluster: Cluster) -> tuple[list[Any], list[GossipLog]]:
    """Three nodes in a line, 1 - 2 - 3 (3 is not admitted by 1), 3 not taking blocks."""
    first = await cluster.network(1, {2})
    second = await cluster.network(2, {1, 3}, dial=[first])
    third = await cluster.network(3, {2}, dial=[second])
    logs = [GossipLog(), GossipLog(), GossipLog(strict=True)]
    nets = [first, second, third]
    for net, log, topics in zip(
        nets, logs, [GOSSIP_TOPICS, GOSSIP_TOPICS, {Topic.TX}], strict=True
    ):
        net.serve_gossip(log, frozenset(topics))
    await _eventually(lambda: len(second.peers()) == 2)
    probe = 0
    while not logs[2].seen:  # until the mesh carries a message from 1 to 3
        probe += 1
        assert probe < 200, "gossip never reached the third node"
        await first.publish(Topic.TX, b"probe %d" % probe)
        await asyncio.sleep(0.1)
    return nets, logs


@pytest.mark.asyncio
async def test_gossip_is_forwarded_once_and_duplicates_are_dropped_by_content_id(
    cluster: Cluster,
) -> None:
    (first, second, _), logs = await _gossip_line(cluster)
    for log in logs:
        log.seen.clear()
    for _ in range(3):
        await first.publish(Topic.TX, b"a transaction")
    await _eventually(lambda: b"a transaction" in logs[2].payloads())
    await second.publish(Topic.TX, b"a transaction")  # a node re-publishing what it saw
    await first.publish(Topic.BLOCK, b"a block")
    await _eventually(lambda: b"a block" in logs[1].payloads())
    await asyncio.sleep(0.5)
    assert logs[1].seen == [
        (first.local_id, Topic.TX, b"a transaction"),
        (first.local_id, Topic.BLOCK, b"a block"),
    ]
    assert logs[2].seen == [(second.local_id, Topic.TX, b"a transaction")]
    assert logs[0].seen == []  # its own publications are not handed back


@pytest.mark.asyncio
async def test_a_peer_forwarding_invalid_gossip_is_disconnected(cluster: Cluster) -> None:
    (first, second, third), logs = await _gossip_line(cluster)
    for number in range(GOSSIP_STRIKES_MAX):
        await first.publish(Topic.TX, b"bad %d" % number)  # 2 accepts them, 3 rejects them
    await _eventually(lambda: second.local_id in third.disconnected_for)
    await _eventually(lambda: second.local_id not in third.peers())
    assert third.disconnected_for[second.local_id] == "forwarded invalid gossip messages"
    assert sorted(p for p in logs[2].payloads() if p.startswith(b"bad")) == [
        b"bad %d" % n for n in range(GOSSIP_STRIKES_MAX)
    ]
    await asyncio.sleep(DIAL_WAIT_S)  # the dial loop tries again: the ban holds
    assert second.local_id not in third.peers()
    await first.publish(Topic.TX, b"still fine")
    await _eventually(lambda: b"still fine" in logs[1].payloads())


@pytest.mark.asyncio
async def test_gossip_outside_strict_no_sign_is_refused_and_a_ban_says_why(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages stamped with `from` and `seqno` (py-libp2p's own `publish`, as other stacks'
    signing modes do) are refused unread, count against their forwarder and end in a ban, and
    the refusal of its redial names the ban, not registration."""
    if cluster.kind != "libp2p":
        pytest.skip("a libp2p message policy")
    (first, second, _), logs = await _gossip_line(cluster)
    name = TOPIC_NAMES[Topic.TX]
    for number in range(GOSSIP_STRIKES_MAX):
        payload = b"stamped %d" % number
        first._to_trio(lambda p=payload: first._nursery.start_soon(first._pubsub.publish, name, p))
    await _eventually(lambda: first.local_id in second.disconnected_for)
    assert not any(p.startswith(b"stamped") for p in logs[1].payloads())
    assert second.disconnected_for[first.local_id] == "forwarded invalid gossip messages"
    await _eventually(lambda: second.refused_peers().get("banned", 0) >= 1)  # its redials
    assert first.local_id not in second.peers()
    refusals = [r.getMessage() for r in caplog.records if "refused peer" in r.getMessage()]
    assert any(
        re.fullmatch(
            f"refused peer {first.local_id}: it is banned until \\d\\d:\\d\\d:\\d\\d UTC: "
            "it forwarded invalid gossip messages",
            message,
        )
        for message in refusals
    ), refusals


DIAL_WAIT_S = 1.5
BLOCKS = 5000


def _chain_with(blocks: int) -> ChainStore:
    store = ChainStore(MemoryKV())
    store.state.initialize(fixture_genesis())
    app = LedgerApplication(fixture_genesis(), store, lambda: ())
    for block, certificate in certified_blocks(blocks, txs_per_block=0):
        assert app.validate(block) is None
        store.commit(block, certificate, app.executed(block))
    return store


@pytest.fixture(scope="module")
def full_chain() -> ChainStore:
    return _chain_with(BLOCKS)


@pytest.mark.asyncio
async def test_sync_5000_blocks_through_a_broken_stream_and_a_forger(
    cluster: Cluster, full_chain: ChainStore
) -> None:
    client_net, breaking, forging, honest = await cluster.full_mesh(4)
    good = range_provider(full_chain)

    async def breaks_midway(remote: str, first: int, last: int) -> AsyncIterator[bytes]:
        sent = 0
        async for item in good(remote, first, last):
            if sent == 700:
                raise PeerError("connection reset")
            sent += 1
            yield item

    async def forges(remote: str, first: int, last: int) -> AsyncIterator[bytes]:
        async for item in good(remote, first, last):
            commit = Commit.decode(item, max_bytes=len(item))
            forged = dataclasses.replace(
                commit.certificate,
                precommits=commit.certificate.precommits[:0] or commit.certificate.precommits,
            )
            block = dataclasses.replace(
                commit.block,
                header=dataclasses.replace(
                    commit.block.header, time_ms=commit.block.header.time_ms + 1
                ),
            )
            yield Commit(block, forged).encode()

    breaking.serve_range(breaks_midway)
    forging.serve_range(forges)
    honest.serve_range(good)
    store = ChainStore(MemoryKV())
    store.state.initialize(fixture_genesis())
    syncer = BlockSync(client_net, store, LedgerApplication(fixture_genesis(), store, lambda: ()))
    started = time.perf_counter()
    reached = await syncer.sync([breaking.local_id, forging.local_id, honest.local_id], BLOCKS)
    elapsed = time.perf_counter() - started
    assert reached == BLOCKS
    assert store.head() == full_chain.head()
    assert store.state.root == full_chain.state.root
    print(f"{cluster.kind}: synced {BLOCKS} blocks in {elapsed:.1f}s")


@pytest.mark.asyncio
@pytest.mark.security
async def test_blob_fetch_needs_a_grant(cluster: Cluster) -> None:
    world = World()
    vault = world.create_vault(team=("A",))
    blobs = BlobStore(MemoryObjects())
    plaintext = b"ECG " * 400_000  # 1.6 MB: a UnixFS tree of two leaves
    ciphertext = b"".join(encrypt_stream(bytes(32), [plaintext]))
    content_id = await blobs.put(from_bytes(ciphertext))
    encrypted = world.record_draft(vault).body
    assert isinstance(encrypted, PutRecord)
    body = dataclasses.replace(
        encrypted, content_id=content_id, inline_ciphertext=b"", size_bytes=len(plaintext)
    )
    draft = builders.TxDraft(
        CHAIN_ID, "record.put", vault, world.nonce(vault), world.expiry(), body
    )
    world.block(draft.signed(world.p1, world.hospital["A"]))
    world.grant(vault, "B")
    serving, reader = await cluster.full_mesh(2)
    service = BlobService(world.store, CHAIN_ID, blobs, lambda: world.time_ms)
    serving.serve_blobs(service.serve)

    def request(key: PrivateKey) -> BlobRequest:
        unsigned = BlobRequest(
            CHAIN_ID, key.public_key, vault, body.record_id, content_id, world.time_ms
        )
        return unsigned.signed_by(key)

    size = stream_ciphertext_bytes(len(plaintext))
    fetched = await fetch_from_peer(reader, serving.local_id, request(world.hospital["B"]), size)
    assert fetched == ciphertext
    for wrong in (size + 1, size - 1):  # a length the record does not give: fewer, or more
        with pytest.raises(BlobCorruptError, match="the record's are"):
            await fetch_from_peer(reader, serving.local_id, request(world.hospital["B"]), wrong)
    with pytest.raises(PeerError, match="no active grant"):
        await fetch_from_peer(reader, serving.local_id, request(world.hospital["C"]), size)
    forged = dataclasses.replace(
        request(world.hospital["C"]), reader=world.hospital["B"].public_key
    )
    with pytest.raises(PeerError, match="signature does not verify"):
        await fetch_from_peer(reader, serving.local_id, forged, size)
    assert (service.served, service.refused) == (3, 2)


# --- attacks on real sockets -------------------------------------------------------------------


async def _raw(attacker: Libp2pNetwork, victim: str, data: bytes) -> None:
    """Open a message stream from `attacker` and write raw bytes (test-only access)."""

    async def write() -> None:
        # The victim may reset the connection mid-write: that is the outcome under test, and it
        # must not end the attacker's own host (which `stop()` would then report as failed).
        with trio.move_on_after(5), contextlib.suppress(StreamError):
            stream = await attacker._host.new_stream(ID.from_base58(victim), [MESSAGES])
            await stream.write(data)
            await trio.sleep(1)

    attacker._to_trio(lambda: attacker._nursery.start_soon(write))


ATTACKS = [
    ("unknown topic", encode_frame(77, b"garbage")),
    ("oversize frame", FRAME_HEADER.pack(1 << 30, 1) + b"x" * 100),
    ("flood", b"".join(encode_frame(Topic.TX, b"spam") for _ in range(20_000))),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("attack", "data"), ATTACKS, ids=[a for a, _ in ATTACKS])
async def test_garbage_oversize_and_floods_cost_the_peer_its_connection(
    attack: str, data: bytes
) -> None:
    made = Cluster("libp2p")
    try:
        victim, bystander, attacker = await made.full_mesh(3)
        victim.rate.rate = 2000
        await _raw(attacker, victim.local_id, data)
        await _eventually(lambda: attacker.local_id in victim.disconnected_for, timeout_s=15)
        await bystander.send(victim.local_id, Topic.TX, b"still alive")
        deadline = time.monotonic() + 10
        while True:
            message = await asyncio.wait_for(victim.inbox.get(), 10)
            if message.payload == b"still alive" or time.monotonic() > deadline:
                break
        assert message.payload == b"still alive"
    finally:
        for net in made.started:
            await net.stop()


@pytest.mark.asyncio
async def test_a_transaction_flood_waits_for_credit_and_never_delays_a_vote() -> None:
    """A peer's transactions beyond its credit stay unread (on the wire, in its queue) until
    the node releases what it took, even for longer than py-libp2p waits on a closed Yamux
    window (5 s); a vote sent after them arrives at once, and nothing is dropped or
    reordered."""
    made = Cluster("libp2p")
    try:
        receiver, sender = await made.full_mesh(2)
        receiver.inbox.tx_credit.frames_max = 100  # both sides keep the credit
        receiver._tx_credit.frames_max = 100
        flood = [b"tx %06d " % index + bytes(200) for index in range(3000)]  # > the window
        for payload in flood:
            await sender.broadcast(Topic.TX, payload)
        await sender.broadcast(Topic.CONSENSUS, b"a vote")
        (vote,) = await asyncio.wait_for(receiver.inbox.next_consensus(10), 10)
        assert vote.payload == b"a vote"
        await asyncio.sleep(6.5)  # the sender's window stays shut past py-libp2p's 5 s
        assert len(receiver.inbox.txs) == 100, "no more than its credit is taken in"
        received: list[bytes] = []
        while len(received) < len(flood):
            batch = await asyncio.wait_for(receiver.inbox.next_txs(60), 10)
            assert len(receiver.inbox.txs) + len(batch) <= 100
            received.extend(message.payload for message in batch)
            receiver.inbox.release(batch)
        assert received == flood
        assert (receiver.dropped, sender.dropped) == (0, 0)
    finally:
        for net in made.started:
            await net.stop()


@pytest.mark.asyncio
async def test_an_admitted_observer_syncs_the_chain_and_replays_it(full_chain: ChainStore) -> None:
    auditor, stranger = _key(30), _key(31)
    hospital = Libp2pNetwork(_key(1), "/ip4/127.0.0.1/tcp/0", allowed={peer_id(auditor.public_key)})
    hospital.serve_range(range_provider(full_chain))
    await hospital.start()
    try:
        address = hospital.listen_addrs[0]
        seen: list[int] = []
        source = await observe(auditor, address, seen.append)
        assert source.height == BLOCKS
        assert seen[-1] == BLOCKS
        assert len(seen) == BLOCKS // RANGE_MAX
        report = replay(source, fixture_genesis(), workers=1, compare_state=False)
        assert report.blocks == BLOCKS
        assert bytes.fromhex(report.state_root) == full_chain.block(BLOCKS).header.state_root
        with pytest.raises(ObserverError, match=r"p2p\.observers"):
            await observe(stranger, address, connect_timeout_s=2)
    finally:
        await hospital.stop()


def test_a_plaintext_only_dialer_is_refused() -> None:
    async def scenario() -> tuple[list[str], str]:
        target = Libp2pNetwork(
            _key(1), "/ip4/127.0.0.1/tcp/0", allowed={peer_id(_key(2).public_key)}
        )
        await target.start()
        result: dict[str, Any] = {}

        def dial() -> None:
            async def main() -> None:
                pair = create_new_key_pair(_key(2).seed)
                host = new_host(
                    key_pair=pair,
                    sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(pair)},
                )
                async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                    try:
                        with trio.fail_after(10):
                            await host.connect(
                                info_from_p2p_addr(multiaddr.Multiaddr(target.listen_addrs[0]))
                            )
                        result["outcome"] = "connected"
                    except Exception as exc:
                        result["outcome"] = type(exc).__name__

            trio.run(main)

        thread = threading.Thread(target=dial)
        thread.start()
        await asyncio.to_thread(thread.join, 30)
        peers = target.peers()
        await target.stop()
        return peers, result.get("outcome", "")

    peers, outcome = asyncio.run(scenario())
    assert outcome != "connected"
    assert peers == []


def test_frame_header_is_length_then_topic() -> None:
    assert FRAME_HEADER.size == 5
    assert struct.unpack(">IB", encode_frame(2, b"ab")[:5]) == (2, 2)


def test_a_connection_stalled_by_a_network_cut_is_closed_by_the_kernel() -> None:
    """The libp2p adapter bounds how long sent data may go unacknowledged on a peer
    connection (and probes idle ones), so a silent cut closes it and it is redialled."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
        conn = types.SimpleNamespace(
            stream=types.SimpleNamespace(stream=types.SimpleNamespace(socket=raw))
        )
        bound_stalls(conn)
        timeout_ms = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert timeout_ms == STALL_TIMEOUT_S * 1000
        assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
