"""What a node says of itself and its chain: status (height, peers, pools, and what load did
to it) and the genesis document."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from carechain.config.genesis import genesis_to_json
from carechain.consensus.crypto import peer_id
from carechain.consensus.ledger.governance import validator_set
from carechain.node.api.answers import (
    BOOL,
    HEX_TEXT,
    INT,
    NUMBER,
    STR,
    array,
    mapping,
    nullable,
    obj,
)
from carechain.node.api.base import Route, RouteFamily, Schema

VALIDATOR: Final[Schema] = obj(name=STR, public_key=HEX_TEXT, node_id=STR, power=INT)
STATUS: Final[Schema] = obj(
    chain_id=STR,
    node_id=STR,
    height=INT,
    head_hash=HEX_TEXT,
    state_root=HEX_TEXT,
    last_block_time_ms=INT,
    round=INT,
    validator=BOOL,
    validator_key=HEX_TEXT,
    moniker=STR,
    validators=array(VALIDATOR),
    peers=array(STR),
    syncing=BOOL,
    signing_held=BOOL,
    signs_from_height=nullable(INT),
    gossip_blocks=INT,
    heartbeats=mapping(obj(height=INT, round=INT)),
    mempool=INT,
    partials=INT,
    equivocations_seen=INT,
    p2p_dropped=INT,
    p2p_drops=mapping(INT),
    pool_full_drops=INT,
    syncs=INT,
    consensus_wait_ms_max=INT,
    consensus_handle_ms_max=INT,
    proposal_budget=obj(execution_us_per_tx=NUMBER, round_0_txs_max=INT, round_0_bytes_max=INT),
    wal_failures=INT,
)
GENESIS: Final[Schema] = obj(
    chain_id=STR,
    genesis_time=STR,
    validators=array(VALIDATOR),
    governance_threshold=INT,
    institutions=array(obj(name=STR, kind=STR, public_key=HEX_TEXT)),
    params={"type": "object"},
    data_types=array(obj(name=STR, title=STR, fhir_resource=STR, loinc_codes=array(STR))),
)


class Status(RouteFamily):
    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/status", self.status, "Node and chain status", answer=STATUS),
            Route("GET", "/v1/genesis", self.genesis, "The genesis document", answer=GENESIS),
        ]

    async def status(self, request: web.Request) -> web.Response:
        node = self.node
        state = node.engine.state
        head = node.store.head()
        validators = validator_set(node.store).validators
        drops = node.network.drops()
        return web.json_response(
            {
                "chain_id": node.genesis.chain_id,
                "node_id": node.node_id,
                "height": node.store.height,
                "head_hash": head[1].hex() if head else "",
                "state_root": node.store.state.root.hex(),
                "last_block_time_ms": node.app.last_block_time_ms(),
                "round": state.round if state else 0,
                "validator": node.engine.key is not None,
                "validator_key": node.engine.me.hex() if node.engine.me else "",
                "moniker": node.config.moniker,
                "validators": [
                    {
                        "name": v.name,
                        "public_key": v.public_key.hex(),
                        "node_id": peer_id(v.node_key),
                        "power": v.power,
                    }
                    for v in validators
                ],
                "peers": node.network.peers(),
                "syncing": node.catchup.syncing,
                "signing_held": node.signing.held,
                "signs_from_height": None if node.signing.held else node.engine.sign_from_height,
                "gossip_blocks": node.catchup.gossip_blocks,
                "heartbeats": {
                    peer: {"height": view.height, "round": view.round}
                    for peer, view in (node.heartbeats.views.items() if node.heartbeats else ())
                },
                "mempool": len(node.mempool),
                "partials": len(node.partials),
                "equivocations_seen": node.equivocations_seen,
                # messages the p2p layer had to drop, by lane and place (p2p_drops) and in
                # all: the re-send of transactions waiting 10 s and sync recover them. No
                # consensus message is dropped for transactions (a lane of its own); a
                # steady climb of consensus drops means a dead or flooding peer
                "p2p_dropped": sum(drops.values()),
                "p2p_drops": drops,
                "pool_full_drops": node.peer_messages.pool_full_drops,
                "syncs": node.catchup.syncs,
                # the longest a peer's consensus message waited in the inbox, and took to
                # handle (waiting for the node's lock included), since the node started
                "consensus_wait_ms_max": round(node.network.inbox.consensus_wait_s_max * 1000),
                "consensus_handle_ms_max": round(node.peer_messages.consensus_handle_s_max * 1000),
                "proposal_budget": {
                    "execution_us_per_tx": round(node.proposal_budget.cost_s_per_tx * 1e6, 1),
                    "round_0_txs_max": node.proposal_budget.limit(0).txs,
                    "round_0_bytes_max": node.proposal_budget.limit(0).bytes,
                },
                "wal_failures": node.signing.wal_failures,
            }
        )

    async def genesis(self, request: web.Request) -> web.Response:
        return web.Response(
            text=genesis_to_json(self.node.genesis), content_type="application/json"
        )
