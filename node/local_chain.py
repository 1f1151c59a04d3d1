"""A chain in one process: transactions in, blocks applied and committed to a state store.

It orders and commits like a single validator without consensus or network, which is what an
operator's dry run, the demo before the network exists, and tools that replay need. Block time
is the caller's clock, kept monotonic.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import Classification, classify, select_txs
from carechain.consensus.ledger.context import BlockContext, ChainContext
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.governance import next_validator_set_hash, validator_set_at
from carechain.consensus.poa.votes import proposer_of
from carechain.consensus.types import ZERO_HASH, Block, BlockHeader, Tx, merkle_root
from carechain.storage.kv import KV
from carechain.storage.state import StateStore


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class LocalChain:
    def __init__(
        self,
        kv: KV,
        genesis: Genesis,
        proposer: bytes | None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """`proposer=None`: each height's proposer is the round-robin's choice for round 0."""
        self.store = StateStore(kv)
        if not self.store.initialized:
            self.store.initialize(genesis)
        self.genesis = genesis
        self.chain = ChainContext.from_genesis(genesis)
        self.proposer = proposer
        self.clock_ms = clock_ms
        self.blocks: list[Block] = []
        self.last_time_ms = genesis.genesis_time_ms

    def _next_context(self) -> BlockContext:
        self.last_time_ms = max(self.clock_ms(), self.last_time_ms + 1)
        return BlockContext(self.chain, self.store.height + 1, self.last_time_ms)

    @property
    def time_ms(self) -> int:
        return self.last_time_ms

    def classify(self, tx: Tx) -> Classification:
        return classify(
            self.store, tx, BlockContext(self.chain, self.store.height + 1, self.clock_ms())
        )

    def commit(self, *txs: Tx) -> Block:
        """Commit one block holding exactly `txs`; raises TxRejected for the first that fails."""
        context = self._next_context()
        selection = select_txs(self.store, txs, context, max_txs=len(txs) or 1, max_bytes=2**31)
        if selection.rejected:
            raise selection.rejected[0][1]
        header = BlockHeader(
            chain_id=self.chain.chain_id,
            height=context.height,
            round=0,
            time_ms=context.time_ms,
            proposer=self.proposer
            or proposer_of(validator_set_at(self.store, context.height), context.height, 0),
            parent_hash=self.blocks[-1].block_hash if self.blocks else ZERO_HASH,
            tx_root=merkle_root([tx.witness_hash for tx in txs]),
            state_root=self.store.root_after(selection.diff),
            validator_set_hash=validator_set_at(self.store, context.height).hash(),
            next_validator_set_hash=next_validator_set_hash(
                self.store, selection.diff, context.height
            ),
        )
        block = Block(header, tuple(txs))
        root = self.store.apply(selection.diff, context.height)
        assert root == header.state_root, "the committed root differs from the header's"
        self.blocks.append(block)
        return block


__all__ = ["LocalChain", "TxRejected"]
