"""Every frame a peer can send, fuzzed: consensus messages (proposal, vote, commit), gossiped
transactions, partials and blocks, heartbeats, blob requests, sync streams' block frames, the
WAL's records and the stream framing itself.

Two levels. The decoders (hypothesis, derandomized): a mutated frame is refused with a typed
CarechainError or, if it decodes, it is canonical (re-encodes to the same bytes). The node
(seeded): mutated frames of every kind handed to a running validator's inbound and gossip
handlers raise nothing but the typed refusals its loops expect, and the network still commits
afterwards. CARECHAIN_FUZZ_EXAMPLES raises the budget for a long run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.poa.messages import (
    Commit,
    Proposal,
    WalKind,
    WalRecord,
    commit_height,
    decode_message,
    encode_message,
    proposal_slot,
)
from carechain.consensus.types import Block, Tx, VoteType
from carechain.node.pools import PoolFull
from carechain.node.wallet import builders
from carechain.p2p.heartbeat import Heartbeat
from carechain.p2p.network import FrameReader, Inbound, PeerError, Topic, encode_frame
from carechain.tests.fuzz.mutate import budget, mutate
from carechain.tests.integration.cluster import eventually, running_cluster
from carechain.tests.unit.test_engine import CHAIN, KEYS, _certificate, block, proposal, vote

PATIENT = (PrivateKey(b"\x31" * 32), PrivateKey(b"\x32" * 32))


def decode_wire(data: bytes) -> Any:
    """A consensus message, bounded as a node of the largest chain genesis allows bounds it."""
    return decode_message(data, max_bytes=LIMITS_AT_CAP.message_bytes)


def _tx() -> Tx:
    keys = (PATIENT[0].public_key, PATIENT[1].public_key)
    return builders.register_patient(CHAIN, keys, 2**40).signed(*PATIENT)


def _samples() -> dict[str, tuple[bytes, Callable[[bytes], Any]]]:
    """kind -> (a valid encoding, its decoder)."""
    candidate = block(1, 0)
    full = Block(candidate.header, (_tx(),))
    certificate = _certificate(candidate, KEYS[:3])
    heartbeat = Heartbeat(CHAIN, KEYS[0].public_key, 7, 1, 1_000, ("/ip4/127.0.0.1/tcp/1",))
    blob = BlobRequest(CHAIN, KEYS[1].public_key, bytes(20), bytes(16), "bafy", 1_000)
    own_vote = vote(KEYS[0], VoteType.PREVOTE, 0, candidate.block_hash)
    return {
        "proposal": (encode_message(proposal(0, candidate)), decode_wire),
        "vote": (encode_message(own_vote), decode_wire),
        "commit": (encode_message(Commit(candidate, certificate)), decode_wire),
        "tx": (_tx().encode(), Tx.decode),
        "block": (full.encode(), Block.decode),
        "sync frame": (Commit(candidate, certificate).encode(), Commit.decode),
        "heartbeat": (heartbeat.signed_by(KEYS[0]).encode(), Heartbeat.decode),
        "blob request": (blob.encode(), BlobRequest.decode),
        "wal record": (WalRecord(WalKind.VOTE, 1, 0, own_vote.encode()).encode(), WalRecord.decode),
    }


SAMPLES = _samples()
ENCODINGS = [encoding for encoding, _ in SAMPLES.values()]


@settings(max_examples=budget(400), derandomize=True, deadline=None)
@given(kind=st.sampled_from(sorted(SAMPLES)), rng=st.randoms(use_true_random=False))
def test_a_mutated_frame_is_refused_with_a_typed_error_or_is_canonical(
    kind: str, rng: random.Random
) -> None:
    sample, decode = SAMPLES[kind]
    data = mutate(sample, ENCODINGS, rng)
    try:
        decoded = decode(data)
    except CarechainError:
        return
    encoded = encode_message(decoded) if decode is decode_wire else decoded.encode()
    assert encoded == data, f"{kind}: a non-canonical encoding was accepted: {data.hex()}"


def _certificate_height(message: Any) -> Any:
    return message.certificate.height if isinstance(message, Commit) else None


def _slot(message: Any) -> Any:
    return (message.height, message.round) if isinstance(message, Proposal) else None


# what the node reads of a message before (or instead of) decoding it, and what the decoded
# message says it should have read
PEEKS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], Any]]] = {
    "commit_height": (commit_height, _certificate_height),
    "proposal_slot": (proposal_slot, _slot),
}


@settings(max_examples=budget(800), derandomize=True, deadline=None)
@given(
    peek=st.sampled_from(sorted(PEEKS)),
    kind=st.sampled_from(["proposal", "vote", "commit"]),
    rng=st.randoms(use_true_random=False),
)
def test_a_peek_before_decoding_never_raises_and_agrees_with_the_decoded_message(
    peek: str, kind: str, rng: random.Random
) -> None:
    """`commit_height` and `proposal_slot` (the node's look at a commit or a proposal before
    decoding its block) never raise, and on anything that decodes they agree with the
    decoded message: a commit's certificate height, a proposal's height and round, None for
    the rest."""
    read, expected_of = PEEKS[peek]
    sample, _ = SAMPLES[kind]
    data = mutate(sample, ENCODINGS, rng) if rng.random() < 0.9 else sample
    seen = read(data)
    try:
        decoded = decode_wire(data)
    except CarechainError:
        return
    assert seen == expected_of(decoded), f"{peek} of a {kind}: {data.hex()}"


@settings(max_examples=budget(200), derandomize=True, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_the_stream_framing_splits_or_refuses_any_bytes(chunks: list[bytes]) -> None:
    reader = FrameReader(frame_bytes_max=256)
    stream = b"".join(chunks)
    try:
        frames = [f for chunk in chunks for f in reader.feed(chunk)]
    except PeerError:
        return  # an oversize frame: the peer is refused
    rebuilt = b"".join(encode_frame(topic, payload) for topic, payload in frames)
    assert stream.startswith(rebuilt)
    assert len(reader.buffer) == len(stream) - len(rebuilt)


@pytest.mark.asyncio
@pytest.mark.security
async def test_a_validator_fed_mutated_frames_of_every_kind_refuses_them_and_runs_on(
    tmp_path: Path,
) -> None:
    seed = 20261130
    rng = random.Random(seed)
    captured: list[tuple[Topic, bytes]] = []
    async with running_cluster(tmp_path) as cluster:
        target, source = cluster.members[0].node, cluster.members[1].node
        original = source.network.broadcast

        async def recording(topic: Topic, payload: bytes) -> None:
            captured.append((topic, payload))
            await original(topic, payload)

        source.network.broadcast = recording  # type: ignore[method-assign]
        for _ in range(3):
            tx = _registration(cluster)
            await source.submit(tx)
            await _committed_at(target, tx)
        source.network.broadcast = original  # type: ignore[method-assign]
        assert {topic for topic, _ in captured} >= {Topic.CONSENSUS, Topic.TX}
        height = target.store.height
        block_payload = _latest_block_payload(target)
        samples = [*captured, (Topic.BLOCK, block_payload), (Topic.PARTIAL, captured[0][1])]
        payloads = [payload for _, payload in samples]
        unexpected: list[str] = []
        for index in range(budget(1500)):
            topic, sample = rng.choice(samples)
            data = mutate(sample, payloads, rng)
            try:
                if topic is not Topic.CONSENSUS and (topic is Topic.BLOCK or rng.random() < 0.5):
                    await target.on_gossip(source.node_id, topic, data)
                elif topic is Topic.CONSENSUS:
                    await target.peer_messages.on_consensus(Inbound(source.node_id, topic, data))
                else:  # refusals are counted against the peer inside
                    await target.peer_messages.admit([Inbound(source.node_id, topic, data)])
            except (CarechainError, PoolFull):
                pass  # the typed refusals the inbox loop counts against the peer
            except Exception as exc:  # what the fuzzer looks for
                unexpected.append(f"input {index} ({topic.name}, {data.hex()[:200]}): {exc!r}")
        assert not unexpected, f"seed {seed}: {len(unexpected)} crashes, first: {unexpected[0]}"
        tx = _registration(cluster)
        await target.submit(tx)
        await eventually(
            lambda: all(m.node.store.tx_location(tx.id) is not None for m in cluster.members)
        )
        assert target.store.height > height
        heads = {m.node.store.head() for m in cluster.members if m.node.store.height == height + 1}
        assert len(heads) <= 1


async def _committed_at(node: Any, tx: Tx) -> None:
    await eventually(lambda: node.store.tx_location(tx.id) is not None)


def _registration(cluster: Any) -> Tx:
    first, second = PrivateKey.generate(), PrivateKey.generate()
    chain_id = cluster.members[0].node.genesis.chain_id
    expiry = int(time.time() * 1000) + 3_600_000
    draft = builders.register_patient(chain_id, (first.public_key, second.public_key), expiry)
    return draft.signed(first, second)


def _latest_block_payload(node: Any) -> bytes:
    height = node.store.height
    committed, certificate = next(iter(node.store.blocks(height, height)))
    return bytes(committed.block_hash + Commit(committed, certificate).encode())
