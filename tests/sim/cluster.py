"""The deterministic cluster simulator: many engines, one virtual clock, one seeded network.

A run draws its faults from its seed: message latency, loss and duplication; a partition that
isolates one validator and a split into two halves, both healed later; a validator that
crashes (possibly between writing its WAL and sending what the WAL guards) and restarts with
WAL replay; one Byzantine validator that equivocates its proposals and votes. Checkers:
agreement (never two blocks at one height), validity (every certificate verifies, every node
computes the same state root), no honest double-sign, and liveness (after everything heals,
every live honest node commits new heights within a bound of simulated time).
Reproduce any run with `python -m tests.sim --seed N`.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from typing import Any

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.errors import CarechainError
from carechain.consensus.genesis import ConsensusParams, Genesis, Institution, InstitutionKind
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
    WriteWal,
)
from carechain.consensus.poa.messages import (
    ConsensusMessage,
    Proposal,
    decode_message,
    encode_message,
)
from carechain.consensus.poa.state import EngineConfig
from carechain.consensus.types import Validator, ValidatorSet, Vote
from carechain.node.wallet import builders
from carechain.tests.sim.network import NetworkFaults, Partition, SimNetwork
from carechain.tests.sim.node import SimNode

EngineFactory = Callable[..., Engine]
GENESIS_TIME_MS = 1_790_000_000_000


@dataclasses.dataclass(frozen=True)
class SimConfig:
    seed: int
    validators: int = 4
    faults: bool = True
    duration_ms: int = 30_000
    engine_factory: EngineFactory = Engine
    crash_mid_batch: bool | None = None  # None: drawn from the seed
    loss: float | None = None  # None: drawn from the seed (0 without faults)


@dataclasses.dataclass
class SimResult:
    seed: int
    validators: int
    violations: list[str]
    heights: dict[str, int]
    simulated_ms: int
    committed_heights: int
    mean_rounds_per_height: float
    messages_sent: int
    evidence: int
    late_votes: int
    fault_plan: str

    @property
    def ok(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        status = "ok" if self.ok else "VIOLATION: " + "; ".join(self.violations[:3])
        return (
            f"seed {self.seed} ({self.validators} validators, {self.fault_plan}): {status}; "
            f"heights {sorted(self.heights.values())}, "
            f"{self.mean_rounds_per_height:.2f} rounds/height"
        )


def engine_config(chain_id: str) -> EngineConfig:
    return EngineConfig(
        chain_id=chain_id,
        heartbeat_interval_ms=1000,
        clock_drift_ms_max=500,
        timeout_propose_ms=400,
        timeout_prevote_ms=200,
        timeout_precommit_ms=200,
        timeout_delta_ms=100,
        timeout_commit_ms=50,
        timeout_ms_max=1500,
        rebroadcast_ms=400,
    )


def liveness_bound_ms(validators: int, config: EngineConfig) -> int:
    """How long after healing a new height must commit: within n + 2 rounds a correct proposer
    that every correct validator can follow comes round (a locked one re-proposes with its proof
    of lock), and no round lasts longer than its three capped timeouts; plus the heartbeat."""
    return (validators + 2) * 3 * config.timeout_ms_max + 1000


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        keys = [PrivateKey(self.rng.randbytes(32)) for _ in range(config.validators)]
        self.genesis = self._genesis(keys)
        engine = engine_config(self.genesis.chain_id)
        self.byzantine: str | None = None
        self.crash: tuple[str, int, int, bool] | None = None  # node, at, restart at, mid-batch
        faults = self._plan_faults(keys)
        self.network = SimNetwork(random.Random(config.seed + 1), faults)
        self.nodes = {
            f"v{i}": SimNode(
                f"v{i}",
                key,
                self.genesis,
                engine,
                byzantine=f"v{i}" == self.byzantine,
                engine_factory=config.engine_factory,
            )
            for i, key in enumerate(keys)
        }
        self.now_ms = GENESIS_TIME_MS
        self.queue: list[tuple[int, int, str, str, Any]] = []
        self.sequence = 0
        self.generation = dict.fromkeys(self.nodes, 0)
        self.scheduled_ticks: dict[str, set[int]] = {name: set() for name in self.nodes}
        self.crash_mid_batch: set[str] = set()
        self.violations: list[str] = []
        self.decided: dict[int, bytes] = {}
        self.roots: dict[int, bytes] = {}
        self.signed: dict[tuple[bytes, int, int, int], bytes] = {}
        self.evidence = 0
        self.late_votes = 0  # late precommits the engines kept
        self.heal_ms = max(faults.heal_ms(), self.crash[2] if self.crash else 0)
        self.liveness_bound_ms = liveness_bound_ms(config.validators, engine)

    # -- setup ---------------------------------------------------------------------------------
    def _genesis(self, keys: list[PrivateKey]) -> Genesis:
        hospital = PrivateKey(self.rng.randbytes(32))
        return Genesis(
            chain_id="carechain-sim",
            genesis_time_ms=GENESIS_TIME_MS,
            validators=ValidatorSet.of(
                [Validator(f"v{i}", k.public_key, k.public_key, 10) for i, k in enumerate(keys)]
            ),
            governance_threshold=-(-2 * len(keys) // 3),
            institutions=(Institution("hospital", InstitutionKind.HOSPITAL, hospital.public_key),),
            params=ConsensusParams(heartbeat_interval_ms=1000, clock_drift_ms_max=500),
            extra_data_types=(),
        )

    def _plan_faults(self, keys: list[PrivateKey]) -> NetworkFaults:
        if not self.config.faults:
            loss = self.config.loss or 0.0
            self.plan = f"no faults but loss {loss:.2f}"
            return NetworkFaults(latency_ms=(5, 30), loss=loss)
        rng, names = self.rng, [f"v{i}" for i in range(len(keys))]
        start = GENESIS_TIME_MS
        faults = NetworkFaults(
            latency_ms=(2, rng.choice([30, 80, 200])),
            loss=rng.choice([0.0, 0.05, 0.15, 0.3])
            if self.config.loss is None
            else self.config.loss,
            duplication=rng.choice([0.0, 0.1]),
        )
        isolated = rng.choice(names)
        t0 = start + rng.randint(2_000, 8_000)
        faults.partitions.append(
            Partition(
                t0,
                t0 + rng.randint(1_000, 6_000),
                (frozenset({isolated}), frozenset(set(names) - {isolated})),
            )
        )
        half = frozenset(rng.sample(names, len(names) // 2))
        t1 = start + rng.randint(10_000, 16_000)
        faults.partitions.append(
            Partition(t1, t1 + rng.randint(1_000, 6_000), (half, frozenset(set(names) - half)))
        )
        if rng.random() < 0.6:
            self.byzantine = rng.choice(names)
        honest = [n for n in names if n != self.byzantine]
        crashed = rng.choice(honest)
        at = start + rng.randint(3_000, 20_000)
        mid_batch = rng.random() < 0.5
        if self.config.crash_mid_batch is not None:
            mid_batch = self.config.crash_mid_batch
        self.crash = (crashed, at, at + rng.randint(500, 8_000), mid_batch)
        self.plan = (
            f"loss {faults.loss:.2f}, latency up to {faults.latency_ms[1]} ms, "
            f"byzantine {self.byzantine or 'none'}, crash {crashed}"
        )
        return faults

    def _schedule(self, at_ms: int, name: str, kind: str, payload: Any = None) -> None:
        self.sequence += 1
        heapq.heappush(
            self.queue, (at_ms, self.sequence, name, kind, (self.generation[name], payload))
        )

    # -- running -------------------------------------------------------------------------------
    def run(self) -> SimResult:
        for name in self.nodes:
            self._schedule(self.now_ms, name, "start")
        self._schedule_transactions()
        if self.crash:
            name, at, restart_at, mid_batch = self.crash
            self._schedule(at, name, "crash", mid_batch)
            self._schedule(restart_at, name, "restart")
        end = max(GENESIS_TIME_MS + self.config.duration_ms, self.heal_ms + self.liveness_bound_ms)
        heights_at_heal: dict[str, int] | None = None
        while self.queue and self.queue[0][0] <= end:
            at, _, name, kind, (generation, payload) = heapq.heappop(self.queue)
            if heights_at_heal is None and at >= self.heal_ms:
                heights_at_heal = self._honest_heights()
            self.now_ms = at
            self._dispatch(name, kind, generation, payload)
        self._check_liveness(heights_at_heal or self._honest_heights())
        return self._result()

    def _schedule_transactions(self) -> None:
        for index in range(6):
            p1, p2 = PrivateKey(self.rng.randbytes(32)), PrivateKey(self.rng.randbytes(32))
            draft = builders.register_patient(
                self.genesis.chain_id,
                (p1.public_key, p2.public_key),
                GENESIS_TIME_MS + 10 * builders.DAY_MS,
            )
            at = GENESIS_TIME_MS + 1_000 + index * self.rng.randint(500, 5_000)
            for name in self.nodes:
                self._schedule(at, name, "tx", draft.signed(p1, p2))

    def _dispatch(self, name: str, kind: str, generation: int, payload: Any) -> None:
        sim = self.nodes[name]
        if kind == "restart":
            self.generation[name] += 1
            sim.alive = True
            sim.boot()
            self._perform(sim, sim.engine.handle(Start(self.now_ms)))
            return
        if not sim.alive or generation != self.generation[name]:
            return
        if kind == "crash":
            if payload:
                self.crash_mid_batch.add(name)
            else:
                self._kill(sim)
            return
        event = self._event(sim, kind, payload)
        if event is not None:
            self._perform(sim, sim.engine.handle(event))

    def _event(self, sim: SimNode, kind: str, payload: Any) -> Any:  # noqa: PLR0911 - per kind
        now = self.now_ms
        if kind == "start":
            return Start(now)
        if kind == "tick":
            self.scheduled_ticks[sim.name].discard(now)
            return Tick(now)
        if kind == "persisted":
            return BlockPersisted(payload, now)
        if kind == "tx":
            sim.mempool.setdefault(payload.id, payload)
            return TxsAvailable(now)
        if kind == "deliver":
            sender, data = payload
            try:
                message = decode_message(data, max_bytes=len(data))
            except CarechainError:
                self.violations.append(f"{sim.name} could not decode a message from {sender}")
                return None
            return Received(sender, message, now)
        if kind == "sync":
            self._sync(sim, payload)
            return None
        raise AssertionError(kind)

    def _kill(self, sim: SimNode) -> None:
        sim.alive = False
        self.generation[sim.name] += 1
        self.scheduled_ticks[sim.name].clear()

    # -- the shell -----------------------------------------------------------------------------
    def _perform(self, sim: SimNode, actions: list[Action]) -> None:
        if sim.name in self.crash_mid_batch:
            self.crash_mid_batch.discard(sim.name)
            actions = actions[: self.rng.randint(0, len(actions))]
            self._perform_all(sim, actions)
            self._kill(sim)
            return
        self._perform_all(sim, actions)

    def _perform_all(self, sim: SimNode, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, WriteWal):
                sim.wal.append(action.record)  # durable: the in-memory WAL survives a crash
            elif isinstance(action, Broadcast):
                self._broadcast(sim, action.message)
            elif isinstance(action, Send):
                self._send(sim.name, action.peer, action.message)
            elif isinstance(action, WakeAt):
                if action.at_ms not in self.scheduled_ticks[sim.name]:
                    self.scheduled_ticks[sim.name].add(action.at_ms)
                    self._schedule(max(action.at_ms, self.now_ms), sim.name, "tick")
            elif isinstance(action, CommitBlock):
                self._commit(sim, action)
            elif isinstance(action, RequestSync):
                self._schedule(self.now_ms + 50, sim.name, "sync", action)
            elif isinstance(action, ReportEvidence):
                self.evidence += 1
            elif isinstance(action, RecordLateVote):
                self._late_vote(sim, action)
            else:
                assert isinstance(action, PeerMisbehaved)

    def _broadcast(self, sim: SimNode, message: ConsensusMessage) -> None:
        own = isinstance(message, Vote | Proposal) and sim.key.public_key in (
            getattr(message, "validator", None),
            getattr(message, "proposer", None),
        )
        if own and isinstance(message, Vote) and not sim.byzantine:
            self._record_signature(sim, message)
        peers = [n for n in self.nodes if n != sim.name]
        data = encode_message(message)
        if sim.byzantine and own and isinstance(message, Proposal | Vote):
            twin = encode_message(self._equivocate(sim, message))
            half = len(peers) // 2
            for peer in peers[:half]:
                self._deliver(sim.name, peer, data)
            for peer in peers[half:]:
                self._deliver(sim.name, peer, twin)
            return
        for peer in peers:
            self._deliver(sim.name, peer, data)

    def _equivocate(self, sim: SimNode, message: Proposal | Vote) -> ConsensusMessage:
        if isinstance(message, Vote):
            other = b"" if message.block_hash else b"\x66" * 32
            return dataclasses.replace(message, block_hash=other).signed_by(sim.key)
        block = sim.app.propose(
            message.height, message.round, message.block.header.time_ms + 1, sim.key.public_key
        )
        return dataclasses.replace(message, block=block, pol_round=-1).signed_by(sim.key)

    def _send(self, sender: str, receiver: str, message: ConsensusMessage) -> None:
        self._deliver(sender, receiver, encode_message(message))

    def _deliver(self, sender: str, receiver: str, data: bytes) -> None:
        for arrival in self.network.deliveries(sender, receiver, self.now_ms):
            self._schedule(arrival, receiver, "deliver", (sender, data))

    def _record_signature(self, sim: SimNode, vote: Vote) -> None:
        key = (vote.validator, vote.height, vote.round, int(vote.vote_type))
        earlier = self.signed.setdefault(key, vote.block_hash)
        if earlier != vote.block_hash:
            self.violations.append(
                f"honest {sim.name} double-signed {vote.vote_type.name.lower()} at height "
                f"{vote.height} round {vote.round}"
            )

    def _commit(self, sim: SimNode, action: CommitBlock) -> None:
        block, certificate = action.block, action.certificate
        height = block.header.height
        try:
            certificate.verify(
                self.genesis.chain_id, sim.app.validator_set(height), block.block_hash
            )
        except CarechainError as exc:
            self.violations.append(
                f"{sim.name} committed height {height} with a bad certificate: {exc}"
            )
        earlier = self.decided.setdefault(height, block.block_hash)
        if earlier != block.block_hash:
            self.violations.append(f"agreement: two different blocks committed at height {height}")
        sim.commit(block, certificate)
        root = self.roots.setdefault(height, sim.chain.store.root)
        if root != sim.chain.store.root:
            self.violations.append(f"validity: {sim.name} computed another state root at {height}")
        self._schedule(self.now_ms, sim.name, "persisted", height)

    def _late_vote(self, sim: SimNode, action: RecordLateVote) -> None:
        """A late precommit the engine kept must be one that could have been in the
        certificate: for the decided block and round, by a validator the certificate lacks,
        its signature good."""
        certificate, late = action.certificate, action.late
        vote = certificate.vote_of(self.genesis.chain_id, late)
        signers = {entry.validator for entry in certificate.precommits}
        if (
            self.decided.get(certificate.height) != certificate.block_hash
            or late.validator in signers
            or late.validator not in sim.app.validator_set(certificate.height).by_key
            or not vote.signature_valid()
        ):
            self.violations.append(f"{sim.name} kept a bad late vote at {certificate.height}")
        self.late_votes += 1

    def _sync(self, sim: SimNode, request: RequestSync) -> None:
        """Block sync: fetch certified blocks from the peer, verify each, commit."""
        source = self.nodes[request.peer]
        start = sim.chain.height
        for index in range(start, source.chain.height):
            block, certificate = source.chain.blocks[index], source.chain.certificates[index]
            validators = sim.app.validator_set(block.header.height)
            try:
                certificate.verify(self.genesis.chain_id, validators, block.block_hash)
            except CarechainError:
                return
            problem = sim.app.validate(block)
            if problem is not None:
                self.violations.append(f"{sim.name} synced an invalid block: {problem}")
                return
            self._commit_synced(sim, block, certificate)
        if sim.chain.height > start:
            self._perform(sim, sim.engine.handle(BlockPersisted(sim.chain.height, self.now_ms)))

    def _commit_synced(self, sim: SimNode, block: Any, certificate: Any) -> None:
        earlier = self.decided.setdefault(block.header.height, block.block_hash)
        if earlier != block.block_hash:
            self.violations.append(
                f"agreement: sync brought another block at {block.header.height}"
            )
        sim.commit(block, certificate)

    # -- checkers ------------------------------------------------------------------------------
    def _honest_heights(self) -> dict[str, int]:
        return {n: s.chain.height for n, s in self.nodes.items() if not s.byzantine}

    def _check_liveness(self, at_heal: dict[str, int]) -> None:
        floor = min(at_heal.values())
        for name, height in self._honest_heights().items():
            if self.nodes[name].alive and height <= floor:
                self.violations.append(
                    f"liveness: {name} at height {height}, {floor} when the network healed; "
                    f"expected a new height within {self.liveness_bound_ms} ms"
                )

    def _result(self) -> SimResult:
        rounds = [c.round for s in self.nodes.values() for c in s.chain.certificates]
        return SimResult(
            seed=self.config.seed,
            validators=self.config.validators,
            violations=self.violations,
            heights={n: s.chain.height for n, s in self.nodes.items()},
            simulated_ms=self.now_ms - GENESIS_TIME_MS,
            committed_heights=max(self.decided, default=0),
            mean_rounds_per_height=1 + sum(rounds) / len(rounds) if rounds else 0.0,
            messages_sent=self.network.sent,
            evidence=self.evidence,
            late_votes=self.late_votes,
            fault_plan=self.plan,
        )


def simulate(seed: int, validators: int = 4, **options: Any) -> SimResult:
    return Simulation(SimConfig(seed=seed, validators=validators, **options)).run()
