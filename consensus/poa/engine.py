"""The BFT proof-of-authority engine: Tendermint's algorithm as a pure state machine.

`Engine.handle(event) -> list[Action]`. No I/O, no clock (time arrives in events), no
randomness. The rules follow Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(2018); comments name their line numbers. "2f+1" is more than 2/3 of the voting power and
"f+1" more than 1/3. The engine carries the rules out; what each rule asks of the height's
state (`state.py`) is read off it in `rules.py`.

Safety on restart: every own proposal, vote and lock is returned as a `WriteWal` action before
the `Broadcast` it guards; after a crash the shell replays the WAL (`WalReplayed`) and the
engine re-sends what it signed instead of signing anything conflicting.

Liveness: round timeouts grow with the round (doubling steps of `timeout_delta_ms`) and are
capped; own messages of the current round (and the last commit) are re-broadcast
periodically, so a lossy network loses time, not progress. While idle the engine waits
without round timers, and starts a height when transactions arrive, when another validator
starts it, or when the heartbeat interval has passed since the last block.
"""

from __future__ import annotations

from typing import Final

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.errors import SignatureError
from carechain.consensus.poa.events import (
    Action,
    Application,
    BlockPersisted,
    Broadcast,
    CommitBlock,
    Event,
    PeerMisbehaved,
    Received,
    RecordLateVote,
    ReportEvidence,
    RequestSync,
    Tick,
    TxsAvailable,
    WakeAt,
    WalReplayed,
    WriteWal,
)
from carechain.consensus.poa.messages import Commit, Lock, Proposal, WalKind, WalRecord
from carechain.consensus.poa.rules import (
    decision,
    late_precommit,
    nil_polka,
    polka_block,
    prevote_for,
    proposal_problem,
    round_timers_due,
    round_to_skip_to,
    timely,
)
from carechain.consensus.poa.state import NIL, EngineConfig, HeightState, Step, Timer
from carechain.consensus.poa.votes import proposer_of
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    ValidatorSet,
    Vote,
    VoteType,
)

FUTURE_MESSAGES_MAX: Final = 4096


class Engine:
    def __init__(self, config: EngineConfig, app: Application, key: PrivateKey | None) -> None:
        self.config = config
        self.app = app
        self.key = key  # None: an observer that follows and commits but never signs
        # No proposal or vote is signed below this height: a validator that lost its WAL
        # (and so what it signed) waits here until the chain has moved past it.
        self.sign_from_height = 0
        self.now_ms = 0
        self.state: HeightState | None = None
        self.timers: dict[tuple[Timer, int], int] = {}  # (timer, round) -> due time
        self.last_commit: Commit | None = None
        # the set that decided last_commit's height, when this engine decided it (late votes
        # for that height are recorded against it); None after a restart or a sync
        self.last_validators: ValidatorSet | None = None
        self._late_seen: set[tuple[int, bytes]] = set()  # (height, validator) recorded late
        self.future: list[tuple[str, Proposal | Vote]] = []
        self.replayed: tuple[WalRecord, ...] = ()
        self.validity: dict[bytes, str | None] = {}
        self.misbehaviour: dict[str, int] = {}
        self._out: list[Action] = []
        self._wake_ms: int | None = None  # the wake-up time last asked of the shell

    # -- the one entry point --------------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        if isinstance(event, WalReplayed):
            self.replayed = event.records
            return []
        self.now_ms = max(self.now_ms, event.now_ms)
        if isinstance(event, Received):
            self._on_received(event)
        elif isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, TxsAvailable):
            self._on_txs_available()
        elif isinstance(event, BlockPersisted):
            self._on_block_persisted(event)
        else:
            self._on_start()
        return self._flush()

    def _flush(self) -> list[Action]:
        wake = min(self.timers.values(), default=None)
        if wake is not None and (wake != self._wake_ms or wake <= self.now_ms):
            self._out.append(WakeAt(wake))
        self._wake_ms = wake
        out, self._out = self._out, []
        return out

    @property
    def height(self) -> int:
        return self.state.height if self.state else 0

    @property
    def me(self) -> bytes | None:
        return self.key.public_key if self.key else None

    @property
    def signing(self) -> bool:
        """Whether this engine signs at its current height: its key is in this height's
        validator set and signing is not held back (`sign_from_height`). A key outside the
        set (a validator governance has not added yet, or removed) follows the chain and
        signs nothing."""
        state = self.state
        if self.key is None or state is None or self.height < self.sign_from_height:
            return False
        return self.key.public_key in state.validators.by_key

    # -- events ---------------------------------------------------------------------------------
    def _on_start(self) -> None:
        self._set_timer(Timer.REBROADCAST, 0, self.config.rebroadcast_ms)
        self._enter_height(self.app.committed_height() + 1)

    def _on_tick(self) -> None:
        due = sorted(
            ((at, key) for key, at in self.timers.items() if at <= self.now_ms),
            key=lambda item: item[0],
        )
        for _, (timer, round) in due:
            if self.timers.get((timer, round)) is not None:
                del self.timers[(timer, round)]
                self._fire(timer, round)

    def _on_txs_available(self) -> None:
        if self.state and self.state.step is Step.WAIT and not self._waiting_for_next_height():
            self._start_round(0)

    def _on_block_persisted(self, event: BlockPersisted) -> None:
        state = self.state
        if state is None:
            return
        if state.decided is not None and event.height == state.height:
            self.last_commit = state.decided
            self._set_timer(Timer.NEXT_HEIGHT, 0, self.config.timeout_commit_ms)
        elif event.height >= state.height:
            # The shell committed blocks it synced from peers: continue after them.
            self._enter_height(self.app.committed_height() + 1)

    def _on_received(self, event: Received) -> None:
        message = event.message
        if isinstance(message, Commit):
            self._on_commit_message(event.sender, message)
        elif isinstance(message, Proposal | Vote):
            if message.chain_id != self.config.chain_id:
                self._misbehaved(event.sender, "message for another chain")
            elif self.state is None or message.height > self.height:
                self._buffer_future(event.sender, message)
            elif message.height == self.height:
                if isinstance(message, Proposal):
                    self._on_proposal(event.sender, message)
                else:
                    self._on_vote(event.sender, message)
                if self.state.step is Step.WAIT and not self._waiting_for_next_height():
                    self._maybe_start()  # another validator started this height
            elif isinstance(message, Vote) and message.height == self.height - 1:
                self._on_vote_for_last_height(event.sender, message)
        self._advance()

    def _on_vote_for_last_height(self, sender: str, vote: Vote) -> None:
        """Late votes for the last height count until this one is decided (the node's tally
        calls a vote that has not come by then missed)."""
        assert self.state is not None
        if self.state.decided is not None:
            return
        if self.last_commit is not None and self.last_validators is not None:
            self._on_late_vote(sender, vote, self.last_commit.certificate, self.last_validators)

    def _on_late_vote(
        self, sender: str, vote: Vote, certificate: CommitCertificate, validators: ValidatorSet
    ) -> None:
        """A vote for a height already decided: kept if it is a late precommit for the
        decided block (see `rules.late_precommit`), once per validator and height."""
        if (vote.height, vote.validator) in self._late_seen:
            return
        found = late_precommit(certificate, validators, vote)
        if isinstance(found, str):
            self._misbehaved(sender, found)
        elif found is not None:
            self._late_seen.add((vote.height, vote.validator))
            self._out.append(RecordLateVote(certificate, found))

    # -- timers ---------------------------------------------------------------------------------
    def _set_timer(self, timer: Timer, round: int, delay_ms: int) -> None:
        self.timers[(timer, round)] = self.now_ms + delay_ms

    def _fire(self, timer: Timer, round: int) -> None:
        state = self.state
        if timer is Timer.REBROADCAST:
            self._rebroadcast()
            self._set_timer(Timer.REBROADCAST, 0, self.config.rebroadcast_ms)
        elif state is None:
            return
        elif timer is Timer.NEXT_HEIGHT:
            self._enter_height(state.height + 1)
        elif timer is Timer.HEARTBEAT and state.step is Step.WAIT:
            self._maybe_start()
        elif timer is Timer.PROPOSE and state.round == round and state.step is Step.PROPOSE:
            self._prevote(NIL)  # line 57
        elif timer is Timer.PREVOTE and state.round == round and state.step is Step.PREVOTE:
            self._precommit(NIL)  # line 61
        elif timer is Timer.PRECOMMIT and state.round == round and state.decided is None:
            self._start_round(round + 1)  # line 65
        self._advance()

    def _rebroadcast(self) -> None:
        state = self.state
        if self.last_commit is not None:
            self._out.append(Broadcast(self.last_commit))
        if state is None or state.step in (Step.WAIT, Step.COMMIT):
            if state is not None and state.decided is not None:
                self._out.append(Broadcast(state.decided))
            return
        if state.round in state.own_proposals:
            self._send_proposal(state.own_proposals[state.round])
        for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            vote = state.own_votes.get((state.round, vote_type))
            if vote is not None:
                self._out.append(Broadcast(vote))

    # -- heights and rounds ---------------------------------------------------------------------
    def _waiting_for_next_height(self) -> bool:
        return (Timer.NEXT_HEIGHT, 0) in self.timers

    def _enter_height(self, height: int) -> None:
        self.timers = {k: v for k, v in self.timers.items() if k[0] is Timer.REBROADCAST}
        previous = self.state
        decided_here = previous is not None and previous.height == height - 1
        self.last_validators = previous.validators if decided_here and previous else None
        self._late_seen = {seen for seen in self._late_seen if seen[0] >= height - 1}
        self.state = HeightState(height, self.app.validator_set(height))
        self.validity.clear()
        # Re-announce the last decision from the store, not from memory: a validator that
        # crashed (or synced) right after a commit must still tell peers stuck below it.
        self.last_commit = self.app.last_commit()
        resume_round = self._restore_from_wal()
        buffered, self.future = self.future, []
        for sender, message in buffered:
            if message.height == height:
                if isinstance(message, Proposal):
                    self._on_proposal(sender, message)
                else:
                    self._on_vote(sender, message)
            elif message.height > height:
                self.future.append((sender, message))
        if resume_round is not None:
            self._start_round(resume_round)
        else:
            self._maybe_start()
        self._advance()

    def _maybe_start(self) -> None:
        """Leave WAIT when there is something to order, someone else started, or the
        heartbeat is due; otherwise sleep until the heartbeat."""
        state = self.state
        assert state is not None
        assert state.step is Step.WAIT
        heartbeat_at = self.app.last_block_time_ms() + self.config.heartbeat_interval_ms
        others_started = bool(state.proposals or state.prevotes or state.precommits)
        if self.app.has_pending() or others_started or self.now_ms >= heartbeat_at:
            self._start_round(0)
        else:
            self.timers[(Timer.HEARTBEAT, 0)] = heartbeat_at

    def _start_round(self, round: int) -> None:  # line 11
        state = self.state
        assert state is not None
        self.timers.pop((Timer.HEARTBEAT, 0), None)
        state.round, state.step = round, Step.PROPOSE
        if self.signing and proposer_of(state.validators, state.height, round) == self.me:
            self._propose(round)
        self._set_timer(
            Timer.PROPOSE, round, self.config.timeout(self.config.timeout_propose_ms, round)
        )

    def _propose(self, round: int) -> None:
        state = self.state
        assert state is not None
        assert self.key is not None
        proposal = state.own_proposals.get(round)
        if proposal is None:
            if state.valid_block is not None:  # line 15: re-propose what may have been decided
                block, pol_round = state.valid_block, state.valid_round
            else:
                time_ms = max(self.now_ms, self.app.last_block_time_ms() + 1)
                block = self.app.propose(state.height, round, time_ms, self.key.public_key)
                pol_round = -1
            unsigned = Proposal(
                self.config.chain_id, state.height, round, pol_round, block, self.key.public_key
            )
            proposal = unsigned.signed_by(self.key)
            state.own_proposals[round] = proposal
            self._out.append(
                WriteWal(WalRecord(WalKind.PROPOSAL, state.height, round, proposal.encode()))
            )
        self._send_proposal(proposal)
        state.accept_proposal(proposal)

    def _send_proposal(self, proposal: Proposal) -> None:
        """A re-proposal travels with the prevotes that justify it (its proof of lock): peers
        that missed that round could not accept it otherwise, and nobody would unlock."""
        state = self.state
        assert state is not None
        self._out.append(Broadcast(proposal))
        if proposal.pol_round >= 0:
            block_hash = proposal.block.block_hash
            for vote in state.votes(VoteType.PREVOTE, proposal.pol_round).votes_for(block_hash):
                self._out.append(Broadcast(vote))

    # -- receiving ------------------------------------------------------------------------------
    def _misbehaved(self, peer: str, reason: str) -> None:
        self.misbehaviour[peer] = self.misbehaviour.get(peer, 0) + 1
        self._out.append(PeerMisbehaved(peer, reason))

    def _buffer_future(self, sender: str, message: Proposal | Vote) -> None:
        if message.height == self.height + 1 and len(self.future) < FUTURE_MESSAGES_MAX:
            self.future.append((sender, message))
        elif message.height > self.height + 1:
            # working at message.height: it committed the height before
            self._out.append(RequestSync(sender, self.height, message.height - 1))

    def _round_in_range(self, round: int) -> bool:
        assert self.state is not None
        return round <= self.state.round + self.config.round_ahead_max

    def _on_proposal(self, sender: str, proposal: Proposal) -> None:
        state = self.state
        assert state is not None
        if proposal.round in state.proposals or not self._round_in_range(proposal.round):
            return
        problem = proposal_problem(state, proposal)
        if problem:
            self._misbehaved(sender, problem)
            return
        state.accept_proposal(proposal)

    def _on_vote(self, sender: str, vote: Vote) -> None:
        state = self.state
        assert state is not None
        if vote.validator not in state.validators.by_key:
            self._misbehaved(sender, "vote from a key that is not a validator at this height")
            return
        if state.decided is not None:  # decided, waiting to start the next height
            self._on_late_vote(sender, vote, state.decided.certificate, state.validators)
        if not self._round_in_range(vote.round):
            return
        votes = state.votes(vote.vote_type, vote.round)
        if votes.has(vote):
            return  # a duplicate; nothing new
        if not vote.signature_valid():
            self._misbehaved(sender, "vote signature does not verify")
            return
        conflicting = votes.add(vote)
        if conflicting is not None:
            self._out.append(ReportEvidence(conflicting, vote))
        state.round_senders.setdefault(vote.round, set()).add(vote.validator)

    def _on_commit_message(self, sender: str, commit: Commit) -> None:
        state = self.state
        certificate = commit.certificate
        if state is None or certificate.height < state.height or state.decided is not None:
            return
        if certificate.height > state.height:
            self._out.append(RequestSync(sender, state.height, certificate.height))
            return
        try:
            certificate.verify(self.config.chain_id, state.validators, commit.block.block_hash)
        except SignatureError as exc:
            self._misbehaved(sender, f"bad commit certificate: {exc}")
            return
        if commit.block.header.height != state.height or not self._valid(commit.block):
            self._misbehaved(sender, "a certified block that does not apply here")
            return
        self._decide(commit)

    # -- signing --------------------------------------------------------------------------------
    def _sign_vote(self, vote_type: VoteType, block_hash: bytes) -> None:
        state = self.state
        assert state is not None
        if self.key is None or not self.signing:
            return
        signed = state.own_votes.get((state.round, vote_type))
        if signed is None:
            unsigned = Vote(
                self.config.chain_id,
                vote_type,
                state.height,
                state.round,
                block_hash,
                self.key.public_key,
            )
            signed = unsigned.signed_by(self.key)
            state.own_votes[(state.round, vote_type)] = signed
            self._out.append(
                WriteWal(WalRecord(WalKind.VOTE, state.height, state.round, signed.encode()))
            )
        # A vote signed before a restart is sent again as it was: never a conflicting one.
        self._out.append(Broadcast(signed))
        state.votes(vote_type, state.round).add(signed)
        state.round_senders.setdefault(state.round, set()).add(signed.validator)

    def _prevote(self, block_hash: bytes) -> None:
        assert self.state is not None
        self._sign_vote(VoteType.PREVOTE, block_hash)
        self.state.step = Step.PREVOTE

    def _precommit(self, block_hash: bytes) -> None:
        assert self.state is not None
        self._sign_vote(VoteType.PRECOMMIT, block_hash)
        self.state.step = Step.PRECOMMIT

    def _lock(self, round: int, block: Block) -> None:
        state = self.state
        assert state is not None
        state.locked_round, state.locked_block = round, block
        if self.signing:  # a lock guards our own later votes; none at a height we sit out
            proof = tuple(state.votes(VoteType.PREVOTE, round).votes_for(block.block_hash))
            record = WalRecord(WalKind.LOCK, state.height, round, Lock(block, proof).encode())
            self._out.append(WriteWal(record))

    # -- the rules ------------------------------------------------------------------------------
    def _valid(self, block: Block) -> bool:
        block_hash = block.block_hash
        if block_hash not in self.validity:
            self.validity[block_hash] = self.app.validate(block)
        return self.validity[block_hash] is None

    def _timely(self, proposal: Proposal) -> bool:
        return timely(self.config, self.now_ms, proposal)

    def _advance(self) -> None:
        rules = (
            self._rule_decide,
            self._rule_skip_round,
            self._rule_prevote,
            self._rule_polka,
            self._rule_nil_polka,
            self._rule_timers,
        )
        for _ in range(64):  # every rule changes state once; this bounds a buggy loop
            if self.state is None or self.state.step in (Step.WAIT, Step.COMMIT):
                return
            if not any(rule() for rule in rules):
                return
        raise AssertionError("consensus rules did not settle")

    def _rule_prevote(self) -> bool:  # lines 22 and 28
        assert self.state is not None
        block_hash = prevote_for(self.state, self._valid, self._timely)
        if block_hash is None:
            return False
        self._prevote(block_hash)
        return True

    def _rule_timers(self) -> bool:  # lines 34 and 47
        state = self.state
        assert state is not None
        due = round_timers_due(state, self.config)
        for timer, timeout_ms in due:
            state.timer_rounds(timer).add(state.round)
            self._set_timer(timer, state.round, timeout_ms)
        return bool(due)

    def _rule_polka(self) -> bool:  # line 36
        state = self.state
        assert state is not None
        block = polka_block(state, self._valid)
        if block is None:
            return False
        state.polka_rounds.add(state.round)
        if state.step is Step.PREVOTE:
            self._lock(state.round, block)
            self._precommit(block.block_hash)
        state.valid_round, state.valid_block = state.round, block
        return True

    def _rule_nil_polka(self) -> bool:  # line 44
        assert self.state is not None
        if not nil_polka(self.state):
            return False
        self._precommit(NIL)
        return True

    def _rule_decide(self) -> bool:  # line 49
        assert self.state is not None
        commit = decision(self.state, self._valid)
        if commit is None:
            return False
        self._decide(commit)
        return True

    def _rule_skip_round(self) -> bool:  # line 55
        assert self.state is not None
        round = round_to_skip_to(self.state)
        if round is None:
            return False
        self._start_round(round)
        return True

    def _decide(self, commit: Commit) -> None:
        state = self.state
        assert state is not None
        state.decided = commit
        state.step = Step.COMMIT
        for timer in (Timer.PROPOSE, Timer.PREVOTE, Timer.PRECOMMIT):
            for key in [k for k in self.timers if k[0] is timer]:
                del self.timers[key]
        self._out.append(CommitBlock(commit.block, commit.certificate))
        self._out.append(Broadcast(commit))
        # precommits held for the decided block that its certificate lacks (it came from a
        # peer, or this engine's quorum was met without them): late, like those still to come
        certificate = commit.certificate
        signers = {entry.validator for entry in certificate.precommits}
        held = state.votes(VoteType.PRECOMMIT, certificate.round).votes_for(certificate.block_hash)
        for vote in held:
            if vote.validator not in signers:
                self._late_seen.add((vote.height, vote.validator))
                self._out.append(
                    RecordLateVote(certificate, CommitSignature(vote.validator, vote.signature))
                )

    # -- restart --------------------------------------------------------------------------------
    def _restore_from_wal(self) -> int | None:
        """Load what we signed at this height before a restart; the round to resume at."""
        state = self.state
        assert state is not None
        records = [r for r in self.replayed if r.height == state.height]
        self.replayed = ()
        return state.restore(records)
