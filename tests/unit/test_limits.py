"""Every bound on what carries a block follows the genesis maxima: a block of exactly
`max_block_bytes` with `max_block_txs` transactions goes through every carrier (proposal,
commit, lock, the consensus envelope, a p2p frame, the WAL on disk, a sync item, a gossiped
block) and decodes under the limits `EncodedLimits` derives, and those limits are tight: the
largest carriers are exactly as long as the limits say."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from carechain.consensus.codec import EncodeError
from carechain.consensus.errors import DecodeError
from carechain.consensus.genesis import ConsensusParams
from carechain.consensus.poa.limits import LIMITS_AT_CAP, EncodedLimits
from carechain.consensus.poa.messages import (
    WAL_PAYLOAD_BYTES_MAX,
    Commit,
    Lock,
    Proposal,
    WalKind,
    WalRecord,
    decode_message,
    encode_message,
)
from carechain.consensus.types import (
    BLOCK_TXS_MAX,
    VALIDATORS_MAX,
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Tx,
    Vote,
    VoteType,
)
from carechain.consensus.wire import array_header
from carechain.node.catchup import gossiped_commit
from carechain.p2p.network import FrameReader, encode_frame
from carechain.storage.wal import ConsensusWal

CHAIN = "c" * 64  # the longest chain id: every header field at its largest
HEIGHT, ROUND = 2**63, 2**31
KEY, SIGNATURE, HASH = b"k" * 32, b"s" * 64, b"h" * 32


def _header() -> BlockHeader:
    return BlockHeader(CHAIN, HEIGHT, ROUND, 2**64 - 1, KEY, HASH, HASH, HASH, HASH, HASH)


def _tx(index: int, size: int) -> Tx:
    """A transaction encoded in exactly `size` bytes (its body takes up the room)."""
    account = index.to_bytes(20, "big")
    empty = len(Tx(CHAIN, "record.put", account, 1, 2**40, b"").encode())
    for body in range(size - empty, max(-1, size - empty - 6), -1):  # bin headers: 2-5 bytes
        tx = Tx(CHAIN, "record.put", account, 1, 2**40, b"b" * body)
        if len(tx.encode()) == size:
            return tx
    raise AssertionError(f"no transaction is {size} bytes long")


def largest_block(params: ConsensusParams) -> Block:
    """A block of exactly `max_block_bytes`, holding `max_block_txs` transactions."""
    count = params.max_block_txs
    room = params.max_block_bytes - len(Block(_header(), ()).encode()) + 1  # the empty array
    room -= len(array_header(count))
    each = room // count
    txs = [_tx(i, each) for i in range(count - 1)]
    txs.append(_tx(count - 1, room - each * (count - 1)))
    block = Block(_header(), tuple(txs))
    assert len(block.encode()) == params.max_block_bytes
    return block


def _vote(index: int) -> Vote:
    return Vote(CHAIN, VoteType.PREVOTE, HEIGHT, ROUND, HASH, index.to_bytes(32, "big"), SIGNATURE)


def _certificate() -> CommitCertificate:
    entries = tuple(
        CommitSignature(i.to_bytes(32, "big"), SIGNATURE) for i in range(VALIDATORS_MAX)
    )
    return CommitCertificate(HEIGHT, ROUND, HASH, entries)


def _through_a_frame(payload: bytes, limits: EncodedLimits) -> bytes:
    (frame,) = FrameReader(limits.frame_bytes).feed(encode_frame(1, payload))
    return frame[1]


PARAMETERS = {
    "genesis defaults": ConsensusParams(),
    "largest genesis allows": ConsensusParams(
        max_block_bytes=LIMITS_AT_CAP.block_bytes, max_block_txs=BLOCK_TXS_MAX
    ),
    "smallest block": ConsensusParams(max_block_bytes=1024, max_block_txs=1),
}


@pytest.mark.parametrize("params", PARAMETERS.values(), ids=list(PARAMETERS))
def test_a_largest_block_passes_every_carrier_under_the_derived_limits(
    params: ConsensusParams, tmp_path: Path
) -> None:
    limits = EncodedLimits.of(params)
    block = largest_block(params)
    assert Block.decode(block.encode(), max_bytes=limits.block_bytes) == block
    with pytest.raises(DecodeError, match="limit"):
        Block.decode(block.encode(), max_bytes=limits.block_bytes - 1)

    proposal = Proposal(CHAIN, HEIGHT, ROUND, ROUND - 1, block, KEY, SIGNATURE)
    commit = Commit(block, _certificate())
    for message in (proposal, commit):
        wire = encode_message(message)
        assert len(wire) <= limits.message_bytes
        assert decode_message(_through_a_frame(wire, limits), max_bytes=limits.message_bytes) == (
            message
        )
    # the commit is the largest message: the bound is its length (less 2 bytes of a bin32
    # header the body of a block under 64 KiB does not need)
    assert limits.message_bytes - 2 <= len(encode_message(commit)) <= limits.message_bytes
    assert len(proposal.encode()) == limits.proposal_bytes
    assert Commit.decode(commit.encode(), max_bytes=limits.sync_item_bytes) == commit
    gossiped = block.block_hash + commit.encode()
    assert len(gossiped) == limits.gossip_block_bytes
    assert gossiped_commit(_through_a_frame(gossiped, limits), limits) == commit

    lock = Lock(block, tuple(_vote(i) for i in range(256)))
    assert len(lock.encode()) == limits.lock_bytes
    records = [
        WalRecord(WalKind.PROPOSAL, HEIGHT, ROUND, proposal.encode()),
        WalRecord(WalKind.LOCK, HEIGHT, ROUND, lock.encode()),
    ]
    assert limits.wal_record_bytes - 2 <= len(records[1].encode()) <= limits.wal_record_bytes
    wal = ConsensusWal(tmp_path / "wal", limits.wal_record_bytes)
    for record in records:
        wal.append(record)
    wal.close()
    reopened = ConsensusWal(tmp_path / "wal", limits.wal_record_bytes).records()
    assert reopened == records
    assert Proposal.decode(reopened[0].payload, max_bytes=len(reopened[0].payload)) == proposal
    assert Lock.decode(reopened[1].payload, max_bytes=len(reopened[1].payload)) == lock


def test_the_static_bounds_cover_the_largest_chain_genesis_allows() -> None:
    """Bounds fixed before any genesis is read (a record field's declared size, the block's
    transaction count) cover the largest chain genesis may describe."""
    hints = typing.get_type_hints(ConsensusParams, include_extras=True)
    declared = {
        name: typing.get_args(hints[name])[1].hi for name in hints if name.startswith("max_")
    }
    assert LIMITS_AT_CAP.block_bytes == declared["max_block_bytes"]
    assert LIMITS_AT_CAP.tx_bytes == declared["max_tx_bytes"]
    assert declared["max_block_txs"] == BLOCK_TXS_MAX
    assert LIMITS_AT_CAP.wal_payload_bytes <= WAL_PAYLOAD_BYTES_MAX
    with pytest.raises(EncodeError, match="max_block_txs"):
        ConsensusParams(max_block_txs=BLOCK_TXS_MAX + 1).encode()


def test_a_wal_refuses_a_record_it_could_not_read_back_and_writes_nothing(
    tmp_path: Path,
) -> None:
    limits = EncodedLimits.of(ConsensusParams(max_block_bytes=1024, max_block_txs=1))
    wal = ConsensusWal(tmp_path / "wal", limits.wal_record_bytes)
    too_large = WalRecord(WalKind.PROPOSAL, 1, 0, bytes(limits.wal_record_bytes))
    with pytest.raises(Exception, match="exceeds this chain's limit") as refused:
        wal.append(too_large)
    assert getattr(refused.value, "code", None) == "wal_record_too_large"
    wal.close()
    assert ConsensusWal(tmp_path / "wal", limits.wal_record_bytes).records() == []
