"""What peers send a node, taken in with consensus first: the consensus lane, the
transactions lane in batches, gossiped transactions, and the pending transactions sent on to
peers that may have missed them.

Peers' consensus messages and their transactions arrive in separate inbox lanes
(p2p.network.Inbox) read by separate tasks. Transactions are taken in batches (signatures
checked in the worker processes, one engine event per batch); admission pauses between
chunks of `ADMIT_CHUNK` while any consensus message waits or is being handled
(`Node.consensus_first`), so a vote never waits behind a batch; and nothing is taken while the
mempool is full or already holds a few proposals' worth (`PeerIntake`): the peers' credit
then runs out and their sends back up.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Final

from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.poa.events import Received
from carechain.consensus.poa.messages import (
    Proposal,
    commit_height,
    decode_message,
    proposal_slot,
)
from carechain.consensus.poa.rules import proposal_problem
from carechain.consensus.types import Tx
from carechain.node.pools import PoolFull
from carechain.p2p.network import Inbound, Topic, Verdict

if TYPE_CHECKING:
    from carechain.node.daemon import Node

log = logging.getLogger("carechain.node")

# Rejections no honest peer forwards: they do not depend on the chain's state or the clock.
PROVABLY_INVALID: Final = frozenset(
    {"wrong_chain", "non_canonical_signatures", "bad_signature", "unknown_kind", "bad_body"}
)
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


class PeerMessages:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.pool_full_drops = 0  # transactions from peers dropped because the mempool was full
        self.stale_commits = 0  # commit messages for heights already committed, dropped unread
        self.known_proposals = 0  # copies of proposals held already, dropped unread
        self.consensus_handle_s_max = 0.0  # the longest one consensus message took to handle
        self._linked: frozenset[str] = frozenset()  # the peers linked at the last look

    def _blame(self, peer: str, problem: CarechainError) -> None:
        misbehaviour = self.node.misbehaviour
        misbehaviour[peer] = misbehaviour.get(peer, 0) + 1
        log.info("dropped a message from %s: %s", peer, problem)

    # -- the consensus lane ---------------------------------------------------------------------
    async def consensus_loop(self) -> None:
        inbox = self.node.network.inbox
        while True:
            for message in await inbox.next_consensus(CONSENSUS_BATCH):
                await self._handle_consensus(message)
            inbox.consensus_done()

    async def _handle_consensus(self, message: Inbound) -> None:
        started = time.monotonic()
        try:
            await self.on_consensus(message)
        except CarechainError as exc:
            self._blame(message.peer, exc)
        took = time.monotonic() - started
        if took > self.consensus_handle_s_max:
            self.consensus_handle_s_max = took
            if took > 1.0:
                log.warning("a consensus message took %.2f s to handle", took)

    async def on_consensus(self, message: Inbound) -> None:
        node = self.node
        height = commit_height(message.payload)
        if height is not None and height <= node.store.height:
            self.stale_commits += 1  # the engine would ignore it: not worth decoding
            return
        slot = proposal_slot(message.payload)
        if slot is not None and self._holds_proposal_for(*slot):
            self.known_proposals += 1  # a copy of one held, or of a past height: ignored
            return
        decoded = decode_message(message.payload, max_bytes=node.limits.message_bytes)
        event = Received(message.peer, decoded, node.clock_ms())
        if isinstance(decoded, Proposal) and self.checked_ahead(decoded):
            # signatures this node has not seen (transactions it has not admitted yet) are
            # checked in the workers, not one by one on the event loop while validating; the
            # lock is held throughout, so no timeout of this round is handled meanwhile
            async with node.lock:
                await node.verifier.verify(decoded.block.txs, batch_min=API_BATCH_WORKERS_MIN)
                await node.handle_locked(event)
            return
        await node.handle(event)

    def checked_ahead(self, proposal: Proposal) -> bool:
        """Whether a proposal's transactions' signatures are worth checking in the workers
        before the engine sees it: only one the engine would take (this height, this round
        or the next, one it does not hold yet, and nothing the engine's own check refuses:
        from that round's proposer, signed by it, see `rules.proposal_problem`). Anything
        else goes to the engine as it is, which refuses it for one signature check, so no
        peer can make this node spend its workers on proposals it will not use."""
        state = self.node.engine.state
        if state is None or proposal.height != state.height or proposal.round in state.proposals:
            return False
        if not state.round <= proposal.round <= state.round + 1:
            return False
        return proposal_problem(state, proposal) is None

    def _holds_proposal_for(self, height: int, round: int) -> bool:
        """Whether the engine would ignore a proposal for (height, round) unread: it holds
        one for that round already, or the height is past."""
        state = self.node.engine.state
        if state is None:
            return False
        return height < state.height or (height == state.height and round in state.proposals)

    # -- the transactions lane ------------------------------------------------------------------
    async def transactions_loop(self) -> None:
        """Peers' transactions, a batch at a time. While the mempool is full nothing is
        taken, nor while it holds as much as commits soon (`PeerIntake`): the peers'
        credit runs out and the network stops reading them."""
        inbox = self.node.network.inbox
        intake = self.node.peer_intake
        while True:
            await inbox.wait_txs()
            room = intake.room()
            if room == 0:
                await intake.wait_for_room()
                continue
            batch = inbox.take_txs(min(PEER_TX_BATCH, room))
            try:
                await self.admit(batch)
            finally:
                inbox.release(batch)

    async def admit(self, messages: list[Inbound]) -> None:
        """Admit peers' transactions and partials as an API batch is admitted: signatures
        verified together in the workers, each transaction checked, one engine event."""
        node = self.node
        decoded: list[tuple[Inbound, Tx]] = []
        for message in messages:
            try:
                tx = Tx.decode(message.payload, max_bytes=node.limits.tx_bytes)
            except CarechainError as exc:
                self._blame(message.peer, exc)
            else:
                decoded.append((message, tx))
        # what is pending or committed already is dropped unchecked by `submit`: a node that
        # lags behind the peer's other validators gets mostly such (they committed it)
        fresh = [
            tx
            for _, tx in decoded
            if tx.id not in node.mempool.txs and node.store.tx_location(tx.id) is None
        ]
        await node.verifier.verify(fresh, batch_min=API_BATCH_WORKERS_MIN)
        new = False
        for index, (message, tx) in enumerate(decoded):
            if index % ADMIT_CHUNK == 0:
                await node.consensus_first()
            # a complete transaction from a peer is not executed here (see `admit`): the
            # proposal executes it, as for one the API took in at another validator
            relayed = message.topic is Topic.TX
            try:
                outcome = await node.submit(tx, gossip=False, notify=False, relayed=relayed)
            except PoolFull:
                self.pool_full_drops += 1  # not the peer's fault; the re-send brings it back
            except CarechainError as exc:
                self._blame(message.peer, exc)
            else:
                new = new or outcome.new
        if new:
            await node.transactions_available()

    async def on_gossip_tx(self, payload: bytes) -> Verdict:
        """Validate and take in one gossiped transaction or partial; only what is accepted
        is passed on."""
        try:
            tx = Tx.decode(payload)
        except CarechainError:
            return Verdict.REJECT
        try:
            outcome = await self.node.submit(tx, gossip=False)
        except TxRejected as exc:
            return Verdict.REJECT if exc.code in PROVABLY_INVALID else Verdict.IGNORE
        except PoolFull:
            self.pool_full_drops += 1
            return Verdict.IGNORE
        return Verdict.IGNORE if outcome.status == "committed" else Verdict.ACCEPT

    # -- pending transactions to peers ----------------------------------------------------------
    async def resend_pending(self) -> None:
        """Peers that missed a transaction get it again once it has waited a while, but not
        while consensus is stalled: that load would land on a struggling network."""
        node = self.node
        if node.consensus_stalled():
            return
        for tx in node.mempool.to_resend(node.clock_ms(), RESEND_AFTER_MS, RESEND_MAX):
            await node.network.broadcast(Topic.TX, tx.encode())

    async def send_pending_to_new_links(self) -> None:
        """A validator linked since the last look (it restarted, or this node did, or a cut
        healed) is sent the oldest pending transactions at once: they may have arrived while it
        was away, and a transaction this node admitted with no validator linked went nowhere.
        Without this they would wait for the re-send after RESEND_AFTER_MS."""
        node = self.node
        linked = frozenset(node.network.peers())
        new = sorted((linked - self._linked) & node.registered)
        self._linked = linked
        if not new or not node.mempool.txs:
            return
        pending = [tx.encode() for tx in itertools.islice(node.mempool.txs.values(), RESEND_MAX)]
        for peer in new:
            for payload in pending:
                await node.network.send(peer, Topic.TX, payload)
