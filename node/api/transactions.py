"""Transactions and partials: submit one or a batch, dry-run one, a transaction's status, the
partials waiting for co-signatures, and a co-signature."""

from __future__ import annotations

from typing import Annotated, Final

import pydantic
from aiohttp import web

from carechain.consensus.codec import to_json
from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.apply import classify, decode_body
from carechain.consensus.ledger.records import Account, Vault
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx, TxSignature
from carechain.node.api.answers import HEX_TEXT, INT, STR, array, nullable, obj
from carechain.node.api.base import (
    HEX,
    HEX_64,
    REFUSALS,
    TX_HEX_MAX,
    ApiError,
    Body,
    Route,
    RouteFamily,
    Schema,
    parse_hex,
    read_body,
    refusal,
)
from carechain.node.daemon import Node
from carechain.node.peer_messages import ADMIT_CHUNK, API_BATCH_WORKERS_MIN


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


ADMITTED: Final[Schema] = obj(
    id=HEX_TEXT, status={"type": "string", "enum": ["pending", "partial", "committed"]}
)
REFUSED: Final[Schema] = obj(error=STR, message=STR)
TX_STATUS: Final[Schema] = obj(
    {
        "height": INT,
        "position": INT,
        "signers": array(HEX_TEXT),
        "reason": STR,
        "message": STR,
    },
    id=HEX_TEXT,
    status={"type": "string", "enum": ["committed", "pending", "partial", "rejected"]},
)
PARTIAL: Final[Schema] = obj(
    id=HEX_TEXT,
    kind=STR,
    account=HEX_TEXT,
    nonce=INT,
    expiry_ms=INT,
    body=nullable({"type": "object"}),
    tx=HEX_TEXT,
    signers=array(HEX_TEXT),
    needs=array(HEX_TEXT),
    problem=nullable(STR),
)


def decode_tx(node: Node, text: str) -> Tx:
    try:
        tx = Tx.decode(parse_hex(text, "tx"), max_bytes=node.app.chain.params.max_tx_bytes)
    except CarechainError as exc:
        raise ApiError(400, "bad_tx", f"not a canonical transaction: {exc}") from None
    if tx.chain_id != node.genesis.chain_id:
        raise ApiError(
            400,
            "wrong_chain",
            f"transaction for {tx.chain_id!r}, this node runs {node.genesis.chain_id!r}",
        )
    return tx


class Transactions(RouteFamily):
    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/txs",
                self.submit,
                "Submit a transaction (complete or partial)",
                body=SubmitTx,
                success="202",
                pool_full=True,
                answer=ADMITTED,
            ),
            Route(
                "POST",
                "/v1/txs/batch",
                self.submit_batch,
                "Submit up to 1,000 transactions; one result (id and status, or error) each",
                body=SubmitTxs,
                answer=obj(results=array({"anyOf": [ADMITTED, REFUSED]})),
            ),
            Route(
                "POST",
                "/v1/txs/check",
                self.check,
                "Dry-run a transaction against the head",
                body=SubmitTx,
                answer=obj(id=HEX_TEXT, status=STR, reason=nullable(STR), message=nullable(STR)),
            ),
            Route(
                "GET",
                "/v1/txs/{id}",
                self.tx_status,
                "A transaction's status",
                parameters={"id": HEX_64},
                answer=TX_STATUS,
            ),
            Route(
                "GET",
                "/v1/partials",
                self.list_partials,
                "Partial transactions, optionally awaiting one key",
                answer=obj(partials=array(PARTIAL)),
            ),
            Route(
                "POST",
                "/v1/partials/{id}/signatures",
                self.cosign,
                "Add a co-signature",
                body=CoSignature,
                parameters={"id": HEX_64},
                pool_full=True,
                answer=ADMITTED,
            ),
        ]

    async def submit(self, request: web.Request) -> web.Response:
        body = await read_body(request, SubmitTx)
        tx = decode_tx(self.node, body.tx)
        await self.node.consensus_first()
        outcome = await self.node.submit(tx)
        return web.json_response({"id": tx.id.hex(), "status": outcome.status}, status=202)

    async def submit_batch(self, request: web.Request) -> web.Response:
        """Each transaction is admitted or refused on its own, as `POST /v1/txs` would; a
        refusal (pool_full included, which the caller retries) does not stop the others."""
        body = await read_body(request, SubmitTxs)
        decoded: list[Tx | dict[str, str]] = []
        for text in body.txs:
            try:
                decoded.append(decode_tx(self.node, text))
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
        body = await read_body(request, SubmitTx)
        tx = decode_tx(self.node, body.tx)
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
        tx_id = parse_hex(request.match_info["id"], "id")
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
                {
                    "id": tx_id.hex(),
                    "status": "rejected",
                    "reason": node.mempool.rejected[tx_id],
                    "message": node.mempool.rejected_why.get(tx_id, ""),
                }
            )
        raise ApiError(404, "not_found", f"this node does not know transaction {tx_id.hex()}")

    async def list_partials(self, request: web.Request) -> web.Response:
        """Each partial decoded (what it changes, for whom), with the keys whose signature
        could still help complete it; `awaiting=KEY` lists only those KEY can sign."""
        awaiting = request.query.get("awaiting")
        key = parse_hex(awaiting, "awaiting") if awaiting else None
        node = self.node
        if key is not None:  # an institution's key now awaits what its first key is named in
            key = node.store.get(Table.INSTITUTION_KEY, key) or key
        # a guardian awaits what its wards' keys could sign (it stands for them)
        wards = (
            {entry[32:] for entry, _ in node.store.table_entries(Table.GUARDIAN_OF, key)}
            if key is not None
            else set()
        )
        pool = node.partials
        listed = []
        for partial in list(pool.partials.values()):
            tx = partial.tx
            if partial.needs is None:  # not judged since this node started: judged once now
                pool.judge(tx, node.store, node.next_block_context(), node.signatures)
            needs = partial.needs or frozenset()
            if key is not None and key not in needs and not _ward_needs(node, tx, wards, needs):
                continue
            try:
                body = to_json(decode_body(tx))
            except CarechainError as exc:  # kept by an older version, say: shown, not fatal
                body, partial.problem = None, exc.code
            listed.append(
                {
                    "id": tx.id.hex(),
                    "kind": tx.kind,
                    "account": tx.account.hex(),
                    "nonce": tx.nonce,
                    "expiry_ms": tx.expiry_ms,
                    "body": body,
                    "tx": tx.encode().hex(),
                    "signers": [s.public_key.hex() for s in tx.signatures],
                    "needs": sorted(k.hex() for k in needs),
                    "problem": partial.problem,
                }
            )
        return web.json_response({"partials": listed})

    async def cosign(self, request: web.Request) -> web.Response:
        tx_id = parse_hex(request.match_info["id"], "id")
        body = await read_body(request, CoSignature)
        signature = TxSignature(bytes.fromhex(body.public_key), bytes.fromhex(body.signature))
        merged = self.node.partials.with_cosignature(tx_id, signature)
        outcome = await self.node.submit(merged)
        return web.json_response({"id": tx_id.hex(), "status": outcome.status})


def _ward_needs(node: Node, tx: Tx, wards: set[bytes], needs: frozenset[bytes]) -> bool:
    """Whether `tx` is on the account (or a vault) of one of `wards` and waits on that
    patient's keys: a guardian of the patient may sign it for them."""
    if not wards:
        return False
    state = Overlay(node.store)
    vault = state.load(Table.VAULT, tx.account, Vault)
    patient = tx.account if vault is None else vault.owner
    account = state.load(Table.ACCOUNT, patient, Account) if patient in wards else None
    return account is not None and bool(needs & set(account.keys))
