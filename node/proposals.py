"""How large a proposal this validator builds: what fits in the round's time.

The other validators re-execute a proposal before they prevote for it, and they wait for it
only until their propose timeout. A proposal that takes longer to build, send, log and
re-execute than that draws nil prevotes however valid it is, the next proposer takes an even
larger pool, and the chain stops committing while transactions pile up (seen: blocks of
4,800-6,900 transactions took 2.4-4.9 s to build under load, past the 3 s timeout).

So the node measures how long executing a transaction takes here and now (building its own
proposals, validating the others'), and a proposal carries only what executes in
`BUILD_SHARE` of the round's propose timeout, and only as many bytes as the p2p layer sends
in that share. Timeouts grow with the round, and so does the budget: a block the genesis
maxima allow but round 0 cannot carry fits a later round.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Final

from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import SignerCheck, verified_signers
from carechain.consensus.poa.application import ChainView, LedgerApplication, ProposalLimit
from carechain.consensus.poa.state import EngineConfig
from carechain.consensus.types import Block, Tx
from carechain.node.pools import Mempool

# The share of the round's propose timeout a proposal may take to build; validating it
# elsewhere takes about as long again, and sending and logging it must fit in the rest.
BUILD_SHARE: Final = 0.25
COST_INITIAL_S: Final = 300e-6  # a transaction's execution, before anything was measured
SMOOTHING: Final = 0.3  # weight of the newest measurement
MEASURED_TXS_MIN: Final = 32  # smaller blocks say little about the cost of a transaction
PROPOSAL_TXS_MIN: Final = 64  # always allowed: the chain moves however slow this node is
# What the p2p layer carries to each validator per second, with a margin: a 4 MiB proposal to
# 6 validators through py-libp2p (Noise, Yamux) on this class of machine took ~0.3 s.
SEND_BYTES_PER_S: Final = 16 * 1024 * 1024
PROPOSAL_BYTES_MIN: Final = 256 * 1024
PEER_ADMIT_PROPOSALS: Final = 4  # proposals' worth the mempool holds before peers wait
PEER_INTAKE_WINDOW_MS: Final = 30_000  # how recent a pending transaction counts against it
ROOM_RECHECK_S: Final = 1.0  # the longest the intake waits before asking for room again
RECENT_BLOCKS: Final = 8


class ProposalBudget:
    """The most a proposal may carry in a round, from measured execution time.

    Building a proposal and validating another's are measured apart, and the slower of the
    two sizes the proposal: the other validators must validate it within the round, and they
    do so all at once, sharing the machines' cores, while the proposer built it alone (seen:
    7 validators on 2 cores validated a block 2-3 times slower than it was built, and a
    proposal sized by its build time drew nil prevotes)."""

    def __init__(self, timeouts: EngineConfig) -> None:
        self.timeouts = timeouts
        self.build_s_per_tx = COST_INITIAL_S
        self.validate_s_per_tx = COST_INITIAL_S
        self.measurements = 0

    @property
    def cost_s_per_tx(self) -> float:
        """What one transaction of a proposal costs: the slower of building and validating."""
        return max(self.build_s_per_tx, self.validate_s_per_tx)

    def limit(self, round: int) -> ProposalLimit:
        timeout_ms = self.timeouts.timeout(self.timeouts.timeout_propose_ms, round)
        seconds = timeout_ms / 1000 * BUILD_SHARE
        txs = max(PROPOSAL_TXS_MIN, int(seconds / self.cost_s_per_tx))
        size = max(PROPOSAL_BYTES_MIN, int(seconds * SEND_BYTES_PER_S))
        return ProposalLimit(txs, size)

    def observe(self, txs: int, seconds: float, *, building: bool) -> None:
        """Executing `txs` transactions took `seconds` (wall clock: a loaded machine counts),
        building a proposal or validating one."""
        if txs < MEASURED_TXS_MIN:
            return
        cost = seconds / txs
        if building:
            self.build_s_per_tx += SMOOTHING * (cost - self.build_s_per_tx)
        else:
            self.validate_s_per_tx += SMOOTHING * (cost - self.validate_s_per_tx)
        self.measurements += 1


class MeasuredApplication(LedgerApplication):
    """The ledger application, bounding proposals by `budget` and timing each execution of
    a block (building one, validating one) for it."""

    def __init__(
        self,
        genesis: Genesis,
        view: ChainView,
        pending: Callable[[], Iterable[Tx]],
        budget: ProposalBudget,
        check_signers: SignerCheck = verified_signers,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(genesis, view, pending, check_signers, proposal_limit=budget.limit)
        self.budget = budget
        self.clock = clock

    def propose(self, height: int, round: int, time_ms: int, proposer: bytes) -> Block:
        started = self.clock()
        block = super().propose(height, round, time_ms, proposer)
        self.budget.observe(len(block.txs), self.clock() - started, building=True)
        return block

    def validate(self, block: Block) -> str | None:
        executes = block.block_hash not in self._executed
        started = self.clock()
        problem = super().validate(block)
        if executes and problem is None:
            self.budget.observe(len(block.txs), self.clock() - started, building=False)
        return problem


class PeerIntake:
    """How many of peers' transactions the node takes in now (`room`).

    Up to what the mempool has room for, and only while it holds fewer than
    `PEER_ADMIT_PROPOSALS` proposals' worth: the larger of this node's round-0 budget and the
    largest of the last `RECENT_BLOCKS` blocks (other proposers measure their own budget, and
    a pool smaller than their next block leaves them proposing half-empty ones). More could not
    commit any sooner, and admitting it (signatures, checks) takes the CPU the proposer and the
    validators need for the blocks that do commit (seen: at 7 validators on 2 cores, a flood
    admitted as fast as it came held commits back 4-8 s). While there is no room the peers'
    credit runs out and they wait; the API is not held here (it answers `pool_full` when the
    mempool is full).

    Only transactions that arrived in the last `PEER_INTAKE_WINDOW_MS` count against the
    proposals' worth: one that waited longer is not about to commit (its nonce is ahead of a
    predecessor that has not arrived, say), and a pool of such must not keep out the
    transactions, the predecessors among them, that would move it. (The mempool's own bounds
    still apply: a pool full by count or bytes of such keeps everything out until they
    expire.)"""

    def __init__(
        self, mempool: Mempool, budget: ProposalBudget, clock_ms: Callable[[], int]
    ) -> None:
        self.mempool = mempool
        self.budget = budget
        self.clock_ms = clock_ms
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT_BLOCKS)
        self._room = asyncio.Event()  # set while there is room
        self._room.set()

    def room(self) -> int:
        pool = self.mempool
        if pool.size_bytes >= pool.bytes_max:
            return 0
        proposal = max(self.budget.limit(0).txs, max(self._recent, default=0))
        recent = pool.arrived_since(self.clock_ms() - PEER_INTAKE_WINDOW_MS)
        return max(0, min(pool.txs_max - len(pool), PEER_ADMIT_PROPOSALS * proposal - recent))

    def committed(self, txs: int) -> None:
        """A block of `txs` transactions committed (call after the mempool dropped them)."""
        self._recent.append(txs)
        if self.room():
            self._room.set()

    async def wait_for_room(self) -> None:
        """Return once a commit made room, or after ROOM_RECHECK_S at the latest (call when
        `room` is 0, and ask it again): room also comes without a commit, as pending
        transactions leave the window or the budget grows, and on a node that commits
        nothing for a while."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ROOM_RECHECK_S):
                await self._room.wait()
