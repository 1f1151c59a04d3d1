"""How a transaction enters a node's pools, from the API, a peer or gossip, and how it is
spread on: to the validators directly, and over gossip to the full nodes that take it."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING

from carechain.consensus.ledger.apply import TxStatus
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import Tx
from carechain.node.pools import admit
from carechain.p2p.network import Topic

if TYPE_CHECKING:
    from carechain.node.daemon import Node


@dataclasses.dataclass(frozen=True)
class TxOutcome:
    tx_id: bytes
    status: str  # "pending" (mempool), "partial", or "committed"
    new: bool


class Admission:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.validator = config.validator
        # Gossip reaches non-validator nodes: a validator publishes only if its config admits
        # some (`p2p.observers`); a non-validator node always takes part.
        self.gossips = not config.validator or bool(config.p2p.observers)
        self.refused: Counter[str] = Counter()  # transactions refused here, by reason

    async def submit(
        self, tx: Tx, *, gossip: bool = True, notify: bool = True, relayed: bool = False
    ) -> TxOutcome:
        """Admit a transaction (complete or partial); raises TxRejected saying why not.
        With `notify=False` the engine is not told (the caller tells it once for a batch);
        `relayed`: a complete transaction a peer sent directly, admitted without executing
        it (see `admit`)."""
        node = self.node
        if tx.id in node.mempool.txs:
            return TxOutcome(tx.id, "pending", False)  # a re-broadcast: dropped unchecked
        if node.store.tx_location(tx.id) is not None:
            return TxOutcome(tx.id, "committed", False)
        known = node.partials.partials.get(tx.id)
        merging = known is not None
        if known is not None:
            if not gossip and set(tx.signatures) <= set(known.tx.signatures):
                # a peer's copy of a partial held already (the direct copy and the gossiped
                # one both arrive): it brings nothing, so it is not executed again (a local
                # co-signature goes through the pool first and is admitted here)
                return TxOutcome(tx.id, "partial", False)
            tx = node.partials.merged(tx)  # kept only once admitted: a refusal changes nothing
        execute = merging or not relayed
        try:
            status = admit(
                node.store, tx, node.next_block_context(), node.signatures, execute=execute
            )
        except TxRejected as exc:
            self.refused[exc.code] += 1
            raise
        if status is TxStatus.PARTIAL:
            merged = node.partials.merge(tx, node.clock_ms())
            node.partials.judge(merged, node.store, node.next_block_context(), node.signatures)
            if gossip or merged.signatures != tx.signatures:
                await self.spread(Topic.PARTIAL, merged.encode())
            elif not merging and self.gossips_to_outsiders(Topic.PARTIAL):
                # new here, sent directly by a validator that may have no full node linked:
                # this one hands it to the full nodes linked to it
                await node.network.publish(Topic.PARTIAL, merged.encode())
            node.publish({"event": "partial", "tx": tx.id.hex(), "kind": tx.kind})
            return TxOutcome(tx.id, "partial", True)
        # PoolFull when full: the API answers 503, retry later (a completed partial stays
        # in the partial pool, co-signature and all, until the mempool takes it)
        new = node.mempool.add(tx, node.clock_ms())
        if merging:
            node.partials.remove(tx.id)
        if new and gossip:
            await self.spread(Topic.TX, tx.encode())
        if new and notify:
            await node.transactions_available()
        return TxOutcome(tx.id, "pending", new)

    async def spread(self, topic: Topic, payload: bytes) -> None:
        """To the validators directly, and over gossip: partials (a patient's agent on a full
        node co-signs them), complete transactions only from a non-validator node (they reach
        the other full nodes inside blocks, and the validators directly). A validator gossips
        a partial only while a non-validator node that takes partials is linked to it: the
        validators have it directly, and gossiping it among them as well cost a loaded
        4-validator network a quarter of its throughput (each validator that gets a partial
        directly hands it on to the full nodes linked to it, see `submit`)."""
        await self.node.network.broadcast(topic, payload)
        if topic is Topic.TX and self.validator:
            return
        if not self.validator or self.gossips_to_outsiders(topic):
            await self.node.network.publish(topic, payload)

    def gossips_to_outsiders(self, topic: Topic) -> bool:
        """A validator that gossips (its config admits observers) with one of them linked
        that takes `topic` (an auditor or a load generator takes none)."""
        return self.gossips and topic in self.node.network.outsider_topics()
