"""The engine's inputs (events) and outputs (actions). The shell performs actions in order:
a `WriteWal` is durable before any later `Broadcast` or `Send` of the same batch."""

from __future__ import annotations

import dataclasses
from typing import Protocol

from carechain.consensus.poa.messages import Commit, ConsensusMessage, WalRecord
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    ValidatorSet,
    Vote,
)

# --- events ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Begin (or resume, after `WalReplayed`) at the height after the committed one."""

    now_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    now_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    sender: str
    message: ConsensusMessage
    now_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class TxsAvailable:
    """The mempool holds transactions: time to produce a block."""

    now_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class WalReplayed:
    """What the WAL held for the current height at startup, oldest first."""

    records: tuple[WalRecord, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class BlockPersisted:
    """The shell committed the block of `height` (state, block, certificate)."""

    height: int
    now_ms: int


Event = Start | Tick | Received | TxsAvailable | WalReplayed | BlockPersisted

# --- actions -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Broadcast:
    message: ConsensusMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    peer: str
    message: ConsensusMessage


@dataclasses.dataclass(frozen=True, slots=True)
class WriteWal:
    record: WalRecord


@dataclasses.dataclass(frozen=True, slots=True)
class WakeAt:
    """Deliver a Tick at or after this time."""

    at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class CommitBlock:
    block: Block
    certificate: CommitCertificate


@dataclasses.dataclass(frozen=True, slots=True)
class RequestSync:
    """We are behind: fetch committed blocks from `peer`, starting at `from_height`, up to
    `peer_height`, the height `peer` has shown it committed (the message that told us)."""

    peer: str
    from_height: int
    peer_height: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReportEvidence:
    """Two conflicting votes signed by one validator."""

    first: Vote
    second: Vote


@dataclasses.dataclass(frozen=True, slots=True)
class RecordLateVote:
    """A validator's precommit for the block this engine decided at `certificate.height`,
    signed and valid, that came after the certificate was made (which keeps the first quorum
    only): the shell keeps it so that an audit can tell a late vote from a missing one."""

    certificate: CommitCertificate
    late: CommitSignature


@dataclasses.dataclass(frozen=True, slots=True)
class PeerMisbehaved:
    peer: str
    reason: str


Action = (
    Broadcast
    | Send
    | WriteWal
    | WakeAt
    | CommitBlock
    | RequestSync
    | ReportEvidence
    | RecordLateVote
    | PeerMisbehaved
)


class Application(Protocol):
    """What the engine needs from the chain it orders. Implementations read committed state;
    they never write it (the shell commits on `CommitBlock`)."""

    def committed_height(self) -> int: ...

    def last_block_hash(self) -> bytes: ...

    def last_block_time_ms(self) -> int: ...

    def last_commit(self) -> Commit | None:
        """The latest committed block with its certificate (None at genesis)."""
        ...

    def validator_set(self, height: int) -> ValidatorSet: ...

    def has_pending(self) -> bool:
        """Transactions wait to be proposed."""
        ...

    def propose(self, height: int, round: int, time_ms: int, proposer: bytes) -> Block: ...

    def validate(self, block: Block) -> str | None:
        """None when the block is valid on top of committed state, else why not."""
        ...
