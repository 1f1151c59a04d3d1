"""The node: the asyncio shell around the pure engine and ledger.

It performs the engine's actions in order (a WAL record is fsynced before any message it
guards leaves), feeds the engine messages, ticks and transactions under one lock so batches
never interleave, commits decided blocks with their side effects (WAL rotation, pools, event
stream), syncs from peers when behind, and keeps the network's permission set equal to the
validators' node ids. Every task runs in one TaskGroup; `run` returns after a clean stop.

Its parts: what peers send, consensus first (node/peer_messages.py), catching up when
behind (node/catchup.py), what this validator may sign (node/signing.py), the proposals'
budget and the peers' intake (node/proposals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from carechain.config.node import NodeConfig
from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.errors import CarechainError
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import SignatureCache
from carechain.consensus.ledger.context import BlockContext
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.poa.engine import Engine
from carechain.consensus.poa.events import (
    Action,
    BlockPersisted,
    Broadcast,
    CommitBlock,
    Event,
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
from carechain.consensus.poa.limits import EncodedLimits
from carechain.consensus.poa.messages import (
    Commit,
    encode_message,
)
from carechain.consensus.poa.state import EngineConfig
from carechain.consensus.types import Block, CommitCertificate, Tx
from carechain.node.admission import Admission, TxOutcome
from carechain.node.blob_service import BlobService
from carechain.node.catchup import CatchUp
from carechain.node.peer_messages import PeerMessages
from carechain.node.pools import Mempool, PartialPool
from carechain.node.proposals import MeasuredApplication, PeerIntake, ProposalBudget
from carechain.node.signing import SigningGuard
from carechain.node.sync import BlockSync, range_provider
from carechain.node.tally import CommitTally
from carechain.node.verifier import SignatureWorkers
from carechain.node.wallet import builders
from carechain.p2p.heartbeat import HeartbeatService
from carechain.p2p.network import (
    GOSSIP_TOPICS,
    Network,
    Topic,
    Verdict,
)
from carechain.storage.blobs.backends import open_blob_store
from carechain.storage.chain import ChainStore
from carechain.storage.wal import ConsensusWal

log = logging.getLogger("carechain.node")

FULL_NODE_POLL_S: Final = 2.0
# Consensus counts as stalled after a round change, or with work pending this long after the
# last commit: sync then starts for any lead, and transactions are not re-sent.
SYNC_STALL_MS: Final = 3000


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def engine_config(config: NodeConfig, genesis: Genesis) -> EngineConfig:
    timeouts = config.consensus
    return EngineConfig(
        chain_id=genesis.chain_id,
        heartbeat_interval_ms=genesis.params.heartbeat_interval_ms,
        clock_drift_ms_max=genesis.params.clock_drift_ms_max,
        timeout_propose_ms=timeouts.timeout_propose_ms,
        timeout_prevote_ms=timeouts.timeout_prevote_ms,
        timeout_precommit_ms=timeouts.timeout_precommit_ms,
        timeout_delta_ms=timeouts.timeout_delta_ms,
        timeout_commit_ms=timeouts.timeout_commit_ms,
        timeout_ms_max=timeouts.timeout_ms_max,
    )


class Node:
    def __init__(
        self,
        home: Path,
        config: NodeConfig,
        genesis: Genesis,
        node_key: PrivateKey,
        validator_key: PrivateKey | None,
        network: Network,
        clock_ms: Callable[[], int] = wall_clock_ms,
        *,
        warm_workers: bool = False,
    ) -> None:
        """`warm_workers`: start the signature worker processes as the node starts, not on
        the first large batch (the daemon does; nodes in tests keep them lazy)."""
        self.warm_workers = warm_workers
        self.home = home
        self.config = config
        self.genesis = genesis
        self.node_id = peer_id(node_key.public_key)
        self.clock_ms = clock_ms
        self.network = network
        self._open_stores()
        self._build_consensus(validator_key if config.validator else None)
        self.verifier = SignatureWorkers(self.signatures, workers=os.cpu_count() or 1)
        self.lock = asyncio.Lock()
        syncer = BlockSync(
            network,
            self.store,
            self.app,
            on_commit=self._after_sync_commit,
            verifier=self.verifier,
            item_bytes_max=self.limits.sync_item_bytes,
            lock=self.lock,
            after_batch=self._after_sync_batch,
        )
        self.catchup = CatchUp(
            self.store,
            network,
            syncer,
            self.limits,
            clock_ms,
            registered=lambda: self.registered,
            stalled=self.consensus_stalled,
            persisted=self._after_sync_batch,
        )
        self.peer_messages = PeerMessages(self)
        self.admission = Admission(self)
        self.blob_service = BlobService(self.store, genesis.chain_id, self.blobs, clock_ms)
        self._init_counters()
        self.heartbeats = self._heartbeat_service(node_key)
        self.registered: set[str] = set()  # the validators' node ids, but this node's

    def _open_stores(self) -> None:
        """The chain, the WAL, the blob store, the pools (the partials kept in the chain's
        LevelDB)."""
        home, config = self.home, self.config
        self.limits = EncodedLimits.of(self.genesis.params)
        self.store = ChainStore.open(
            home / "data" / "chain",
            self.genesis,
            verify_state=config.state.verify_on_start,
            heights_kept=config.state.proof_heights_kept,
        )
        self.wal = ConsensusWal(home / "data" / "wal", self.limits.wal_record_bytes)
        self.blobs = open_blob_store(config.blobs, home)
        self.mempool = Mempool(config.mempool.txs_max, config.mempool.bytes_max)
        self.partials = PartialPool(self.store.kv, config.mempool.partials_max)

    def _build_consensus(self, key: PrivateKey | None) -> None:
        """The ledger application (proposals bounded by the measured budget) and the engine,
        signing with `key` (None: a node that follows the chain without voting)."""
        self.signatures = SignatureCache()  # each signature verified once per node
        timing = engine_config(self.config, self.genesis)
        self.proposal_budget = ProposalBudget(timing)
        self.peer_intake = PeerIntake(self.mempool, self.proposal_budget, self.clock_ms)
        self.app = MeasuredApplication(
            self.genesis,
            self.store,
            self.mempool.ordered,
            self.proposal_budget,
            check_signers=self.signatures,
        )
        self.engine = Engine(timing, self.app, key)
        self.signing = SigningGuard(
            self.engine,
            self.wal,
            self.home / "data",
            self.clock_ms(),
            self.genesis.params.clock_drift_ms_max,
        )
        self.signing.check_history(key is not None, self.store.height)

    def _init_counters(self) -> None:
        """What the node counts and remembers as it runs (most of it shown in the status)."""
        clock_ms = self.clock_ms
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.misbehaviour: dict[str, int] = {}
        self.last_commit_ms = clock_ms()
        self.equivocations_seen = 0  # conflicting vote pairs this node received (each reported)
        self.tally = CommitTally(self.store)  # for /metrics: block intervals, late and missed votes
        self._wake_at: int | None = None
        self._woken = asyncio.Event()
        self.stopped_height = 0  # the height at a clean stop (the stores are closed then)

    def _heartbeat_service(self, node_key: PrivateKey) -> HeartbeatService | None:
        """UDP heartbeats to the peers the config lists (None if it lists none)."""
        p2p = self.config.p2p
        if not p2p.heartbeat_peers:
            return None
        return HeartbeatService(
            node_key,
            self.genesis.chain_id,
            p2p.heartbeat_listen,
            list(p2p.heartbeat_peers),
            status=self._heartbeat_status,
            registered=lambda: set(self.registered),
            on_ahead=self.catchup.peer_ahead,
            interval_ms=p2p.heartbeat_interval_ms,
        )

    def _heartbeat_status(self) -> tuple[int, int, tuple[str, ...]]:
        state = self.engine.state
        listen = tuple(getattr(self.network, "listen_addrs", ())[:4])
        return self.store.height, state.round if state else 0, listen

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        try:
            await self.network.start()
            self.network.serve_range(range_provider(self.store))
            self.network.serve_blobs(self.blob_service.serve)
            # a node that does not vote (a full node, or a validator key the set does not
            # hold yet) takes blocks from gossip; one that votes gets them from consensus
            topics = GOSSIP_TOPICS if self.follows() else frozenset({Topic.TX, Topic.PARTIAL})
            self.network.serve_gossip(self.on_gossip, topics)
            self._update_permissions()
            async with asyncio.TaskGroup() as tasks:
                self.catchup.tasks = tasks
                await self.handle(WalReplayed(tuple(self.wal.records(self.store.height + 1))))
                await self.handle(Start(self.clock_ms()))
                messages = self.peer_messages
                tasks.create_task(messages.consensus_loop(), name="consensus-inbox")
                tasks.create_task(messages.transactions_loop(), name="transactions-inbox")
                tasks.create_task(self._timer_loop(), name="timers")
                tasks.create_task(self._housekeeping_loop(), name="housekeeping")
                if self.warm_workers:
                    tasks.create_task(self.verifier.warm_up(), name="warm-up")
                if self.heartbeats is not None:
                    tasks.create_task(self.heartbeats.run(), name="heartbeats")
                if ready is not None:
                    ready()
                await stop.wait()
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            self.catchup.tasks = None
            self.stopped_height = self.store.height
            self.publish({"event": "stopping"})  # ends event streams, so the API stops at once
            with contextlib.suppress(Exception):
                await self.network.stop()
            self.wal.close()
            self.verifier.close()
            await self.blobs.close()
            self.store.close()

    # -- engine driving -------------------------------------------------------------------------
    async def handle(self, event: Event) -> None:
        async with self.lock:
            await self.handle_locked(event)

    async def handle_locked(self, event: Event) -> None:
        if log.isEnabledFor(logging.DEBUG):
            await self._handle_traced(event)
        else:
            await self._perform(self.engine.handle(event))

    async def _handle_traced(self, event: Event) -> None:
        """`handle` with a debug line per event: what came in, where the engine was and went
        (height, round, step), what it asked for and how long that took: the first thing to
        read when a network changes rounds."""
        state = self.engine.state
        before = (state.height, state.round, state.step.name) if state else None
        started = time.monotonic()
        actions = self.engine.handle(event)
        decided = time.monotonic()
        await self._perform(actions)
        state = self.engine.state
        after = (state.height, state.round, state.step.name) if state else None
        what = type(event).__name__
        if isinstance(event, Received):
            message = event.message
            kind = getattr(message, "vote_type", None)
            what += f" {type(message).__name__}{f' {kind.name}' if kind else ''}"
            what += f" h{getattr(message, 'height', '-')} r{getattr(message, 'round', '-')}"
            what += f" from {event.sender}"
        done = [type(a).__name__ for a in actions if not isinstance(a, WakeAt)]
        log.debug(
            "engine: %s at %s -> %s in %.0f + %.0f ms: %s",
            what,
            before,
            after,
            (decided - started) * 1000,
            (time.monotonic() - decided) * 1000,
            done,
        )

    async def _perform(self, actions: list[Action]) -> None:
        unsynced = False
        unguarded = False  # a WAL write failed: nothing after it may leave this node
        for action in actions:
            if isinstance(action, WriteWal):
                written = self.signing.write(action)
                unsynced = unsynced or written
                unguarded = unguarded or not written
                continue
            if unsynced:
                self.wal.sync()  # durable before anything it guards leaves this node
                unsynced = False
            if unguarded and isinstance(action, Broadcast | Send):
                continue
            await self._perform_one(action)
        if unsynced:
            self.wal.sync()

    async def _perform_one(self, action: Action) -> None:
        if isinstance(action, Broadcast | Send) and self.signing.unlogged_message(action.message):
            return
        if isinstance(action, Broadcast):
            await self.network.broadcast(Topic.CONSENSUS, encode_message(action.message))
        elif isinstance(action, Send):
            await self.network.send(action.peer, Topic.CONSENSUS, encode_message(action.message))
        elif isinstance(action, WakeAt):
            self._wake_at = action.at_ms
            self._woken.set()
        elif isinstance(action, CommitBlock):
            self._commit(action.block, action.certificate)
            if self.admission.gossips:
                # every validator hands the block to the non-validator nodes it is linked
                # to; the copies share one message id (the block hash) and only the first
                # is read, so a full node linked to any one validator gets every block
                commit = Commit(action.block, action.certificate)
                payload = action.block.block_hash + commit.encode()
                await self.network.publish(Topic.BLOCK, payload)
            follow = self.engine.handle(BlockPersisted(action.block.header.height, self.clock_ms()))
            await self._perform(follow)
        elif isinstance(action, RequestSync):
            self.catchup.peer_ahead(action.peer, action.peer_height)
        elif isinstance(action, ReportEvidence):
            self._submit_evidence(action)
        elif isinstance(action, RecordLateVote):
            self.tally.late(action.certificate, action.late)
        elif isinstance(action, PeerMisbehaved):
            self.misbehaviour[action.peer] = self.misbehaviour.get(action.peer, 0) + 1
            log.warning("peer %s misbehaved: %s", action.peer, action.reason)

    def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        self.store.commit(block, certificate, self.app.executed(block))
        self._after_commit(block, certificate)

    def _after_sync_commit(self, commit: Commit) -> None:
        self._after_commit(commit.block, commit.certificate)

    async def _after_sync_batch(self, height: int) -> None:
        """Blocks up to `height` were synced (under the lock): the engine continues after."""
        await self._perform(self.engine.handle(BlockPersisted(height, self.clock_ms())))

    def _after_commit(self, block: Block, certificate: CommitCertificate) -> None:
        height = block.header.height
        previous_ms, self.last_commit_ms = self.last_commit_ms, self.clock_ms()
        self.tally.committed(block, certificate)
        self.signing.committed(block)
        self.mempool.drop_rejected(self.app.rejected, self.store)
        self.app.rejected = []
        self.mempool.after_commit(block, self.store, self.clock_ms())
        self.partials.remove_all(tx.id for tx in block.txs)
        dead = self.partials.drop_dead(block, self.store, self.app.chain, self.signatures)
        self.mempool.drop_rejected(dead, self.store)  # their reason, for `tx show`
        for tx, reason in dead:
            self.publish({"event": "partial_dropped", "tx": tx.id.hex(), "reason": reason.code})
        self.signatures.forget(tx.witness_hash for tx in block.txs)  # never checked again
        self.peer_intake.committed(len(block.txs))
        self._update_permissions()
        self.publish(
            {
                "event": "block",
                "height": height,
                "hash": block.block_hash.hex(),
                # a count, not the ids: an event line stays short at any block size (a client
                # that wants the ids asks GET /v1/blocks/{height}/txs)
                "tx_count": len(block.txs),
                "time_ms": block.header.time_ms,
            }
        )
        log.info(
            "committed height %d with %d transactions in %.0f ms since the last",
            height,
            len(block.txs),
            self.last_commit_ms - previous_ms,
        )

    def _update_permissions(self) -> None:
        height = self.store.height
        registered = {
            peer_id(v.node_key)
            for h in (height + 1, height + 2)
            for v in validator_set_at(self.store, h).validators
        }
        self.registered = registered - {self.node_id}
        admitted = self.registered | set(self.config.p2p.observers)
        self.network.allow(admitted, direct=self.registered)

    # -- loops ----------------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            now = self.clock_ms()
            if self._wake_at is not None and now >= self._wake_at:
                self._wake_at = None
                await self.handle(Tick(now))
                continue
            delay = 1.0 if self._wake_at is None else (self._wake_at - now) / 1000
            self._woken.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that coincides with the event, and the stop would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, min(delay, 1.0))):
                    await self._woken.wait()

    async def consensus_first(self) -> None:
        """Yield to the consensus messages that arrived, and wait while they are handled:
        called between chunks of transaction admission (API and peers alike)."""
        await asyncio.sleep(0)
        await self.network.inbox.consensus_idle()

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(FULL_NODE_POLL_S)
            self.partials.expire(self.clock_ms(), self.app.chain)
            await self.peer_messages.send_pending_to_new_links()
            await self.peer_messages.resend_pending()
            if self.follows() and self.network.peers():
                # a node that follows and missed a gossiped block (or just started) catches up
                self.catchup.start(self.network.peers()[0])

    def follows(self) -> bool:
        """Whether this node follows the chain without voting: a full node, or a validator
        whose key the next height's validator set does not hold (until governance adds it;
        it keeps taking blocks from gossip after that, until it restarts)."""
        key = self.engine.key
        if key is None:
            return True
        return key.public_key not in validator_set_at(self.store, self.store.height + 1).by_key

    def consensus_stalled(self) -> bool:
        """Round 0 of the current height failed (a round change), or a height with work
        pending has taken longer than SYNC_STALL_MS."""
        state = self.engine.state
        if state is not None and state.round > 0:
            return True
        waited = self.clock_ms() - self.last_commit_ms
        return bool(self.mempool) and waited >= SYNC_STALL_MS

    # -- gossip ---------------------------------------------------------------------------------
    async def on_gossip(self, peer: str, topic: Topic, payload: bytes) -> Verdict:
        """Validate and take in one gossip message; only what is accepted is passed on."""
        if topic is Topic.BLOCK:
            return await self.catchup.on_gossip_block(peer, payload, self.lock)
        return await self.peer_messages.on_gossip_tx(payload)

    # -- transactions ---------------------------------------------------------------------------
    def next_block_context(self) -> BlockContext:
        return BlockContext(self.app.chain, self.store.height + 1, self.clock_ms())

    async def submit(
        self, tx: Tx, *, gossip: bool = True, notify: bool = True, relayed: bool = False
    ) -> TxOutcome:
        """Admit a transaction (complete or partial): see `Admission.submit`."""
        return await self.admission.submit(tx, gossip=gossip, notify=notify, relayed=relayed)

    async def transactions_available(self) -> None:
        await self.handle(TxsAvailable(self.clock_ms()))

    def _submit_evidence(self, evidence: ReportEvidence) -> None:
        self.equivocations_seen += 1
        tx = builders.report_equivocation(
            self.genesis.chain_id, self.clock_ms() + 3_600_000, evidence.first, evidence.second
        )
        with contextlib.suppress(CarechainError):
            self.mempool.add(tx, self.clock_ms())

    # -- events ---------------------------------------------------------------------------------
    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)


class _Stopping(Exception):
    """Raised inside the task group to cancel every task on a clean stop."""


__all__ = ["Node", "TxOutcome", "TxRejected", "engine_config", "wall_clock_ms"]
