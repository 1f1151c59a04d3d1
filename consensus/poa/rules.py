"""Tendermint's upon-rules, read off one height's state: which applies, and with what.

Each function looks at a `HeightState` and answers for one rule of Buchman, Kwon and
Milosevic (2018) (comments name the paper's lines): whether a proposal may be taken, the hash
to prevote, the round timers that 2f+1 votes start, the block that has a polka, whether nil
has one, the decided commit, the round to skip to; None, False or nothing when the rule does
not apply. None of them signs, locks, sets a timer, moves the step or notes that a rule fired:
the engine (`engine.py`) tries them in its order and carries out what they return. `valid` is
the application's verdict on a block (which the engine remembers per height), `timely` the
check of a fresh proposal's time against the engine's clock.
"""

from __future__ import annotations

from collections.abc import Callable

from carechain.consensus.poa.messages import Commit, Proposal
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


def proposal_problem(state: HeightState, proposal: Proposal) -> str | None:
    """Why a proposal for this height is not one the rules may take (the sender misbehaved);
    None when it is: from the round's proposer (lines 22 and 28), its pol_round below its
    round, its block at this height, its signature good."""
    expected = proposer_of(state.validators, state.height, proposal.round)
    if proposal.proposer != expected:
        return "proposal from a validator that is not this round's proposer"
    if not proposal.pol_round < proposal.round:
        return "proposal's pol_round is not below its round"
    if proposal.block.header.height != state.height:
        return "proposal's block is for another height"
    if not proposal.signature_valid():
        return "proposal signature does not verify"
    return None


def late_precommit(
    certificate: CommitCertificate, validators: ValidatorSet, vote: Vote
) -> CommitSignature | str | None:
    """A vote for a height already decided by `certificate`: its precommit entry when it is a
    late precommit (for the certified round and block, by a validator of that height the
    certificate lacks, its signature good); a problem when the sender misbehaved (a forged
    signature, a key that is no validator); None when it is just old (another round's vote,
    a prevote, or a precommit the certificate holds)."""
    if vote.vote_type is not VoteType.PRECOMMIT or vote.height != certificate.height:
        return None
    if vote.round != certificate.round or vote.block_hash != certificate.block_hash:
        return None
    if any(entry.validator == vote.validator for entry in certificate.precommits):
        return None
    if vote.validator not in validators.by_key:
        return "late precommit from a key that is not a validator at its height"
    if not vote.signature_valid():
        return "late precommit signature does not verify"
    return CommitSignature(vote.validator, vote.signature)


def timely(config: EngineConfig, now_ms: int, proposal: Proposal) -> bool:
    """A fresh proposal's time is within the drift bound of our clock (re-proposals of a
    locked value keep their original time and are exempt, as in Tendermint's PBTS)."""
    if proposal.pol_round != -1:
        return True
    drift = config.clock_drift_ms_max
    late = drift + config.timeout(config.timeout_propose_ms, proposal.round)
    return now_ms - late <= proposal.block.header.time_ms <= now_ms + drift


def prevote_for(
    state: HeightState, valid: Callable[[Block], bool], timely: Callable[[Proposal], bool]
) -> bytes | None:  # lines 22 and 28
    """At PROPOSE, once this round's proposal is in: the hash to prevote, NIL to reject it.
    None while the proposal, or the polka of the round it re-proposes, is missing."""
    proposal = state.proposals.get(state.round)
    if state.step is not Step.PROPOSE or proposal is None:
        return None
    block_hash = proposal.block.block_hash
    locked_hash = state.locked_block.block_hash if state.locked_block else None
    if proposal.pol_round == -1:
        ok = state.locked_round == -1 or locked_hash == block_hash
        ok = ok and timely(proposal) and valid(proposal.block)
    elif state.votes(VoteType.PREVOTE, proposal.pol_round).has_quorum_for(block_hash):
        ok = state.locked_round <= proposal.pol_round or locked_hash == block_hash
        ok = ok and valid(proposal.block)
    else:
        return None
    return block_hash if ok else NIL


def round_timers_due(state: HeightState, config: EngineConfig) -> list[tuple[Timer, int]]:
    """The timers of this round that 2f+1 votes for anything start, with their timeouts:
    PREVOTE at the prevote step once 2f+1 prevotes are in (line 34), PRECOMMIT once 2f+1
    precommits are (line 47); each once a round."""
    due = []
    round = state.round
    if (
        state.step is Step.PREVOTE
        and round not in state.prevote_timer_rounds
        and state.votes(VoteType.PREVOTE, round).has_quorum_any()
    ):
        due.append((Timer.PREVOTE, config.timeout(config.timeout_prevote_ms, round)))
    if (
        round not in state.precommit_timer_rounds
        and state.votes(VoteType.PRECOMMIT, round).has_quorum_any()
    ):
        due.append((Timer.PRECOMMIT, config.timeout(config.timeout_precommit_ms, round)))
    return due


def polka_block(state: HeightState, valid: Callable[[Block], bool]) -> Block | None:  # line 36
    """This round's proposed block, the first time 2f+1 prevotes are for it and it is valid."""
    proposal = state.proposals.get(state.round)
    if proposal is None or state.step < Step.PREVOTE or state.round in state.polka_rounds:
        return None
    block = proposal.block
    if not state.votes(VoteType.PREVOTE, state.round).has_quorum_for(block.block_hash):
        return None
    if not valid(block):
        return None
    return block


def nil_polka(state: HeightState) -> bool:  # line 44
    """At PREVOTE, 2f+1 prevotes of this round are for nil."""
    if state.step is not Step.PREVOTE:
        return False
    return state.votes(VoteType.PREVOTE, state.round).quorum_hash() == NIL


def decision(state: HeightState, valid: Callable[[Block], bool]) -> Commit | None:  # line 49
    """A block that 2f+1 precommits of some round are for, which we hold and find valid, with
    the certificate made of those precommits."""
    for round, votes in state.precommits.items():
        block_hash = votes.quorum_hash()
        if not block_hash:
            continue
        block = known_block(state, block_hash)
        if block is None or not valid(block):
            continue
        entries = tuple(
            CommitSignature(v.validator, v.signature) for v in votes.votes_for(block_hash)
        )
        return Commit(block, CommitCertificate(state.height, round, block_hash, entries))
    return None


def known_block(state: HeightState, block_hash: bytes) -> Block | None:
    for proposal in state.proposals.values():
        if proposal.block.block_hash == block_hash:
            return proposal.block
    return None


def round_to_skip_to(state: HeightState) -> int | None:  # line 55
    """The highest later round that validators of f+1 power have sent messages for."""
    ahead = [
        r
        for r, senders in state.round_senders.items()
        if r > state.round and state.validators.has_one_third(state.validators.power_of(senders))
    ]
    if not ahead:
        return None
    return max(ahead)
