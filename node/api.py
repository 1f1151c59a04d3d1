"""The node's local HTTP JSON API (aiohttp), bound to 127.0.0.1 by default.

Every error is JSON `{"error": <reason code>, "message": ...}` with a 4xx status for the
caller's mistakes (malformed JSON, unknown fields, oversize bodies, bad signatures, a wrong
chain id, ledger rejections) and never stops the node. `GET /openapi.json` describes every
route; `GET /metrics` serves Prometheus metrics; `GET /v1/events` streams new blocks and
partial transactions as newline-delimited JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Final

import pydantic
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from carechain.config.genesis import genesis_to_json
from carechain.consensus.codec import Record
from carechain.consensus.crypto import decode_address, peer_id
from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.ledger.apply import classify
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.governance import validator_set
from carechain.consensus.ledger.records import (
    Account,
    Emergency,
    EmergencyStatus,
    Grant,
    Receipt,
    RecordEntry,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.types import Tx, TxSignature
from carechain.node.audit.access_report import patient_vaults, timeline
from carechain.node.blob_service import BlobRequest, fetch_from_peer
from carechain.node.daemon import ADMIT_CHUNK, API_BATCH_WORKERS_MIN, Node
from carechain.node.pools import PoolFull
from carechain.storage import schema
from carechain.storage.blobs.store import from_bytes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


HEX: Final = r"^([0-9a-f]{2})+$"
# a transaction as hex, as long as the largest any genesis allows (the node then holds it to
# its own chain's max_tx_bytes, naming the limit)
TX_HEX_MAX: Final = 2 * LIMITS_AT_CAP.tx_bytes


class SubmitTx(Body):
    tx: str = pydantic.Field(
        description="canonical transaction bytes, hex", max_length=TX_HEX_MAX, pattern=HEX
    )


class SubmitTxs(Body):
    # (no pattern on the items: each is refused on its own, in the results, not the batch)
    txs: list[Annotated[str, pydantic.Field(max_length=TX_HEX_MAX)]] = pydantic.Field(
        description="canonical transactions, hex, taken in order",
        min_length=1,
        max_length=1000,
    )


class CoSignature(Body):
    public_key: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    signature: str = pydantic.Field(pattern=r"^[0-9a-f]{128}$")


class FetchBlob(Body):
    request: str = pydantic.Field(
        description="signed BlobRequest, hex", max_length=8192, pattern=HEX
    )


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _account_id(text: str) -> bytes:
    return decode_address(text) if text.startswith("cc1") else _hex(text, "address")


def _hex(value: str, field: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ApiError(400, "bad_hex", f"{field} is not hex") from None


def to_json(value: Any) -> Any:
    """Records to JSON: bytes as hex, enums by name, nested records as objects."""
    if isinstance(value, Record):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


async def _body(request: web.Request, model: type[Body]) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", "the request body is too large") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        problem = exc.errors()[0]
        code = {
            "extra_forbidden": "unknown_field",
            "missing": "missing_field",
            "string_pattern_mismatch": "bad_hex",  # every pattern in the bodies is hex
        }.get(problem["type"], "bad_field")
        where = ".".join(str(p) for p in problem["loc"]) or "body"
        raise ApiError(400, code, f"{where}: {problem['msg']}") from None


def _decode_tx(node: Node, text: str) -> Tx:
    try:
        tx = Tx.decode(_hex(text, "tx"), max_bytes=node.app.chain.params.max_tx_bytes)
    except CarechainError as exc:
        raise ApiError(400, "bad_tx", f"not a canonical transaction: {exc}") from None
    if tx.chain_id != node.genesis.chain_id:
        raise ApiError(
            400,
            "wrong_chain",
            f"transaction for {tx.chain_id!r}, this node runs {node.genesis.chain_id!r}",
        )
    return tx


REFUSALS: Final = (ApiError, TxRejected, PoolFull, InvalidInput)


def refusal(exc: ApiError | CarechainError) -> tuple[int, dict[str, str]]:
    """The status and body with which the API refuses: a reason code and a message. A full
    pool is a busy node, not a bad request (503: retry shortly)."""
    if isinstance(exc, ApiError):
        return exc.status, {"error": exc.code, "message": exc.message}
    message = exc.detail if isinstance(exc, TxRejected) else str(exc)
    status = 503 if isinstance(exc, PoolFull) else 404 if exc.code.endswith("not_found") else 400
    return status, {"error": exc.code, "message": message}


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except REFUSALS as exc:
        status, body = refusal(exc)
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json_response(body, status=status, headers=headers)
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(
            {"error": "too_large", "message": "the body is too large"}, status=413
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # a redirect
        code = "not_found" if exc.status == 404 else "bad_request"
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": code, "message": exc.reason}, status=exc.status, headers=allow
        )


CONSOLE_DIR: Final = Path(__file__).parent / "console"
# The console's own files only; it may call this node and a patient's agent on loopback.
CONSOLE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' http://127.0.0.1:* http://localhost:*; "
        "img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/console"):
        response.headers.update(CONSOLE_HEADERS)


# A parameter may not take the name of a sibling route (`/v1/txs/batch` is not a transaction
# id), or a 405 there would advertise the sibling's methods too.
ROUTER_PATHS: Final = {
    "/v1/txs/{id}": "/v1/txs/{id:(?!batch$|check$)[^/]+}",
    "/v1/blobs/{cid}": "/v1/blobs/{cid:(?!fetch$)[^/]+}",
}


class Api:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry()
        self.height = Gauge("carechain_height", "committed height", registry=self.registry)
        self.mempool = Gauge(
            "carechain_mempool_txs", "transactions in the mempool", registry=self.registry
        )
        self.partials = Gauge(
            "carechain_partial_txs", "partial transactions", registry=self.registry
        )
        self.peers = Gauge("carechain_peers", "connected peers", registry=self.registry)
        self.round = Gauge("carechain_round", "consensus round", registry=self.registry)

    def app(self) -> web.Application:
        application = web.Application(
            middlewares=[errors], client_max_size=self.node.config.api.body_bytes_max
        )
        for method, path, handler, _ in self.routes():
            application.router.add_route(method, ROUTER_PATHS.get(path, path), handler)
        if self.node.config.api.console:
            application.router.add_get("/console", self.console_home)
            application.router.add_get("/console/", self.console_home)
            # (an editable install links each file: follow the links of our own folder)
            application.router.add_static("/console/", CONSOLE_DIR, follow_symlinks=True)
            application.on_response_prepare.append(_console_headers)
        return application

    def routes(self) -> list[tuple[str, str, Handler, str]]:
        return [
            ("GET", "/v1/status", self.status, "Node and chain status"),
            ("GET", "/v1/genesis", self.genesis, "The genesis document"),
            ("POST", "/v1/txs", self.submit, "Submit a transaction (complete or partial)"),
            (
                "POST",
                "/v1/txs/batch",
                self.submit_batch,
                "Submit up to 1,000 transactions; one result (id and status, or error) each",
            ),
            ("POST", "/v1/txs/check", self.check, "Dry-run a transaction against the head"),
            ("GET", "/v1/txs/{id}", self.tx_status, "A transaction's status"),
            (
                "GET",
                "/v1/partials",
                self.list_partials,
                "Partial transactions, optionally awaiting one key",
            ),
            ("POST", "/v1/partials/{id}/signatures", self.cosign, "Add a co-signature"),
            (
                "GET",
                "/v1/accounts/{address}",
                self.account,
                "An account by address (cc1...) or hex id",
            ),
            (
                "GET",
                "/v1/accounts/{address}/vaults",
                self.account_vaults,
                "A patient's vaults, by data type",
            ),
            (
                "GET",
                "/v1/accounts/{address}/timeline",
                self.account_timeline,
                "A patient's access timeline: grants, reads, emergencies, erasures",
            ),
            ("GET", "/v1/vaults/{id}", self.vault, "A vault"),
            (
                "GET",
                "/v1/vaults/{id}/records",
                self.vault_records,
                "Records of a vault (no plaintext)",
            ),
            ("GET", "/v1/vaults/{id}/grants", self.vault_grants, "Grants on a vault"),
            ("GET", "/v1/vaults/{id}/receipts", self.vault_receipts, "Read receipts of a vault"),
            ("GET", "/v1/emergencies", self.emergencies, "Emergency accesses, unreviewed first"),
            (
                "GET",
                "/v1/state/{table}",
                self.state_list,
                "Raw state entries of one table (auditors)",
            ),
            ("GET", "/v1/state/{table}/{key}", self.state_get, "One raw state entry"),
            ("GET", "/v1/blocks/{height}", self.block, "A committed block with its certificate"),
            ("GET", "/v1/blocks/{height}/txs", self.block_txs, "The ids of a block's transactions"),
            ("POST", "/v1/blobs", self.blob_put, "Store ciphertext; returns its content id"),
            ("GET", "/v1/blobs/{cid}", self.blob_get, "Read a blob stored here (verified)"),
            (
                "POST",
                "/v1/blobs/fetch",
                self.blob_fetch,
                "Fetch a record's blob from a peer with a signed request",
            ),
            ("GET", "/v1/events", self.events, "Stream of new blocks and partials (NDJSON)"),
            ("GET", "/metrics", self.metrics, "Prometheus metrics"),
            ("GET", "/openapi.json", self.openapi, "This document"),
        ]

    # -- the web console (api.console) ----------------------------------------------------------
    async def console_home(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/console":
            raise web.HTTPFound(
                "/console/" + (f"?{request.query_string}" if request.query_string else "")
            )
        return web.FileResponse(CONSOLE_DIR / "index.html")

    # -- chain ----------------------------------------------------------------------------------
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
                "syncing": node.syncing,
                "signing_held": node.signing_held,
                "signs_from_height": None if node.signing_held else node.engine.sign_from_height,
                "gossip_blocks": node.gossip_blocks,
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
                "pool_full_drops": node.pool_full_drops,
                "syncs": node.syncs,
                # the longest a peer's consensus message waited in the inbox, and took to
                # handle (waiting for the node's lock included), since the node started
                "consensus_wait_ms_max": round(node.network.inbox.consensus_wait_s_max * 1000),
                "consensus_handle_ms_max": round(node.consensus_handle_s_max * 1000),
                "proposal_budget": {
                    "execution_us_per_tx": round(node.proposal_budget.cost_s_per_tx * 1e6, 1),
                    "round_0_txs_max": node.proposal_budget.limit(0).txs,
                    "round_0_bytes_max": node.proposal_budget.limit(0).bytes,
                },
                "wal_failures": node.wal_failures,
            }
        )

    async def genesis(self, request: web.Request) -> web.Response:
        return web.Response(
            text=genesis_to_json(self.node.genesis), content_type="application/json"
        )

    def _committed_height(self, request: web.Request) -> int:
        text = request.match_info["height"]
        height = self.node.store.height if text == "latest" else _int(text, "height")
        if not 1 <= height <= self.node.store.height:
            raise ApiError(404, "not_found", f"no block at height {height}")
        return height

    async def block_txs(self, request: web.Request) -> web.Response:
        height = self._committed_height(request)
        block = self.node.store.block(height)
        return web.json_response(
            {
                "height": height,
                "hash": block.block_hash.hex(),
                "txs": [tx.id.hex() for tx in block.txs],
            }
        )

    async def block(self, request: web.Request) -> web.Response:
        height = self._committed_height(request)
        block, certificate = self.node.store.block(height), self.node.store.certificate(height)
        return web.json_response(
            {
                "height": height,
                "hash": block.block_hash.hex(),
                "header": to_json(block.header),
                "txs": [tx.id.hex() for tx in block.txs],
                "signers": [p.validator.hex() for p in certificate.precommits],
                "block": block.encode().hex(),
                "certificate": certificate.encode().hex(),
            }
        )

    # -- transactions ---------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        body = await _body(request, SubmitTx)
        tx = _decode_tx(self.node, body.tx)
        await self.node.consensus_first()
        outcome = await self.node.submit(tx)
        return web.json_response({"id": tx.id.hex(), "status": outcome.status}, status=202)

    async def submit_batch(self, request: web.Request) -> web.Response:
        """Each transaction is admitted or refused on its own, as `POST /v1/txs` would; a
        refusal (pool_full included, which the caller retries) does not stop the others."""
        body = await _body(request, SubmitTxs)
        decoded: list[Tx | dict[str, str]] = []
        for text in body.txs:
            try:
                decoded.append(_decode_tx(self.node, text))
            except REFUSALS as exc:
                decoded.append(refusal(exc)[1])
        # signatures checked side by side in worker processes; admission finds them cached
        txs = [tx for tx in decoded if isinstance(tx, Tx)]
        await self.node.verifier.verify(txs, batch_min=API_BATCH_WORKERS_MIN)
        results: list[dict[str, str]] = []
        new = False
        for index, tx in enumerate(decoded):
            if index % ADMIT_CHUNK == 0:
                await self.node.consensus_first()
            if not isinstance(tx, Tx):
                results.append(tx)
                continue
            try:
                outcome = await self.node.submit(tx, notify=False)
            except REFUSALS as exc:
                results.append(refusal(exc)[1])
            else:
                new = new or outcome.new
                results.append({"id": tx.id.hex(), "status": outcome.status})
        if new:
            await self.node.transactions_available()
        return web.json_response({"results": results})

    async def check(self, request: web.Request) -> web.Response:
        body = await _body(request, SubmitTx)
        tx = _decode_tx(self.node, body.tx)
        result = classify(self.node.store, tx, self.node.next_block_context())
        reason = result.reason
        return web.json_response(
            {
                "id": tx.id.hex(),
                "status": result.status.value,
                "reason": reason.code if reason else None,
                "message": reason.detail if reason else None,
            }
        )

    async def tx_status(self, request: web.Request) -> web.Response:
        tx_id = _hex(request.match_info["id"], "id")
        node = self.node
        location = node.store.tx_location(tx_id)
        if location is not None:
            return web.json_response(
                {
                    "id": tx_id.hex(),
                    "status": "committed",
                    "height": location[0],
                    "position": location[1],
                }
            )
        if tx_id in node.mempool.txs:
            return web.json_response({"id": tx_id.hex(), "status": "pending"})
        if tx_id in node.partials.partials:
            tx = node.partials.partials[tx_id].tx
            return web.json_response(
                {
                    "id": tx_id.hex(),
                    "status": "partial",
                    "signers": [s.public_key.hex() for s in tx.signatures],
                }
            )
        if tx_id in node.mempool.rejected:
            return web.json_response(
                {"id": tx_id.hex(), "status": "rejected", "reason": node.mempool.rejected[tx_id]}
            )
        raise ApiError(404, "not_found", f"this node does not know transaction {tx_id.hex()}")

    async def list_partials(self, request: web.Request) -> web.Response:
        awaiting = request.query.get("awaiting")
        key = _hex(awaiting, "awaiting") if awaiting else None
        return web.json_response(
            {
                "partials": [
                    {
                        "id": tx.id.hex(),
                        "kind": tx.kind,
                        "account": tx.account.hex(),
                        "tx": tx.encode().hex(),
                        "signers": [s.public_key.hex() for s in tx.signatures],
                    }
                    for tx in self.node.partials.awaiting(key)
                ]
            }
        )

    async def cosign(self, request: web.Request) -> web.Response:
        tx_id = _hex(request.match_info["id"], "id")
        body = await _body(request, CoSignature)
        signature = TxSignature(bytes.fromhex(body.public_key), bytes.fromhex(body.signature))
        merged = self.node.partials.cosign(tx_id, signature)
        outcome = await self.node.submit(merged)
        return web.json_response({"id": tx_id.hex(), "status": outcome.status})

    # -- state ----------------------------------------------------------------------------------
    def _table(self, name: str) -> Table:
        try:
            return Table[name.upper().replace("-", "_")]
        except KeyError:
            raise ApiError(404, "not_found", f"no state table {name!r}") from None

    async def state_get(self, request: web.Request) -> web.Response:
        table = self._table(request.match_info["table"])
        value = self.node.store.get(table, _hex(request.match_info["key"], "key"))
        if value is None:
            raise ApiError(404, "not_found", "no such entry")
        return web.json_response({"value": value.hex()})

    async def state_list(self, request: web.Request) -> web.Response:
        table = self._table(request.match_info["table"])
        prefix = _hex(request.query.get("prefix", ""), "prefix")
        limit = min(_int(request.query.get("limit", "1000"), "limit"), 10_000)
        entries = []
        for raw_key, value in self.node.store.kv.iterate(schema.state_key(table, prefix)):
            entries.append([schema.parse_state_key(raw_key)[1].hex(), value.hex()])
            if len(entries) >= limit:
                break
        return web.json_response({"entries": entries})

    async def account_vaults(self, request: web.Request) -> web.Response:
        patient = _account_id(request.match_info["address"])
        vaults = patient_vaults(self.node.store.state, patient)
        return web.json_response(
            {
                "vaults": [
                    {"vault_id": vault_id.hex(), **to_json(vault)}
                    for vault_id, vault in sorted(vaults.items(), key=lambda v: v[1].data_type)
                ]
            }
        )

    async def account_timeline(self, request: web.Request) -> web.Response:
        patient = _account_id(request.match_info["address"])
        events = timeline(self.node.store.state, patient)
        return web.json_response(
            {"events": [{**dataclasses.asdict(e), "actor": e.actor.hex()} for e in events]}
        )

    async def account(self, request: web.Request) -> web.Response:
        account_id = _account_id(request.match_info["address"])
        account = Overlay(self.node.store).load(Table.ACCOUNT, account_id, Account)
        if account is None:
            raise ApiError(404, "not_found", "no such account")
        return web.json_response({"id": account_id.hex(), **to_json(account)})

    async def vault(self, request: web.Request) -> web.Response:
        vault = Overlay(self.node.store).load(
            Table.VAULT, _hex(request.match_info["id"], "id"), Vault
        )
        if vault is None:
            raise ApiError(404, "not_found", "no such vault")
        return web.json_response(to_json(vault))

    def _decoded(self, table: Table, prefix: bytes, kind: type[Record]) -> list[Any]:
        return [
            kind.decode(value)
            for _, value in self.node.store.kv.iterate(schema.state_key(table, prefix))
        ]

    async def vault_records(self, request: web.Request) -> web.Response:
        vault_id = _hex(request.match_info["id"], "id")
        records = self._decoded(Table.RECORD, vault_id, RecordEntry)
        return web.json_response({"records": [to_json(r) for r in records]})

    async def vault_grants(self, request: web.Request) -> web.Response:
        vault_id = _hex(request.match_info["id"], "id")
        grants = [g for g in self._decoded(Table.GRANT, b"", Grant) if g.vault == vault_id]
        return web.json_response({"grants": [to_json(g) for g in grants]})

    async def vault_receipts(self, request: web.Request) -> web.Response:
        vault_id = _hex(request.match_info["id"], "id")
        receipts = self._decoded(Table.RECEIPT, vault_id, Receipt)
        return web.json_response({"receipts": [to_json(r) for r in receipts]})

    async def emergencies(self, request: web.Request) -> web.Response:
        found = self._decoded(Table.EMERGENCY, b"", Emergency)
        found.sort(key=lambda e: (e.status is not EmergencyStatus.UNREVIEWED, e.opened_height))
        return web.json_response({"emergencies": [to_json(e) for e in found]})

    # -- blobs ----------------------------------------------------------------------------------
    async def blob_put(self, request: web.Request) -> web.Response:
        data = await request.read()
        cid = await self.node.blobs.put(from_bytes(data))
        return web.json_response({"cid": cid, "size": len(data)}, status=201)

    async def blob_get(self, request: web.Request) -> web.Response:
        data = await self.node.blobs.read(request.match_info["cid"])
        return web.Response(body=data, content_type="application/octet-stream")

    async def blob_fetch(self, request: web.Request) -> web.Response:
        body = await _body(request, FetchBlob)
        try:
            blob_request = BlobRequest.decode(_hex(body.request, "request"), max_bytes=8192)
        except CarechainError as exc:
            raise ApiError(400, "bad_request", f"not a blob request: {exc}") from None
        node = self.node
        if await node.blobs.has(blob_request.content_id):
            return web.Response(
                body=await node.blobs.read(blob_request.content_id),
                content_type="application/octet-stream",
            )
        refusals = []
        for peer in node.network.peers():
            try:
                data = await fetch_from_peer(node.network, peer, blob_request)
            except CarechainError as exc:
                refusals.append(f"{peer[-8:]}: {exc}")
                continue
            return web.Response(body=data, content_type="application/octet-stream")
        raise ApiError(403, "not_authorised", "; ".join(refusals) or "no peer holds this blob")

    # -- events, metrics, document --------------------------------------------------------------
    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)
        self.node.subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                await response.write((json.dumps(event) + "\n").encode())
                if event["event"] == "stopping":
                    return response
        finally:
            self.node.subscribers.discard(queue)

    async def metrics(self, request: web.Request) -> web.Response:
        node = self.node
        self.height.set(node.store.height)
        self.mempool.set(len(node.mempool))
        self.partials.set(len(node.partials))
        self.peers.set(len(node.network.peers()))
        self.round.set(node.engine.state.round if node.engine.state else 0)
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self))


def _int(text: str, field: str) -> int:
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is true; int() refuses it
        raise ApiError(400, "bad_field", f"{field} must be a whole number")
    return int(text)


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
BODIES: dict[str, type[Body]] = {
    "/v1/txs": SubmitTx,
    "/v1/txs/batch": SubmitTxs,
    "/v1/txs/check": SubmitTx,
    "/v1/partials/{id}/signatures": CoSignature,
    "/v1/blobs/fetch": FetchBlob,
}


HEX_64: Final = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
HEX_40: Final = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
PARAMETERS: Final[dict[str, dict[str, Any]]] = {
    "/v1/txs/{id}": HEX_64,
    "/v1/partials/{id}": HEX_64,
    "/v1/vaults/{id}": HEX_40,
    "{address}": {"type": "string", "pattern": "^(cc1[02-9ac-hj-np-z]{38}|[0-9a-f]{40})$"},
    "{height}": {"type": "string", "pattern": "^([1-9][0-9]{0,17}|latest)$"},
    "{cid}": {"type": "string", "pattern": "^b[a-z2-7]{58}$"},
    "{table}": {"type": "string", "enum": [t.name.lower().replace("_", "-") for t in Table]},
    "{key}": {"type": "string", "pattern": "^([0-9a-f]{2}){1,128}$"},
}
SUCCESS: Final = {("POST", "/v1/txs"): "202", ("POST", "/v1/blobs"): "201"}


def _parameter_schema(path: str, name: str) -> dict[str, Any]:
    for where, described in PARAMETERS.items():
        if where == f"{{{name}}}" or (where.startswith("/") and path.startswith(where)):
            return described
    return {"type": "string"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def openapi_document(api: Api) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, _, summary in api.routes():
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        responses: dict[str, Any] = {
            SUCCESS.get((method, path), "200"): {"description": "success"},
            "400": _error("the caller's mistake: what was wrong, in `error` and `message`"),
        }
        if names:
            responses["404"] = _error("nothing of that name here")
        if method == "POST":
            responses["413"] = _error("the body exceeds `api.body_bytes_max`")
        if path in ("/v1/txs", "/v1/partials/{id}/signatures"):  # a batch reports it per item
            responses["503"] = _error(
                "the node's pool is full: retry after the Retry-After seconds"
            )
        operation: dict[str, Any] = {"summary": summary, "responses": responses}
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": _parameter_schema(path, n)}
                for n in names
            ]
        if method == "POST" and path in BODIES:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": BODIES[path].model_json_schema()}},
            }
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "carechain node API", "version": "1"},
        "paths": paths,
    }


async def serve(api: Api, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
