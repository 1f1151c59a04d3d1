"""Every size bound on what carries a block, derived from the genesis maxima.

A block may be `max_block_bytes` long (genesis; at most 64 MiB). Whatever carries one (a
proposal, a commit, a WAL lock, the consensus envelope, a p2p frame, a sync item, a gossiped
block) adds its own fields, so each of their bounds is the block's plus that carrier's largest
possible overhead, measured here by encoding the carrier around a stand-in block with every
other field at its largest. Fixed bounds that did not follow genesis let a proposal of 4.2 MB
(genesis allowed 8 MiB) fail the WAL's 4 MiB default and stop the proposer; nothing here is a
guess, and `tests/unit/test_limits.py` sends a block of exactly the maximum through all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Final

from carechain.consensus.crypto import HASH_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from carechain.consensus.genesis import ConsensusParams
from carechain.consensus.poa.messages import (
    WAL_PAYLOAD_BYTES_MAX,
    Commit,
    Lock,
    MessageKind,
    Proposal,
    WalKind,
    WalRecord,
)
from carechain.consensus.types import (
    VALIDATORS_MAX,
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Vote,
    VoteType,
)
from carechain.consensus.wire import UINT64_MAX, pack

# The prefix of a gossiped block message: the block's hash (p2p.network.BLOCK_ID_BYTES).
GOSSIP_BLOCK_PREFIX_BYTES: Final = HASH_BYTES
HEIGHT_MAX: Final = 2**63
ROUND_MAX: Final = 2**31
_CHAIN_ID: Final = "c" * 64
_KEY: Final = b"k" * PUBLIC_KEY_BYTES
_HASH: Final = b"h" * HASH_BYTES
_SIGNATURE: Final = b"s" * SIGNATURE_BYTES
# a bin field longer than 65,535 bytes has a 5-byte header: the stand-in payload is that long
_LONG: Final = 1 << 16


def _declared_max(record: type, field: str) -> int:
    """The upper bound a record declares for one of its fields (`Size` or `IntRange`)."""
    hints = typing.get_type_hints(record, include_extras=True)
    bound = typing.get_args(hints[field])[1]
    return int(bound.hi)


def _largest_header() -> BlockHeader:
    return BlockHeader(
        _CHAIN_ID, HEIGHT_MAX, ROUND_MAX, UINT64_MAX, _KEY, _HASH, _HASH, _HASH, _HASH, _HASH
    )


def _largest_vote() -> Vote:
    return Vote(_CHAIN_ID, VoteType.PRECOMMIT, HEIGHT_MAX, ROUND_MAX, _HASH, _KEY, _SIGNATURE)


def _largest_certificate() -> CommitCertificate:
    entries = tuple(CommitSignature(_KEY, _SIGNATURE) for _ in range(VALIDATORS_MAX))
    return CommitCertificate(HEIGHT_MAX, ROUND_MAX, _HASH, entries)


@functools.cache
def _overheads() -> dict[str, int]:
    """What each carrier adds to the encoding of the block it carries, at its largest."""
    block = Block(_largest_header(), ())
    block_bytes = len(block.encode())
    proposal = Proposal(_CHAIN_ID, HEIGHT_MAX, ROUND_MAX, ROUND_MAX - 1, block, _KEY, _SIGNATURE)
    commit = Commit(block, _largest_certificate())
    prevotes = _declared_max(Lock, "prevotes")
    lock = Lock(block, tuple(_largest_vote() for _ in range(prevotes)))
    # the envelope is [kind, body as bin]: a body past 65,535 bytes has bin32's header
    envelope = len(pack([int(max(MessageKind)), bytes(_LONG)])) - _LONG
    record = WalRecord(WalKind.PROPOSAL, HEIGHT_MAX, ROUND_MAX, bytes(_LONG))
    return {
        "proposal": len(proposal.encode()) - block_bytes,
        "commit": len(commit.encode()) - block_bytes,
        "lock": len(lock.encode()) - block_bytes,
        "vote": len(_largest_vote().encode()),
        "envelope": envelope,
        "wal_record": len(record.encode()) - _LONG,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class EncodedLimits:
    """The largest encoding of each thing that carries a block, for one chain's parameters."""

    block_bytes: int
    proposal_bytes: int
    commit_bytes: int
    lock_bytes: int
    message_bytes: int  # any consensus message in its wire envelope
    wal_payload_bytes: int  # the largest WAL record payload (a proposal or a lock)
    wal_record_bytes: int  # a whole WAL record
    sync_item_bytes: int  # one item of a sync stream: an encoded `Commit`
    gossip_block_bytes: int  # a gossiped block: its hash, then the encoded `Commit`
    tx_bytes: int  # one transaction
    frame_bytes: int  # one p2p frame's payload: any of the above

    @classmethod
    def of(cls, params: ConsensusParams) -> EncodedLimits:
        overhead = _overheads()
        block = params.max_block_bytes
        proposal = block + overhead["proposal"]
        commit = block + overhead["commit"]
        lock = block + overhead["lock"]
        message = max(proposal, commit, overhead["vote"]) + overhead["envelope"]
        wal_payload = max(proposal, lock, overhead["vote"])
        return cls(
            block_bytes=block,
            proposal_bytes=proposal,
            commit_bytes=commit,
            lock_bytes=lock,
            message_bytes=message,
            wal_payload_bytes=wal_payload,
            wal_record_bytes=wal_payload + overhead["wal_record"],
            sync_item_bytes=commit,
            gossip_block_bytes=GOSSIP_BLOCK_PREFIX_BYTES + commit,
            tx_bytes=params.max_tx_bytes,
            frame_bytes=max(message, GOSSIP_BLOCK_PREFIX_BYTES + commit, params.max_tx_bytes),
        )


def _params_at_cap() -> ConsensusParams:
    """Consensus parameters with every size at the largest genesis may set."""
    largest = {
        name: _declared_max(ConsensusParams, name)
        for name in ("max_block_bytes", "max_block_txs", "max_tx_bytes")
    }
    return ConsensusParams(**largest)


# For what is bounded before any genesis is known (a WAL file's records, the codec's static
# field bounds): the limits of the largest chain genesis allows.
LIMITS_AT_CAP: Final = EncodedLimits.of(_params_at_cap())
assert LIMITS_AT_CAP.wal_payload_bytes <= WAL_PAYLOAD_BYTES_MAX, "raise WAL_PAYLOAD_BYTES_MAX"
