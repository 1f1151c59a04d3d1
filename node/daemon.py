"""The node: the asyncio shell around the pure engine and ledger.

It performs the engine's actions in order (a WAL record is fsynced before any message it
guards leaves), feeds the engine messages, ticks and transactions under one lock so batches
never interleave, commits decided blocks with their side effects (WAL rotation, pools, event
stream), syncs from peers when behind, and keeps the network's permission set equal to the
validators' node ids. Every task runs in one TaskGroup; `run` returns after a clean stop.

Under overload consensus goes first. Peers' consensus messages and their transactions arrive
in separate inbox lanes (p2p.network.Inbox) read by separate tasks; transactions are taken in
batches (signatures checked in the worker processes, one engine event per batch); admission,
the peers' batches and the API's alike, pauses between chunks of `ADMIT_CHUNK` while any
consensus message waits or is being handled, so a vote never waits behind a batch; and the
peers' batch task takes nothing while the mempool is full or already holds a few proposals'
worth (`PeerIntake`): their credit then runs out and their sends back up (admitting more
would only spend the CPU the blocks that commit need). Sync talks to the network without the
lock and starts only when a peer is `SYNC_LEAD` heights ahead, or ahead at all while
consensus is stalled; transactions are not re-sent while it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
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
from carechain.consensus.ledger.apply import SignatureCache, TxStatus
from carechain.consensus.ledger.context import BlockContext
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.poa.engine import Engine, EngineConfig
from carechain.consensus.poa.events import (
    Action,
    BlockPersisted,
    Broadcast,
    CommitBlock,
    Event,
    PeerMisbehaved,
    Received,
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
    Proposal,
    WalKind,
    commit_height,
    decode_message,
    encode_message,
    proposal_slot,
)
from carechain.consensus.poa.votes import proposer_of
from carechain.consensus.types import Block, CommitCertificate, Tx, Vote
from carechain.node.blob_service import BlobService
from carechain.node.pools import Mempool, PartialPool, PoolFull, admit
from carechain.node.proposals import MeasuredApplication, PeerIntake, ProposalBudget
from carechain.node.sync import BlockSync, range_provider
from carechain.node.verifier import SignatureWorkers
from carechain.node.wallet import builders
from carechain.p2p.heartbeat import HeartbeatService
from carechain.p2p.network import (
    BLOCK_ID_BYTES,
    GOSSIP_TOPICS,
    Inbound,
    Network,
    PeerError,
    Topic,
    Verdict,
)
from carechain.storage.blobs.backends import open_blob_store
from carechain.storage.chain import ChainStore
from carechain.storage.wal import ConsensusWal

log = logging.getLogger("carechain.node")


# Rejections no honest peer forwards: they do not depend on the chain's state or the clock.
PROVABLY_INVALID: Final = frozenset(
    {"wrong_chain", "non_canonical_signatures", "bad_signature", "unknown_kind", "bad_body"}
)
FULL_NODE_POLL_S: Final = 2.0
# A pending transaction is sent to the validators again after waiting this long (then at most
# once per this long), up to RESEND_MAX per poll: every validator already got it on arrival,
# so this is for one that missed it (restarted, cut off); re-sending every poll cost a
# loaded 4-validator network a sixth of its throughput.
RESEND_AFTER_MS: Final = 10_000
RESEND_MAX: Final = 500
# An API batch with at least this many transactions new to the signature cache has its
# signatures verified in worker processes (node/verifier.py) before admission.
API_BATCH_WORKERS_MIN: Final = 32
CONSENSUS_BATCH: Final = 64  # consensus messages taken from the inbox at once
PEER_TX_BATCH: Final = 512  # peers' transactions taken in (and verified) at once
ADMIT_CHUNK: Final = 32  # transactions admitted between two yields to consensus
# Sync starts when a peer has committed this many heights more than this node (one height
# behind is routine: a commit reaches validators at slightly different times, and consensus
# itself catches up a validator one height behind), or is ahead at all while consensus here
# is stalled: a round change, or work pending SYNC_STALL_MS after the last commit.
SYNC_LEAD: Final = 2
SYNC_STALL_MS: Final = 3000
PEER_HEIGHT_TTL_MS: Final = 30_000  # how long a validator's shown height steers sync
SYNC_UNKNOWN_HEIGHTS: Final = 10_000  # how far a sync goes when no validator showed a height


SIGNING_HELD: Final = 2**62  # a height no chain reaches


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


@dataclasses.dataclass(frozen=True)
class TxOutcome:
    tx_id: bytes
    status: str  # "pending" (mempool), "partial", or "committed"
    new: bool


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
        # Gossip reaches non-validator nodes: a validator publishes only if its config admits
        # some (`p2p.observers`); a non-validator node always takes part.
        self._gossips = not config.validator or bool(config.p2p.observers)
        self.verifier = SignatureWorkers(self.signatures, workers=os.cpu_count() or 1)
        self._lock = asyncio.Lock()
        self.syncer = BlockSync(
            network,
            self.store,
            self.app,
            on_commit=self._after_sync_commit,
            verifier=self.verifier,
            item_bytes_max=self.limits.sync_item_bytes,
            lock=self._lock,
            after_batch=self._after_sync_batch,
        )
        self.blob_service = BlobService(self.store, genesis.chain_id, self.blobs, clock_ms)
        self._init_counters()
        self.heartbeats = self._heartbeat_service(node_key)
        self._registered: set[str] = set()

    def _open_stores(self) -> None:
        """The chain, the WAL, the blob store, the pools (the partials kept in the chain's
        LevelDB)."""
        home, config = self.home, self.config
        self.limits = EncodedLimits.of(self.genesis.params)
        self.store = ChainStore.open(home / "data" / "chain", self.genesis)
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
        self._check_signing_history(key is not None)

    def _init_counters(self) -> None:
        """What the node counts and remembers as it runs (most of it shown in the status)."""
        clock_ms = self.clock_ms
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.misbehaviour: dict[str, int] = {}
        self.syncing = False
        self.syncs = 0  # syncs started
        # the highest height each registered validator showed committed, and when
        self.peer_heights: dict[str, int] = {}
        self._peer_height_ms: dict[str, int] = {}
        self.last_commit_ms = clock_ms()
        self.gossip_blocks = 0  # blocks taken in from gossip (a full node's usual way)
        self.pool_full_drops = 0  # transactions from peers dropped because the mempool was full
        self.stale_commits = 0  # commit messages for heights already committed, dropped unread
        self.known_proposals = 0  # copies of proposals held already, dropped unread
        self.equivocations_seen = 0  # conflicting vote pairs this node received (each reported)
        self.wal_failures = 0  # WAL records that could not be written (their messages not sent)
        self._unlogged: set[tuple[WalKind, int, int]] = set()  # their (kind, height, round)
        self.consensus_handle_s_max = 0.0  # the longest one consensus message took to handle
        self._linked: frozenset[str] = frozenset()  # the peers linked at the last housekeeping
        self.started_ms = clock_ms()
        self._wake_at: int | None = None
        self._woken = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None

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
            registered=lambda: set(self._registered),
            on_ahead=self._peer_ahead,
            interval_ms=p2p.heartbeat_interval_ms,
        )

    def _check_signing_history(self, signs: bool) -> None:
        """A validator that finds neither a block nor the WAL's NEVER_SIGNED marker lost its
        data folder, and with it the record of what it signed: signing at a height it signed
        before the loss could make it equivocate. It follows the chain without signing until
        it holds a certified block proposed after it started (time after our start + the
        drift bound); every height it could have signed at is then committed. A data folder
        lost before the network's first block is the one case this cannot see (the WAL's
        marker is gone but so is every block)."""
        if (
            signs
            and self.store.height == 0
            and not self.wal.never_signed
            and not self.wal.records()
        ):
            self.engine.sign_from_height = SIGNING_HELD
            log.warning(
                "no blocks and no signing history in %s: this validator signs nothing until "
                "the chain has committed a block proposed after it started",
                self.home / "data",
            )
        elif self.store.height > 0:
            self.wal.forget_never_signed()

    @property
    def signing_held(self) -> bool:
        """Whether this validator withholds its signature (see "signing history" above)."""
        return self.engine.sign_from_height == SIGNING_HELD

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
            topics = (
                frozenset({Topic.TX, Topic.PARTIAL}) if self.config.validator else GOSSIP_TOPICS
            )
            self.network.serve_gossip(self._on_gossip, topics)
            self._update_permissions()
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._handle(WalReplayed(tuple(self.wal.records(self.store.height + 1))))
                await self._handle(Start(self.clock_ms()))
                tasks.create_task(self._consensus_loop(), name="consensus-inbox")
                tasks.create_task(self._transactions_loop(), name="transactions-inbox")
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
            self._tasks = None
            self.publish({"event": "stopping"})  # ends event streams, so the API stops at once
            with contextlib.suppress(Exception):
                await self.network.stop()
            self.wal.close()
            self.verifier.close()
            await self.blobs.close()
            self.store.close()

    # -- engine driving -------------------------------------------------------------------------
    async def _handle(self, event: Event) -> None:
        async with self._lock:
            await self._handle_locked(event)

    async def _handle_locked(self, event: Event) -> None:
        if log.isEnabledFor(logging.DEBUG):
            await self._handle_traced(event)
        else:
            await self._perform(self.engine.handle(event))

    async def _handle_traced(self, event: Event) -> None:
        """`_handle` with a debug line per event: what came in, where the engine was and went
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
                written = self._write_wal(action)
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

    def _write_wal(self, action: WriteWal) -> bool:
        """Append a WAL record; False (logged and counted, never fatal) if it cannot be.

        What the record guards must then never leave this node, now or when the engine
        re-sends its own messages a second later: its (kind, height, round) is remembered
        and every later send of a proposal or vote of that slot is dropped. And the engine
        holds what it signed in memory only, so after a restart it could sign a different
        proposal or vote against a lock it lost: this validator signs nothing more until it
        is restarted (the others go on without it)."""
        try:
            self.wal.append(action.record)
        except CarechainError as exc:
            record = action.record
            self.wal_failures += 1
            self._unlogged.add((record.kind, record.height, record.round))
            self.engine.sign_from_height = SIGNING_HELD
            log.error(
                "a WAL record could not be written (%s): what it guards is not sent, and "
                "this validator signs nothing more until it is restarted",
                exc,
            )
            return False
        return True

    def _unlogged_message(self, message: object) -> bool:
        """A proposal or vote of a slot whose WAL record could not be written."""
        if isinstance(message, Proposal):
            return (WalKind.PROPOSAL, message.height, message.round) in self._unlogged
        if isinstance(message, Vote):
            return (WalKind.VOTE, message.height, message.round) in self._unlogged
        return False

    async def _perform_one(self, action: Action) -> None:
        if isinstance(action, Broadcast | Send) and self._unlogged_message(action.message):
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
            if self._gossips:
                # every validator hands the block to the non-validator nodes it is linked
                # to; the copies share one message id (the block hash) and only the first
                # is read, so a full node linked to any one validator gets every block
                commit = Commit(action.block, action.certificate)
                payload = action.block.block_hash + commit.encode()
                await self.network.publish(Topic.BLOCK, payload)
            follow = self.engine.handle(BlockPersisted(action.block.header.height, self.clock_ms()))
            await self._perform(follow)
        elif isinstance(action, RequestSync):
            self._peer_ahead(action.peer, action.peer_height)
        elif isinstance(action, ReportEvidence):
            self._submit_evidence(action)
        elif isinstance(action, PeerMisbehaved):
            self.misbehaviour[action.peer] = self.misbehaviour.get(action.peer, 0) + 1
            log.warning("peer %s misbehaved: %s", action.peer, action.reason)

    def _commit(self, block: Block, certificate: CommitCertificate) -> None:
        self.store.commit(block, certificate, self.app.executed(block))
        self._after_commit(block)

    def _after_sync_commit(self, commit: Commit) -> None:
        self._after_commit(commit.block)

    async def _after_sync_batch(self, height: int) -> None:
        """Blocks up to `height` were synced (under the lock): the engine continues after."""
        await self._perform(self.engine.handle(BlockPersisted(height, self.clock_ms())))

    def _after_commit(self, block: Block) -> None:
        height = block.header.height
        previous_ms, self.last_commit_ms = self.last_commit_ms, self.clock_ms()
        self.wal.rotate(height + 1)
        self.wal.forget_never_signed()
        if (
            self.signing_held
            and not self.wal_failures
            and block.header.time_ms > (self.started_ms + self.genesis.params.clock_drift_ms_max)
        ):
            self.engine.sign_from_height = height + 1
            log.warning("height %d was proposed after this node started: signing again", height)
        self.mempool.drop_rejected(self.app.rejected, self.store)
        self.app.rejected = []
        self.mempool.after_commit(block, self.store, self.clock_ms())
        self.partials.remove_all(tx.id for tx in block.txs)
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
        self._registered = registered - {self.node_id}
        admitted = self._registered | set(self.config.p2p.observers)
        self.network.allow(admitted, direct=self._registered)

    # -- loops ----------------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            now = self.clock_ms()
            if self._wake_at is not None and now >= self._wake_at:
                self._wake_at = None
                await self._handle(Tick(now))
                continue
            delay = 1.0 if self._wake_at is None else (self._wake_at - now) / 1000
            self._woken.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that coincides with the event, and the stop would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.001, min(delay, 1.0))):
                    await self._woken.wait()

    def _blame(self, peer: str, problem: CarechainError) -> None:
        self.misbehaviour[peer] = self.misbehaviour.get(peer, 0) + 1
        log.info("dropped a message from %s: %s", peer, problem)

    async def _consensus_loop(self) -> None:
        inbox = self.network.inbox
        while True:
            for message in await inbox.next_consensus(CONSENSUS_BATCH):
                await self._handle_consensus(message)
            inbox.consensus_done()

    async def _handle_consensus(self, message: Inbound) -> None:
        started = time.monotonic()
        try:
            await self._on_consensus(message)
        except CarechainError as exc:
            self._blame(message.peer, exc)
        took = time.monotonic() - started
        if took > self.consensus_handle_s_max:
            self.consensus_handle_s_max = took
            if took > 1.0:
                log.warning("a consensus message took %.2f s to handle", took)

    async def _on_consensus(self, message: Inbound) -> None:
        height = commit_height(message.payload)
        if height is not None and height <= self.store.height:
            self.stale_commits += 1  # the engine would ignore it: not worth decoding
            return
        slot = proposal_slot(message.payload)
        if slot is not None and self._holds_proposal_for(*slot):
            self.known_proposals += 1  # a copy of one held, or of a past height: ignored
            return
        decoded = decode_message(message.payload, max_bytes=self.limits.message_bytes)
        event = Received(message.peer, decoded, self.clock_ms())
        if isinstance(decoded, Proposal) and self._checked_ahead(decoded):
            # signatures this node has not seen (transactions it has not admitted yet) are
            # checked in the workers, not one by one on the event loop while validating; the
            # lock is held throughout, so no timeout of this round is handled meanwhile
            async with self._lock:
                await self.verifier.verify(decoded.block.txs, batch_min=API_BATCH_WORKERS_MIN)
                await self._handle_locked(event)
            return
        await self._handle(event)

    def _checked_ahead(self, proposal: Proposal) -> bool:
        """Whether a proposal's transactions' signatures are worth checking in the workers
        before the engine sees it: only one the engine would take (this height, this round
        or the next, one it does not hold yet, from that round's proposer and signed by it).
        Anything else goes to the engine as it is, which refuses it for one signature check,
        so no peer can make this node spend its workers on proposals it will not use."""
        state = self.engine.state
        if state is None or proposal.height != state.height or proposal.round in state.proposals:
            return False
        if not state.round <= proposal.round <= state.round + 1:
            return False
        proposer = proposer_of(state.validators, state.height, proposal.round)
        return proposal.proposer == proposer and proposal.signature_valid()

    async def consensus_first(self) -> None:
        """Yield to the consensus messages that arrived, and wait while they are handled:
        called between chunks of transaction admission (API and peers alike)."""
        await asyncio.sleep(0)
        await self.network.inbox.consensus_idle()

    def _holds_proposal_for(self, height: int, round: int) -> bool:
        """Whether the engine would ignore a proposal for (height, round) unread: it holds
        one for that round already, or the height is past."""
        state = self.engine.state
        if state is None:
            return False
        return height < state.height or (height == state.height and round in state.proposals)

    async def _transactions_loop(self) -> None:
        """Peers' transactions, a batch at a time. While the mempool is full nothing is
        taken, nor while it holds as much as commits soon (`PeerIntake`): the peers'
        credit runs out and the network stops reading them."""
        inbox = self.network.inbox
        while True:
            await inbox.wait_txs()
            room = self.peer_intake.room()
            if room == 0:
                await self.peer_intake.wait_for_room()
                continue
            batch = inbox.take_txs(min(PEER_TX_BATCH, room))
            try:
                await self._admit_from_peers(batch)
            finally:
                inbox.release(batch)

    async def _admit_from_peers(self, messages: list[Inbound]) -> None:
        """Admit peers' transactions and partials as an API batch is admitted: signatures
        verified together in the workers, each transaction checked, one engine event."""
        decoded: list[tuple[Inbound, Tx]] = []
        for message in messages:
            try:
                tx = Tx.decode(message.payload, max_bytes=self.limits.tx_bytes)
            except CarechainError as exc:
                self._blame(message.peer, exc)
            else:
                decoded.append((message, tx))
        # what is pending or committed already is dropped unchecked by `submit`: a node that
        # lags behind the peer's other validators gets mostly such (they committed it)
        fresh = [
            tx
            for _, tx in decoded
            if tx.id not in self.mempool.txs and self.store.tx_location(tx.id) is None
        ]
        await self.verifier.verify(fresh, batch_min=API_BATCH_WORKERS_MIN)
        new = False
        for index, (message, tx) in enumerate(decoded):
            if index % ADMIT_CHUNK == 0:
                await self.consensus_first()
            # a complete transaction from a peer is not executed here (see `admit`): the
            # proposal executes it, as for one the API took in at another validator
            relayed = message.topic is Topic.TX
            try:
                outcome = await self.submit(tx, gossip=False, notify=False, relayed=relayed)
            except PoolFull:
                self.pool_full_drops += 1  # not the peer's fault; the re-send brings it back
            except CarechainError as exc:
                self._blame(message.peer, exc)
            else:
                new = new or outcome.new
        if new:
            await self.transactions_available()

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(FULL_NODE_POLL_S)
            self.partials.expire(self.clock_ms(), self.app.chain)
            await self._send_pending_to_new_links()
            # peers that missed a transaction get it again once it has waited a while, but
            # not while consensus is stalled: that load would land on a struggling network
            if not self.consensus_stalled():
                now = self.clock_ms()
                for tx in self.mempool.to_resend(now, RESEND_AFTER_MS, RESEND_MAX):
                    await self.network.broadcast(Topic.TX, tx.encode())
            if not self.config.validator and self.network.peers():
                # a full node that missed a gossiped block (or just started) catches up here
                self._start_sync(self.network.peers()[0])

    def consensus_stalled(self) -> bool:
        """Round 0 of the current height failed (a round change), or a height with work
        pending has taken longer than SYNC_STALL_MS."""
        state = self.engine.state
        if state is not None and state.round > 0:
            return True
        waited = self.clock_ms() - self.last_commit_ms
        return bool(self.mempool) and waited >= SYNC_STALL_MS

    async def _send_pending_to_new_links(self) -> None:
        """A validator linked since the last look (it restarted, or this node did, or a cut
        healed) is sent the oldest pending transactions at once: they may have arrived while it
        was away, and a transaction this node admitted with no validator linked went nowhere.
        Without this they would wait for the re-send after RESEND_AFTER_MS."""
        linked = frozenset(self.network.peers())
        new = sorted((linked - self._linked) & self._registered)
        self._linked = linked
        if not new or not self.mempool.txs:
            return
        pending = [tx.encode() for tx in itertools.islice(self.mempool.txs.values(), RESEND_MAX)]
        for peer in new:
            for payload in pending:
                await self.network.send(peer, Topic.TX, payload)

    # -- gossip ---------------------------------------------------------------------------------
    async def _on_gossip(self, peer: str, topic: Topic, payload: bytes) -> Verdict:
        """Validate and take in one gossip message; only what is accepted is passed on."""
        if topic is Topic.BLOCK:
            return await self._on_gossip_block(peer, payload)
        try:
            tx = Tx.decode(payload)
        except CarechainError:
            return Verdict.REJECT
        try:
            outcome = await self.submit(tx, gossip=False)
        except TxRejected as exc:
            return Verdict.REJECT if exc.code in PROVABLY_INVALID else Verdict.IGNORE
        except PoolFull:
            self.pool_full_drops += 1
            return Verdict.IGNORE
        return Verdict.IGNORE if outcome.status == "committed" else Verdict.ACCEPT

    async def _on_gossip_block(self, peer: str, payload: bytes) -> Verdict:
        if self.syncing:
            return Verdict.IGNORE  # the sync brings it
        commit = _gossiped_commit(payload, self.limits)
        if commit is None:
            return Verdict.REJECT
        height = commit.block.header.height
        async with self._lock:
            ours = self.store.height
            if height <= ours:
                return Verdict.IGNORE
            if height > ours + 1:
                self._peer_ahead(peer, height)  # a gap: fetch the range, this block with it
                return Verdict.IGNORE
            try:
                self.syncer.apply(commit, peer)
            except PeerError as exc:
                log.warning("gossiped block %d from %s refused: %s", height, peer, exc)
                return Verdict.REJECT
            self.gossip_blocks += 1
            await self._perform(self.engine.handle(BlockPersisted(height, self.clock_ms())))
        return Verdict.ACCEPT

    # -- sync -----------------------------------------------------------------------------------
    def _peer_ahead(self, peer: str, height: int) -> None:
        """`peer` showed it has committed `height` (a message at a later height, a commit,
        a heartbeat, a gossiped block past a gap): sync if that is far enough ahead, or
        ahead at all while consensus here is stalled. Only a registered validator's claim is
        kept to steer later syncs (it ranks the peers asked and sets how far to go), and for
        PEER_HEIGHT_TTL_MS: an observer's message is unchecked when it arrives, and one that
        claimed a height far ahead would otherwise be asked first ever after."""
        ours = self.store.height
        if height <= ours:
            return
        if peer in self._registered:
            now = self.clock_ms()
            fresh = now - self._peer_height_ms.get(peer, now) < PEER_HEIGHT_TTL_MS
            known = self.peer_heights.get(peer, 0) if fresh else 0
            self.peer_heights[peer] = max(known, height)
            self._peer_height_ms[peer] = now
        if height - ours >= SYNC_LEAD or self.consensus_stalled():
            self._start_sync(peer)

    def _start_sync(self, peer: str) -> None:
        if self.syncing or self._tasks is None:
            return
        self.syncing = True
        self.syncs += 1
        self._tasks.create_task(self._sync_from(peer), name="sync")

    def _sync_sources(self, first: str) -> tuple[list[str], int]:
        """Whom to ask, in order, and up to which height: the peers known to have committed
        past this node (they serve blocks), highest first, up to the highest they showed. A
        peer whose height is unknown or unchecked (a full node polling a validator, an
        observer's gossiped block past a gap) is asked first, up to SYNC_UNKNOWN_HEIGHTS past
        this node when no validator showed a height."""
        ours, now = self.store.height, self.clock_ms()
        linked = set(self.network.peers())
        ahead = {
            peer: height
            for peer, height in self.peer_heights.items()
            if height > ours
            and peer in linked
            and now - self._peer_height_ms.get(peer, 0) < PEER_HEIGHT_TTL_MS
        }
        if not ahead:
            return [first], ours + SYNC_UNKNOWN_HEIGHTS
        peers = sorted(ahead, key=lambda p: (p != first, -ahead[p], p))
        if first not in ahead:
            peers.insert(0, first)  # it showed a lead too, unchecked: asked, not believed
        return peers, max(ahead.values())

    async def _sync_from(self, first: str) -> None:
        try:
            before = self.store.height
            peers, target = self._sync_sources(first)
            reached = await self.syncer.sync(peers, target)  # applies under the lock
            if reached > before:
                log.info("synced from height %d to %d", before, reached)
        except CarechainError as exc:
            log.warning("sync failed: %s", exc)
        finally:
            self.syncing = False

    # -- transactions ---------------------------------------------------------------------------
    def next_block_context(self) -> BlockContext:
        return BlockContext(self.app.chain, self.store.height + 1, self.clock_ms())

    async def submit(
        self, tx: Tx, *, gossip: bool = True, notify: bool = True, relayed: bool = False
    ) -> TxOutcome:
        """Admit a transaction (complete or partial); raises TxRejected saying why not.
        With `notify=False` the engine is not told (the caller tells it once for a batch);
        `relayed`: a complete transaction a peer sent directly, admitted without executing
        it (see `admit`)."""
        if tx.id in self.mempool.txs:
            return TxOutcome(tx.id, "pending", False)  # a re-broadcast: dropped unchecked
        if self.store.tx_location(tx.id) is not None:
            return TxOutcome(tx.id, "committed", False)
        known = self.partials.partials.get(tx.id)
        merging = known is not None
        if known is not None:
            if not gossip and set(tx.signatures) <= set(known.tx.signatures):
                # a peer's copy of a partial held already (the direct copy and the gossiped
                # one both arrive): it brings nothing, so it is not executed again (a local
                # co-signature goes through the pool first and is admitted here)
                return TxOutcome(tx.id, "partial", False)
            tx = self.partials.merge(tx, self.clock_ms())
        execute = merging or not relayed
        status = admit(self.store, tx, self.next_block_context(), self.signatures, execute=execute)
        if merging and status is TxStatus.COMPLETE:
            self.partials.remove(tx.id)
        if status is TxStatus.PARTIAL:
            merged = self.partials.merge(tx, self.clock_ms())
            if gossip or merged.signatures != tx.signatures:
                await self._spread(Topic.PARTIAL, merged.encode())
            elif not merging and self._gossips_to_outsiders(Topic.PARTIAL):
                # new here, sent directly by a validator that may have no full node linked:
                # this one hands it to the full nodes linked to it
                await self.network.publish(Topic.PARTIAL, merged.encode())
            self.publish({"event": "partial", "tx": tx.id.hex(), "kind": tx.kind})
            return TxOutcome(tx.id, "partial", True)
        # PoolFull when full: the API answers 503, retry later
        new = self.mempool.add(tx, self.clock_ms())
        if new and gossip:
            await self._spread(Topic.TX, tx.encode())
        if new and notify:
            await self.transactions_available()
        return TxOutcome(tx.id, "pending", new)

    async def transactions_available(self) -> None:
        await self._handle(TxsAvailable(self.clock_ms()))

    async def _spread(self, topic: Topic, payload: bytes) -> None:
        """To the validators directly, and over gossip: partials (a patient's agent on a full
        node co-signs them), complete transactions only from a non-validator node (they reach
        the other full nodes inside blocks, and the validators directly). A validator gossips
        a partial only while a non-validator node that takes partials is linked to it: the
        validators have it directly, and gossiping it among them as well cost a loaded
        4-validator network a quarter of its throughput (each validator that gets a partial
        directly hands it on to the full nodes linked to it, see `submit`)."""
        await self.network.broadcast(topic, payload)
        if topic is Topic.TX and self.config.validator:
            return
        if not self.config.validator or self._gossips_to_outsiders(topic):
            await self.network.publish(topic, payload)

    def _gossips_to_outsiders(self, topic: Topic) -> bool:
        """A validator that gossips (its config admits observers) with one of them linked
        that takes `topic` (an auditor or a load generator takes none)."""
        return self._gossips and topic in self.network.outsider_topics()

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


def _gossiped_commit(payload: bytes, limits: EncodedLimits) -> Commit | None:
    """The block and certificate in a gossiped block message, or None if it is malformed or
    its message id (the prefix) names another block."""
    try:
        commit = Commit.decode(payload[BLOCK_ID_BYTES:], max_bytes=limits.commit_bytes)
    except CarechainError:
        return None
    return commit if commit.block.block_hash == payload[:BLOCK_ID_BYTES] else None


class _Stopping(Exception):
    """Raised inside the task group to cancel every task on a clean stop."""


__all__ = ["Node", "TxOutcome", "TxRejected", "engine_config", "wall_clock_ms"]
