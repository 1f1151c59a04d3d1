"""The engine's configuration and the state it keeps for one height.

`EngineConfig` is what the engine runs with: the chain, the clock drift it allows, and round
timeouts that grow with the round. `HeightState` is everything the engine knows at the height
it works on (round, step, lock, valid block, the proposals and votes seen, what it signed); a
new height starts from a fresh one, and `restore` loads into it what this validator signed
there before a restart, from its WAL records. `Step` and `Timer` name a round's steps and the
timers the engine sets. The engine (`engine.py`) acts on this state; the rules (`rules.py`)
read it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Final

from carechain.consensus.poa.messages import Commit, Lock, Proposal, WalKind, WalRecord
from carechain.consensus.poa.votes import VoteSet
from carechain.consensus.types import Block, ValidatorSet, Vote, VoteType

NIL: Final = b""  # the block hash of a vote for no block


@dataclasses.dataclass(frozen=True, slots=True)
class EngineConfig:
    chain_id: str
    heartbeat_interval_ms: int
    clock_drift_ms_max: int
    timeout_propose_ms: int = 3000
    timeout_prevote_ms: int = 1000
    timeout_precommit_ms: int = 1000
    timeout_delta_ms: int = 500
    timeout_commit_ms: int = 200
    timeout_ms_max: int = 30_000
    rebroadcast_ms: int = 1000
    round_ahead_max: int = 1000

    def timeout(self, base_ms: int, round: int) -> int:
        """A step's timeout in `round`: the base, plus `timeout_delta_ms` times 2^round - 1
        (0, 1, 3, 7, ...), capped. Doubling reaches a timeout long enough for a slow network
        or a large block in a few rounds, where a linear step needed one round per step
        (each costing every validator a full round of waiting)."""
        growth = (1 << min(round, 32)) - 1
        return min(base_ms + self.timeout_delta_ms * growth, self.timeout_ms_max)


class Step(enum.IntEnum):
    WAIT = 0  # between heights, or idle: no round timers
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4  # decided; waiting for the shell to persist the block


class Timer(enum.Enum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    HEARTBEAT = "heartbeat"
    NEXT_HEIGHT = "next-height"
    REBROADCAST = "rebroadcast"


@dataclasses.dataclass
class HeightState:
    """Everything that is reset when a new height starts."""

    height: int
    validators: ValidatorSet
    round: int = 0
    step: Step = Step.WAIT
    locked_round: int = -1
    locked_block: Block | None = None
    valid_round: int = -1
    valid_block: Block | None = None
    proposals: dict[int, Proposal] = dataclasses.field(default_factory=dict)
    prevotes: dict[int, VoteSet] = dataclasses.field(default_factory=dict)
    precommits: dict[int, VoteSet] = dataclasses.field(default_factory=dict)
    own_votes: dict[tuple[int, VoteType], Vote] = dataclasses.field(default_factory=dict)
    own_proposals: dict[int, Proposal] = dataclasses.field(default_factory=dict)
    round_senders: dict[int, set[bytes]] = dataclasses.field(default_factory=dict)
    prevote_timer_rounds: set[int] = dataclasses.field(default_factory=set)
    precommit_timer_rounds: set[int] = dataclasses.field(default_factory=set)
    polka_rounds: set[int] = dataclasses.field(default_factory=set)
    decided: Commit | None = None

    def votes(self, vote_type: VoteType, round: int) -> VoteSet:
        table = self.prevotes if vote_type is VoteType.PREVOTE else self.precommits
        if round not in table:
            table[round] = VoteSet(self.validators)
        return table[round]

    def timer_rounds(self, timer: Timer) -> set[int]:
        """The rounds in which the PREVOTE (or PRECOMMIT) timer has been started."""
        return self.prevote_timer_rounds if timer is Timer.PREVOTE else self.precommit_timer_rounds

    def accept_proposal(self, proposal: Proposal) -> None:
        self.proposals[proposal.round] = proposal
        self.round_senders.setdefault(proposal.round, set()).add(proposal.proposer)

    def restore(self, records: Sequence[WalRecord]) -> int | None:
        """Load what we signed at this height before a restart (its WAL records); the round
        to resume at."""
        for record in records:
            if record.kind is WalKind.VOTE:
                # bounded by the record itself: the WAL read bounded it by the chain's limits
                vote = Vote.decode(record.payload, max_bytes=len(record.payload))
                self.own_votes[(vote.round, vote.vote_type)] = vote
                self.votes(vote.vote_type, vote.round).add(vote)
            elif record.kind is WalKind.PROPOSAL:
                proposal = Proposal.decode(record.payload, max_bytes=len(record.payload))
                self.own_proposals[proposal.round] = proposal
                self.accept_proposal(proposal)
            else:
                lock = Lock.decode(record.payload, max_bytes=len(record.payload))
                for vote in lock.prevotes:
                    self.votes(VoteType.PREVOTE, record.round).add(vote)
                self.locked_round, self.locked_block = record.round, lock.block
                self.valid_round, self.valid_block = record.round, lock.block
        return max((r.round for r in records), default=None)
