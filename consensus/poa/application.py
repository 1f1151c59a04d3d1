"""The engine's `Application` on top of the ledger: builds proposals from pending
transactions, and validates a block by checking its header and re-executing it.

It reads committed state through `ChainView` and never writes: the shell commits a decided
block, taking the already computed diff from `executed(block_hash)` instead of executing the
block a second time.

A proposal holds at most what genesis allows, and at most what the shell's `proposal_limit`
says for the round (transactions, bytes): a block the proposer cannot build, send, log and
have validated within the round's time draws nil prevotes however valid it is (the shell
measures that time; this module has no clock).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Protocol

from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import SignerCheck, apply_block, select_txs, verified_signers
from carechain.consensus.ledger.context import BlockContext, ChainContext
from carechain.consensus.ledger.errors import BlockRejected, TxRejected
from carechain.consensus.ledger.governance import next_validator_set_hash, validator_set_at
from carechain.consensus.ledger.state import StateDiff, StateReader
from carechain.consensus.poa.messages import Commit
from carechain.consensus.types import (
    ZERO_HASH,
    Block,
    BlockHeader,
    CommitCertificate,
    Tx,
    ValidatorSet,
    merkle_root,
)


class ChainView(StateReader, Protocol):
    """Committed chain state: the ledger's entries plus what the last block said."""

    @property
    def height(self) -> int: ...

    def root_after(self, diff: StateDiff) -> bytes:
        """The state root once `diff` is applied as the next height."""
        ...

    def last_header(self) -> BlockHeader | None: ...

    def last_certified(self) -> tuple[Block, CommitCertificate] | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ProposalLimit:
    """The most a proposal may carry in one round, below the genesis maxima."""

    txs: int
    bytes: int


class LedgerApplication:
    def __init__(
        self,
        genesis: Genesis,
        view: ChainView,
        pending: Callable[[], Iterable[Tx]],
        check_signers: SignerCheck = verified_signers,
        proposal_limit: Callable[[int], ProposalLimit] | None = None,
    ) -> None:
        self.genesis = genesis
        self.proposal_limit = proposal_limit
        self.chain = ChainContext.from_genesis(genesis)
        self.view = view
        self.pending = pending
        self.check_signers = check_signers
        self._executed: dict[bytes, StateDiff] = {}
        self.rejected: list[tuple[Tx, TxRejected]] = []  # proposer's leftovers, for the mempool

    # -- what the engine asks ---------------------------------------------------------------
    def committed_height(self) -> int:
        return self.view.height

    def last_block_hash(self) -> bytes:
        header = self.view.last_header()
        return header.hash() if header else ZERO_HASH

    def last_block_time_ms(self) -> int:
        header = self.view.last_header()
        return header.time_ms if header else self.genesis.genesis_time_ms

    def last_commit(self) -> Commit | None:
        found = self.view.last_certified()
        return None if found is None else Commit(*found)

    def validator_set(self, height: int) -> ValidatorSet:
        return validator_set_at(self.view, height)

    def has_pending(self) -> bool:
        return next(iter(self.pending()), None) is not None

    def propose(self, height: int, round: int, time_ms: int, proposer: bytes) -> Block:
        context = BlockContext(self.chain, height, time_ms)
        params = self.chain.params
        max_txs, max_bytes = params.max_block_txs, params.max_block_bytes - 1024  # the header
        if self.proposal_limit is not None:
            limit = self.proposal_limit(round)
            max_txs, max_bytes = min(max_txs, limit.txs), min(max_bytes, limit.bytes)
        selection = select_txs(
            self.view,
            self.pending(),
            context,
            max_txs=max_txs,
            max_bytes=max_bytes,
            check_signers=self.check_signers,
            # a failed candidate costs about what an included one does
            max_rejected=max_txs if self.proposal_limit is not None else None,
        )
        self.rejected = list(selection.rejected)
        header = BlockHeader(
            chain_id=self.chain.chain_id,
            height=height,
            round=round,
            time_ms=time_ms,
            proposer=proposer,
            parent_hash=self.last_block_hash(),
            tx_root=merkle_root([tx.witness_hash for tx in selection.txs]),
            state_root=self.view.root_after(selection.diff),
            validator_set_hash=self.validator_set(height).hash(),
            next_validator_set_hash=next_validator_set_hash(self.view, selection.diff, height),
        )
        block = Block(header, selection.txs)
        self._executed = {block.block_hash: selection.diff}
        return block

    def validate(self, block: Block) -> str | None:
        problem = self._check_header(block)
        if problem:
            return problem
        if block.block_hash in self._executed:
            return None  # proposed (or validated) by us on this very view: executed already
        try:
            diff = apply_block(self.view, block, self.chain, self.check_signers)
        except BlockRejected as exc:
            return str(exc)
        if self.view.root_after(diff) != block.header.state_root:
            return f"height {block.header.height}: state root differs from re-execution"
        next_hash = next_validator_set_hash(self.view, diff, block.header.height)
        if next_hash != block.header.next_validator_set_hash:
            return f"height {block.header.height}: wrong next validator set hash"
        self._executed[block.block_hash] = diff
        return None

    def _check_header(self, block: Block) -> str | None:
        header = block.header
        height = self.view.height + 1
        validators = self.validator_set(height)
        checks = [
            (header.chain_id == self.chain.chain_id, "block for another chain"),
            (header.height == height, f"block height {header.height}, expected {height}"),
            (header.parent_hash == self.last_block_hash(), "block does not extend our head"),
            (header.time_ms > self.last_block_time_ms(), "block time does not move forward"),
            (header.proposer in validators.by_key, "proposer is not a validator"),
            (header.validator_set_hash == validators.hash(), "wrong validator set hash"),
            (len(block.txs) <= self.chain.params.max_block_txs, "too many transactions"),
            (len(block.encode()) <= self.chain.params.max_block_bytes, "block too large"),
            (header.tx_root == block.computed_tx_root(), "tx root does not match"),
        ]
        return next((reason for ok, reason in checks if not ok), None)

    # -- what the shell asks ----------------------------------------------------------------
    def executed(self, block: Block) -> StateDiff:
        """The diff of a validated or proposed block (computed again if it was not)."""
        diff = self._executed.get(block.block_hash)
        if diff is None:
            diff = apply_block(self.view, block, self.chain, self.check_signers)
        self._executed = {}
        return diff
