"""A node in one process for the wallet's tests: the API routes the wallet and the patient's
agent call, answered from a `ledger_world.World` (a real state store, real transaction
processing), one block per transaction that applies. A transaction the ledger finds only
partially signed waits as a partial, as at a node, until a co-signature completes it; any other
refusal is the node's 400 with the ledger's reason code. Block time follows the wall clock (the
wallet stamps expiries from it). Consensus, gossip and the pool's standing checks are not here:
the end-to-end tests on node processes cover them."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from carechain.config.genesis import genesis_to_json
from carechain.consensus.ledger.apply import TxStatus, classify
from carechain.consensus.ledger.state import Table
from carechain.consensus.types import Tx, TxSignature
from carechain.node.wallet.client import ApiRequestError, Client
from carechain.tests.ledger_world import World


class WorldNode(Client):
    def __init__(self, world: World) -> None:
        super().__init__("http://world.invalid")
        self.world = world
        world.time_ms = max(world.time_ms, int(time.time() * 1000))
        self.partial_txs: dict[bytes, Tx] = {}
        self.committed: set[bytes] = set()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        url = urlsplit(path)
        parts = url.path.strip("/").split("/")[1:]  # without "v1"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "genesis"): lambda: json.loads(genesis_to_json(self.world.genesis)),
            ("GET", "status"): lambda: {
                "height": self.world.height,
                "last_block_time_ms": self.world.time_ms,
            },
            ("GET", "state"): lambda: self._state(parts[1:], query),
            ("POST", "txs"): lambda: self._submit(Tx.decode(bytes.fromhex(body["tx"]))),
            ("GET", "txs"): lambda: {
                "status": "committed" if bytes.fromhex(parts[1]) in self.committed else "unknown"
            },
            ("GET", "partials"): lambda: {"partials": self._partials(query.get("awaiting"))},
            ("POST", "partials"): lambda: self._cosign(bytes.fromhex(parts[1]), body),
        }
        route = routes.get((method, parts[0]))
        if route is None:
            raise ApiRequestError(404, "not_found", f"{method} {path} is not served here")
        return route()

    def _state(self, parts: list[str], query: dict[str, str]) -> dict[str, Any]:
        table = Table.of_label(parts[0])
        if table is None:
            raise ApiRequestError(404, "not_found", f"no state table {parts[0]!r}")
        if len(parts) == 2:
            value = self.world.store.get(table, bytes.fromhex(parts[1]))
            if value is None:
                raise ApiRequestError(404, "not_found", "no such entry")
            return {"value": value.hex()}
        entries = self.world.store.table_entries(table, bytes.fromhex(query.get("prefix", "")))
        after = bytes.fromhex(query["after"]) if "after" in query else None
        limit = min(int(query.get("limit", "1000")), 10_000)  # as the node's route
        listed = [[k.hex(), v.hex()] for k, v in entries if after is None or k > after]
        return {"entries": listed[:limit]}

    def _submit(self, tx: Tx) -> dict[str, Any]:
        verdict = classify(self.world.store, tx, self.world.next_context())
        if verdict.status is TxStatus.PARTIAL:
            self.partial_txs[tx.id] = tx
            return {"id": tx.id.hex(), "status": "partial"}
        if verdict.status is TxStatus.INVALID:
            assert verdict.reason is not None
            raise ApiRequestError(400, verdict.reason.code, verdict.reason.detail)
        self.world.block(tx)
        self.committed.add(tx.id)
        self.partial_txs.pop(tx.id, None)
        return {"id": tx.id.hex(), "status": "committed"}

    def _partials(self, awaiting: str | None) -> list[dict[str, Any]]:
        return [
            {"id": tx.id.hex(), "account": tx.account.hex(), "tx": tx.encode().hex()}
            for tx in self.partial_txs.values()
            if awaiting is None
            or bytes.fromhex(awaiting) not in {s.public_key for s in tx.signatures}
        ]

    def _cosign(self, tx_id: bytes, body: dict[str, str]) -> dict[str, Any]:
        tx = self.partial_txs[tx_id]
        signature = TxSignature(bytes.fromhex(body["public_key"]), bytes.fromhex(body["signature"]))
        signatures = tuple(sorted((*tx.signatures, signature), key=lambda s: s.public_key))
        return self._submit(dataclasses.replace(tx, signatures=signatures))
