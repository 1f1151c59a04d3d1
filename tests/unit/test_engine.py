"""The engine's rules one by one, driven by hand with a stub application."""

from __future__ import annotations

import dataclasses

import pytest

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.poa.engine import Engine
from carechain.consensus.poa.events import (
    Action,
    BlockPersisted,
    Broadcast,
    CommitBlock,
    PeerMisbehaved,
    Received,
    RecordLateVote,
    ReportEvidence,
    RequestSync,
    Send,
    Start,
    Tick,
    TxsAvailable,
    WakeAt,
    WalReplayed,
    WriteWal,
)
from carechain.consensus.poa.messages import Commit, Proposal, decode_message, encode_message
from carechain.consensus.poa.state import EngineConfig, Step
from carechain.consensus.poa.votes import proposer_cycle, proposer_of
from carechain.consensus.types import (
    ZERO_HASH,
    Block,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from carechain.tests.strategies import deterministic_key

CHAIN = "carechain-test"
T0 = 1_790_000_000_000
KEYS = [deterministic_key(60 + i) for i in range(4)]
VALIDATORS = ValidatorSet.of(
    [Validator(f"v{i}", k.public_key, k.public_key, 10) for i, k in enumerate(KEYS)]
)
BY_KEY = {k.public_key: k for k in KEYS}
CONFIG = EngineConfig(
    chain_id=CHAIN,
    heartbeat_interval_ms=10_000,
    clock_drift_ms_max=1000,
    timeout_propose_ms=1000,
    timeout_prevote_ms=500,
    timeout_precommit_ms=500,
    timeout_delta_ms=100,
    timeout_commit_ms=10,
    timeout_ms_max=2000,
    rebroadcast_ms=60_000,
)


@dataclasses.dataclass
class StubApp:
    height: int = 0
    pending: bool = True
    invalid: set[bytes] = dataclasses.field(default_factory=set)
    last_time_ms: int = T0 - 100_000
    committed: Commit | None = None

    def committed_height(self) -> int:
        return self.height

    def last_block_hash(self) -> bytes:
        return ZERO_HASH

    def last_block_time_ms(self) -> int:
        return self.last_time_ms

    def validator_set(self, height: int) -> ValidatorSet:
        return VALIDATORS

    def last_commit(self) -> Commit | None:
        return self.committed

    def has_pending(self) -> bool:
        return self.pending

    def propose(self, height: int, round: int, time_ms: int, proposer: bytes) -> Block:
        return block(height, round, time_ms, proposer)

    def validate(self, candidate: Block) -> str | None:
        return "invalid" if candidate.block_hash in self.invalid else None


def block(height: int, round: int, time_ms: int = T0, proposer: bytes | None = None) -> Block:
    header = BlockHeader(
        CHAIN,
        height,
        round,
        time_ms,
        proposer or KEYS[0].public_key,
        ZERO_HASH,
        ZERO_HASH,
        ZERO_HASH,
        VALIDATORS.hash(),
        VALIDATORS.hash(),
    )
    return Block(header, ())


def proposer_key(height: int, round: int) -> PrivateKey:
    return BY_KEY[proposer_of(VALIDATORS, height, round)]


def proposal(round: int, candidate: Block, pol_round: int = -1, height: int = 1) -> Proposal:
    signer = proposer_key(height, round)
    return Proposal(CHAIN, height, round, pol_round, candidate, signer.public_key).signed_by(signer)


def vote(
    key: PrivateKey, vote_type: VoteType, round: int, block_hash: bytes, height: int = 1
) -> Vote:
    return Vote(CHAIN, vote_type, height, round, block_hash, key.public_key).signed_by(key)


def me_not_proposer(rounds: range = range(2)) -> PrivateKey:
    """A validator that proposes none of the given rounds at height 1."""
    proposers = {proposer_of(VALIDATORS, 1, r) for r in rounds}
    return next(k for k in KEYS if k.public_key not in proposers)


def started(
    app: StubApp | None = None, key: PrivateKey | None = None
) -> tuple[Engine, list[Action]]:
    engine = Engine(CONFIG, app or StubApp(), key or me_not_proposer())
    return engine, engine.handle(Start(T0))


def deliver(engine: Engine, message: object, at: int = T0, sender: str = "peer") -> list[Action]:
    return engine.handle(Received(sender, message, at))  # type: ignore[arg-type]


def sent_votes(actions: list[Action], vote_type: VoteType) -> list[Vote]:
    return [
        a.message
        for a in actions
        if isinstance(a, Broadcast)
        and isinstance(a.message, Vote)
        and a.message.vote_type is vote_type
    ]


def run_until(engine: Engine, condition: object, limit: int = 50) -> int:
    """Tick at each time the engine asks to be woken until `condition()` holds."""
    now = engine.now_ms
    for _ in range(limit):
        if condition():  # type: ignore[operator]
            return now
        wakes = [a.at_ms for a in engine.handle(Tick(now)) if isinstance(a, WakeAt)]
        now = max(now + 1, min(wakes, default=now + 100))
    raise AssertionError("condition never held")


def others(engine: Engine) -> list[PrivateKey]:
    return [k for k in KEYS if k.public_key != engine.me]


def test_prevote_for_a_valid_proposal_and_wal_before_broadcast() -> None:
    engine, _ = started()
    candidate = block(1, 0)
    actions = deliver(engine, proposal(0, candidate))
    prevotes = sent_votes(actions, VoteType.PREVOTE)
    assert [v.block_hash for v in prevotes] == [candidate.block_hash]
    kinds = [type(a) for a in actions]
    assert kinds.index(WriteWal) < kinds.index(Broadcast)


def test_prevote_nil_when_the_proposal_times_out() -> None:
    engine, _ = started()
    actions = engine.handle(Tick(T0 + CONFIG.timeout_propose_ms))
    assert [v.block_hash for v in sent_votes(actions, VoteType.PREVOTE)] == [b""]


def test_prevote_nil_for_an_invalid_or_untimely_proposal() -> None:
    app = StubApp()
    bad = block(1, 0)
    app.invalid.add(bad.block_hash)
    engine, _ = started(app)
    assert [
        v.block_hash for v in sent_votes(deliver(engine, proposal(0, bad)), VoteType.PREVOTE)
    ] == [b""]
    engine, _ = started()
    future = block(1, 0, T0 + 60_000)
    assert [
        v.block_hash for v in sent_votes(deliver(engine, proposal(0, future)), VoteType.PREVOTE)
    ] == [b""]


def test_polka_locks_and_precommits() -> None:
    engine, _ = started()
    candidate = block(1, 0)
    deliver(engine, proposal(0, candidate))
    actions: list[Action] = []
    for key in others(engine)[:2]:
        actions += deliver(engine, vote(key, VoteType.PREVOTE, 0, candidate.block_hash))
    assert [v.block_hash for v in sent_votes(actions, VoteType.PRECOMMIT)] == [candidate.block_hash]
    assert engine.state is not None
    assert engine.state.locked_round == 0
    assert engine.state.locked_block == candidate


def _locked_engine() -> tuple[Engine, Block]:
    engine, _ = started(key=me_not_proposer(range(3)))
    candidate = block(1, 0)
    deliver(engine, proposal(0, candidate))
    for key in others(engine)[:2]:
        deliver(engine, vote(key, VoteType.PREVOTE, 0, candidate.block_hash))
    for key in others(engine):
        deliver(engine, vote(key, VoteType.PRECOMMIT, 0, b""))  # the round fails for all
    engine.handle(Tick(T0 + CONFIG.timeout(CONFIG.timeout_precommit_ms, 0)))
    assert engine.state is not None
    assert engine.state.round == 1
    return engine, candidate


def test_a_locked_validator_prevotes_nil_for_another_block() -> None:
    engine, _ = _locked_engine()
    other = block(1, 1, T0 + 1)
    actions = deliver(engine, proposal(1, other), at=T0 + 600)
    assert [v.block_hash for v in sent_votes(actions, VoteType.PREVOTE)] == [b""]


def test_a_newer_proof_of_lock_unlocks() -> None:
    engine, _ = _locked_engine()
    other = block(1, 1, T0 + 1)
    for key in others(engine):  # round 1: a polka for `other` that we did not take part in,
        deliver(engine, vote(key, VoteType.PREVOTE, 1, other.block_hash), at=T0 + 600)
        deliver(engine, vote(key, VoteType.PRECOMMIT, 1, b""), at=T0 + 600)  # then round 1 fails
    now = run_until(engine, lambda: engine.state is not None and engine.state.round == 2)
    actions = deliver(engine, proposal(2, other, pol_round=1), at=now + 1)
    assert [v.block_hash for v in sent_votes(actions, VoteType.PREVOTE)] == [other.block_hash]


def test_skip_to_a_round_that_more_than_a_third_reached() -> None:
    engine, _ = started()
    keys = others(engine)
    deliver(engine, vote(keys[0], VoteType.PREVOTE, 5, b""))
    assert engine.state is not None
    assert engine.state.round == 0, "10 of 40 is not more than a third"
    deliver(engine, vote(keys[1], VoteType.PRECOMMIT, 5, b""))
    assert engine.state.round == 5


def test_nil_polka_precommits_nil() -> None:
    engine, _ = started()
    engine.handle(Tick(T0 + CONFIG.timeout_propose_ms))
    actions: list[Action] = []
    for key in others(engine)[:2]:
        actions += deliver(engine, vote(key, VoteType.PREVOTE, 0, b""), at=T0 + 1100)
    assert [v.block_hash for v in sent_votes(actions, VoteType.PRECOMMIT)] == [b""]


def test_quorum_of_precommits_decides_with_a_certificate() -> None:
    engine, _ = started()
    candidate = block(1, 0)
    deliver(engine, proposal(0, candidate))
    actions: list[Action] = []
    for key in others(engine):
        actions += deliver(engine, vote(key, VoteType.PRECOMMIT, 0, candidate.block_hash))
    commits = [a for a in actions if isinstance(a, CommitBlock)]
    assert len(commits) == 1
    commits[0].certificate.verify(CHAIN, VALIDATORS, candidate.block_hash)
    assert engine.state is not None
    assert engine.state.step is Step.COMMIT
    engine.handle(BlockPersisted(1, T0 + 10))
    app = engine.app
    assert isinstance(app, StubApp)
    app.height = 1
    engine.handle(Tick(T0 + 20))
    assert engine.height == 2


def _decided_without_one() -> tuple[Engine, Block, PrivateKey, CommitBlock]:
    """Height 1 decided by this engine and two others; the fourth validator's precommit has
    not come."""
    engine, _ = started()
    candidate = block(1, 0)
    deliver(engine, proposal(0, candidate))
    slow, *quick = others(engine)
    actions: list[Action] = []
    for key in quick:
        actions += deliver(engine, vote(key, VoteType.PREVOTE, 0, candidate.block_hash))
    for key in quick:
        actions += deliver(engine, vote(key, VoteType.PRECOMMIT, 0, candidate.block_hash))
    [commit] = [a for a in actions if isinstance(a, CommitBlock)]
    assert slow.public_key not in {e.validator for e in commit.certificate.precommits}
    return engine, candidate, slow, commit


def _late(actions: list[Action]) -> list[RecordLateVote]:
    return [a for a in actions if isinstance(a, RecordLateVote)]


def test_a_precommit_after_the_certificate_is_kept_as_late_once() -> None:
    engine, candidate, slow, commit = _decided_without_one()
    late = vote(slow, VoteType.PRECOMMIT, 0, candidate.block_hash)
    [kept] = _late(deliver(engine, late))
    assert kept.certificate == commit.certificate
    assert kept.late == CommitSignature(slow.public_key, late.signature)
    assert _late(deliver(engine, late)) == [], "a copy is not kept twice"
    # old votes that are not late precommits for the decided block are ignored
    assert _late(deliver(engine, vote(slow, VoteType.PREVOTE, 0, candidate.block_hash))) == []
    assert _late(deliver(engine, vote(slow, VoteType.PRECOMMIT, 1, candidate.block_hash))) == []
    # a forged one is the sender's misbehaviour, not a late vote
    engine, candidate, slow, _ = _decided_without_one()
    forged = dataclasses.replace(
        late, signature=vote(KEYS[0], VoteType.PRECOMMIT, 0, b"").signature
    )
    actions = deliver(engine, forged, sender="mallory")
    assert _late(actions) == []
    assert any(isinstance(a, PeerMisbehaved) and a.peer == "mallory" for a in actions)


def test_precommits_held_when_a_peers_certificate_decides_are_late() -> None:
    """This engine precommitted, but a peer's commit message decided the height with a
    certificate of the other three: its own precommit is late, not missing."""
    engine, _ = started()
    candidate = block(1, 0)
    deliver(engine, proposal(0, candidate))
    for key in others(engine)[:2]:
        deliver(engine, vote(key, VoteType.PREVOTE, 0, candidate.block_hash))
    assert engine.me is not None
    precommits = [vote(k, VoteType.PRECOMMIT, 0, candidate.block_hash) for k in others(engine)]
    entries = tuple(CommitSignature(v.validator, v.signature) for v in precommits)
    certificate = CommitCertificate(1, 0, candidate.block_hash, entries)
    actions = deliver(engine, Commit(candidate, certificate))
    assert [a.late.validator for a in _late(actions)] == [engine.me]


def test_a_late_precommit_counts_until_the_next_height_is_decided() -> None:
    engine, candidate, slow, commit = _decided_without_one()
    engine.handle(BlockPersisted(1, T0 + 10))
    app = engine.app
    assert isinstance(app, StubApp)
    app.height, app.committed = 1, Commit(commit.block, commit.certificate)
    run_until(engine, lambda: engine.height == 2)
    late = vote(slow, VoteType.PRECOMMIT, 0, candidate.block_hash)
    [kept] = _late(deliver(engine, late))  # at height 2: still taken for height 1
    assert kept.certificate.height == 1
    # once height 2 is decided, a vote for height 1 is missed, not late
    engine, candidate, slow, commit = _decided_without_one()
    engine.handle(BlockPersisted(1, T0 + 10))
    app = engine.app
    assert isinstance(app, StubApp)
    app.height, app.committed = 1, Commit(commit.block, commit.certificate)
    run_until(engine, lambda: engine.height == 2)
    second = block(2, 0, T0 + 1000, proposer_of(VALIDATORS, 2, 0))
    deliver(engine, proposal(0, second, height=2), at=T0 + 1000)
    for key in KEYS:
        deliver(engine, vote(key, VoteType.PRECOMMIT, 0, second.block_hash, height=2), T0 + 1000)
    assert engine.state is not None
    assert engine.state.decided is not None
    assert _late(deliver(engine, late, at=T0 + 1000)) == []


def test_a_key_outside_the_validator_set_follows_and_signs_nothing() -> None:
    """A validator genesis does not list (or governance removed): it takes proposals and
    votes, decides with the others' quorum, and never signs, proposes or counts itself (it
    used to count its own vote and fail with a KeyError)."""
    outsider = deterministic_key(99)
    engine, actions = started(key=outsider)
    assert not engine.signing
    candidate = block(1, 0)
    actions += deliver(engine, proposal(0, candidate))
    for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        for key in KEYS[:3]:
            actions += deliver(engine, vote(key, vote_type, 0, candidate.block_hash))
    signed = [
        a
        for a in actions
        if isinstance(a, WriteWal)
        or (isinstance(a, Broadcast) and isinstance(a.message, Vote | Proposal))
    ]
    assert signed == []  # it passes the decided commit on, as every node does; nothing more
    commits = [a for a in actions if isinstance(a, CommitBlock)]
    assert [c.block.block_hash for c in commits] == [candidate.block_hash]


def test_duplicates_out_of_range_and_bad_messages() -> None:
    engine, _ = started()
    keys = others(engine)
    first = vote(keys[0], VoteType.PREVOTE, 0, b"")
    deliver(engine, first)
    assert deliver(engine, first) == []
    assert deliver(engine, vote(keys[0], VoteType.PREVOTE, 5000, b"")) == []
    outsider = deterministic_key(999)
    bad = deliver(engine, vote(outsider, VoteType.PREVOTE, 0, b""), sender="mallory")
    assert any(isinstance(a, PeerMisbehaved) and a.peer == "mallory" for a in bad)
    forged = dataclasses.replace(vote(keys[1], VoteType.PREVOTE, 0, b""), signature=bytes(64))
    assert any(isinstance(a, PeerMisbehaved) for a in deliver(engine, forged))
    other_chain = dataclasses.replace(first, chain_id="carechain-other")
    assert any(isinstance(a, PeerMisbehaved) for a in deliver(engine, other_chain))
    wrong_proposer = Proposal(CHAIN, 1, 0, -1, block(1, 0), outsider.public_key).signed_by(outsider)
    assert any(isinstance(a, PeerMisbehaved) for a in deliver(engine, wrong_proposer))


def test_equivocation_is_reported_as_evidence() -> None:
    engine, _ = started()
    key = others(engine)[0]
    deliver(engine, vote(key, VoteType.PREVOTE, 0, b""))
    actions = deliver(engine, vote(key, VoteType.PREVOTE, 0, b"\x01" * 32))
    evidence = [a for a in actions if isinstance(a, ReportEvidence)]
    assert len(evidence) == 1
    assert {evidence[0].first.block_hash, evidence[0].second.block_hash} == {b"", b"\x01" * 32}


def _certificate(candidate: Block, signers: list[PrivateKey], height: int = 1) -> CommitCertificate:
    entries = tuple(
        CommitSignature(
            k.public_key, vote(k, VoteType.PRECOMMIT, 0, candidate.block_hash, height).signature
        )
        for k in sorted(signers, key=lambda k: k.public_key)
    )
    return CommitCertificate(height, 0, candidate.block_hash, entries)


def test_commit_messages_are_checked_and_wrong_heights_handled() -> None:
    engine, _ = started()
    candidate = block(1, 0)
    weak = Commit(candidate, _certificate(candidate, KEYS[:2]))
    assert any(isinstance(a, PeerMisbehaved) for a in deliver(engine, weak))
    mismatched = Commit(block(1, 0, T0 + 5), _certificate(candidate, KEYS[:3]))
    assert any(isinstance(a, PeerMisbehaved) for a in deliver(engine, mismatched))
    ahead = block(7, 0)
    syncs = [
        a
        for a in deliver(engine, Commit(ahead, _certificate(ahead, KEYS[:3], 7)))
        if isinstance(a, RequestSync)
    ]
    assert syncs == [RequestSync("peer", 1, 7)]
    good = deliver(engine, Commit(candidate, _certificate(candidate, KEYS[:3])))
    assert [a.block for a in good if isinstance(a, CommitBlock)] == [candidate]


def test_wal_replay_never_signs_a_conflicting_vote() -> None:
    key = me_not_proposer()
    engine, _ = started(key=key)
    candidate = block(1, 0)
    actions = deliver(engine, proposal(0, candidate))
    records = tuple(a.record for a in actions if isinstance(a, WriteWal))
    restarted = Engine(CONFIG, StubApp(), key)
    restarted.handle(WalReplayed(records))
    restarted.handle(Start(T0 + 50))
    after_timeout = restarted.handle(Tick(T0 + 50 + CONFIG.timeout_propose_ms))
    assert [v.block_hash for v in sent_votes(after_timeout, VoteType.PREVOTE)] == [
        candidate.block_hash
    ]


def test_timeouts_double_their_growth_per_round_and_are_capped() -> None:
    delta = CONFIG.timeout_delta_ms
    assert [CONFIG.timeout(1000, r) for r in range(4)] == [
        1000 + delta * steps for steps in (0, 1, 3, 7)
    ]
    assert CONFIG.timeout(1000, 10_000) == CONFIG.timeout_ms_max
    assert CONFIG.timeout(1000, 2**31) == CONFIG.timeout_ms_max


def test_idle_engine_waits_for_transactions_or_the_heartbeat() -> None:
    app = StubApp(pending=False, last_time_ms=T0 - 1000)
    engine, actions = started(app)
    assert engine.state is not None
    assert engine.state.step is Step.WAIT
    assert WakeAt(T0 - 1000 + CONFIG.heartbeat_interval_ms) in actions
    engine.handle(TxsAvailable(T0 + 5))
    assert engine.state.step.name == "PROPOSE"  # (mypy narrows the enum from the line above)
    idle, _ = started(StubApp(pending=False, last_time_ms=T0 - 1000))
    idle.handle(Tick(T0 - 1000 + CONFIG.heartbeat_interval_ms))
    assert idle.state is not None
    assert idle.state.step is Step.PROPOSE


def test_the_proposer_proposes_and_signs_its_block() -> None:
    key = proposer_key(1, 0)
    _, actions = started(key=key)
    proposals = [
        a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Proposal)
    ]
    assert len(proposals) == 1
    assert proposals[0].signature_valid()
    wire = encode_message(proposals[0])
    assert decode_message(wire, max_bytes=len(wire)) == proposals[0]


@pytest.mark.parametrize(
    ("powers", "expected"), [((10, 10, 10), [1, 1, 1]), ((1, 2), [1, 2]), ((3, 1, 1), [3, 1, 1])]
)
def test_weighted_round_robin(powers: tuple[int, ...], expected: list[int]) -> None:
    keys = [deterministic_key(70 + i) for i in range(len(powers))]
    validators = ValidatorSet.of(
        [
            Validator(f"v{i}", k.public_key, k.public_key, p)
            for i, (k, p) in enumerate(zip(keys, powers, strict=True))
        ]
    )
    cycle = proposer_cycle(validators)
    counts = [cycle.count(k.public_key) for k in keys]
    assert counts == expected
    heavy = keys[powers.index(max(powers))].public_key
    if sum(expected) - max(expected) >= max(expected):  # it can take turns with the others
        assert all(not (a == b == heavy) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True))


def test_a_restarted_locked_proposer_re_proposes_with_its_proof_of_lock() -> None:
    """Regression (simulator seed 51): a lock restored from the WAL without the prevotes that
    justified it produced re-proposals nobody could accept, and the chain stalled."""
    key = proposer_key(1, 1)
    engine, _ = started(key=key)
    candidate = block(1, 0)
    actions = deliver(engine, proposal(0, candidate))
    helpers = [
        k for k in KEYS if k.public_key not in (key.public_key, proposer_key(1, 0).public_key)
    ]
    for helper in [proposer_key(1, 0), *helpers][:2]:
        actions += deliver(engine, vote(helper, VoteType.PREVOTE, 0, candidate.block_hash))
    assert engine.state is not None
    assert engine.state.locked_round == 0
    records = tuple(a.record for a in actions if isinstance(a, WriteWal))
    restarted = Engine(CONFIG, StubApp(), key)
    restarted.handle(WalReplayed(records))
    restarted.handle(Start(T0 + 100))
    for helper in helpers:  # round 0 ends without a decision
        deliver(restarted, vote(helper, VoteType.PRECOMMIT, 0, b""), at=T0 + 200)
    sent: list[Action] = []
    now = T0 + 200
    while restarted.state is not None and restarted.state.round == 0:
        now += 100
        sent += restarted.handle(Tick(now))
    proposals = [
        a.message for a in sent if isinstance(a, Broadcast) and isinstance(a.message, Proposal)
    ]
    assert [(p.round, p.pol_round, p.block) for p in proposals] == [(1, 0, candidate)]
    proof = [
        a.message
        for a in sent
        if isinstance(a, Broadcast)
        and isinstance(a.message, Vote)
        and a.message.round == 0
        and a.message.vote_type is VoteType.PREVOTE
    ]
    assert len({v.validator for v in proof}) == 3, "the re-proposal travels with its 3 prevotes"


def test_a_restarted_validator_re_announces_its_last_commit_from_the_store() -> None:
    """Regression (simulator seed 2806): a validator that committed and crashed before its
    Commit left must still tell peers stuck at that height, or they may never finish it."""
    decided = block(1, 0)
    app = StubApp(height=1, committed=Commit(decided, _certificate(decided, KEYS[:3])))
    engine, _ = started(app)
    actions = engine.handle(Tick(T0 + CONFIG.rebroadcast_ms))
    commits = [
        a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Commit)
    ]
    assert [c.block for c in commits] == [decided]


def _a_height_played(sign_from_height: int) -> list[Action]:
    """Height 1 as its round-0 proposer sees it: its own turn, a timeout, then the others'
    nil prevotes and precommits."""
    engine = Engine(CONFIG, StubApp(), proposer_key(1, 0))
    engine.sign_from_height = sign_from_height
    actions = engine.handle(Start(T0))
    actions += engine.handle(Tick(T0 + 10 * CONFIG.timeout_propose_ms))
    for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        for signer in others(engine):
            actions += deliver(engine, vote(signer, vote_type, 0, b""))
    return actions


def test_below_its_sign_from_height_an_engine_proposes_and_votes_nothing() -> None:
    """A validator that lost its WAL sits heights out: no proposal, vote or lock of its own."""
    signing = _a_height_played(sign_from_height=1)
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Proposal) for a in signing)
    assert sent_votes(signing, VoteType.PREVOTE)
    assert sent_votes(signing, VoteType.PRECOMMIT)
    held = _a_height_played(sign_from_height=2)
    assert [a for a in held if isinstance(a, (Broadcast, Send, WriteWal))] == []
