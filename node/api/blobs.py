"""The node's blob store (ciphertext only): store a blob, read one held here, and fetch a
record's blob from a peer with a signed request."""

from __future__ import annotations

from typing import Final

import pydantic
from aiohttp import web

from carechain.consensus.crypto import stream_ciphertext_bytes
from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.consensus.ledger.records import RecordEntry
from carechain.consensus.ledger.state import Overlay, Table
from carechain.node.api.answers import INT, obj
from carechain.node.api.base import (
    HEX,
    ApiError,
    Body,
    Route,
    RouteFamily,
    Schema,
    parse_hex,
    read_body,
)
from carechain.node.blob_service import fetch_from_peer
from carechain.storage.blobs.store import from_bytes

CID: Final[Schema] = {"type": "string", "pattern": "^b[a-z2-7]{58}$"}


class FetchBlob(Body):
    request: str = pydantic.Field(
        description="signed BlobRequest, hex", max_length=8192, pattern=HEX
    )


class Blobs(RouteFamily):
    def routes(self) -> list[Route]:
        return [
            Route(
                "POST",
                "/v1/blobs",
                self.blob_put,
                "Store ciphertext (the body, raw bytes); returns its content id",
                success="201",
                raw_body="application/octet-stream",
                answer=obj(cid=CID, size=INT),
            ),
            Route(
                "GET",
                "/v1/blobs/{cid}",
                self.blob_get,
                "Read a blob stored here (verified)",
                parameters={"cid": CID},
                answer={"type": "string", "format": "binary"},
                answer_type="application/octet-stream",
            ),
            Route(
                "POST",
                "/v1/blobs/fetch",
                self.blob_fetch,
                "Fetch a record's blob from a peer with a signed request",
                body=FetchBlob,
                answer={"type": "string", "format": "binary"},
                answer_type="application/octet-stream",
                refusals={
                    "403": "no peer serves it to this reader (each peer's refusal is listed)",
                    "404": "no record on chain names that blob",
                },
            ),
        ]

    async def blob_put(self, request: web.Request) -> web.Response:
        data = await request.read()
        if not data:
            raise ApiError(
                400, "empty_body", "the body is empty: send the blob's bytes (its ciphertext)"
            )
        cid = await self.node.blobs.put(from_bytes(data))
        return web.json_response({"cid": cid, "size": len(data)}, status=201)

    async def blob_get(self, request: web.Request) -> web.Response:
        data = await self.node.blobs.read(request.match_info["cid"])
        return web.Response(body=data, content_type="application/octet-stream")

    async def blob_fetch(self, request: web.Request) -> web.Response:
        body = await read_body(request, FetchBlob)
        try:
            blob_request = BlobRequest.decode(parse_hex(body.request, "request"), max_bytes=8192)
        except CarechainError as exc:
            raise ApiError(400, "bad_request", f"not a blob request: {exc}") from None
        node = self.node
        key = blob_request.vault + blob_request.record_id
        entry = Overlay(node.store).load(Table.RECORD, key, RecordEntry)
        if entry is None or entry.content_id != blob_request.content_id:
            raise ApiError(404, "not_found", "no record on chain names that blob")
        size = stream_ciphertext_bytes(entry.size_bytes)
        if await node.blobs.has(blob_request.content_id):
            return web.Response(
                body=await node.blobs.read(blob_request.content_id, size=size),
                content_type="application/octet-stream",
            )
        refusals = []
        for peer in node.network.peers():
            try:
                data = await fetch_from_peer(node.network, peer, blob_request, size)
            except CarechainError as exc:
                refusals.append(f"{peer[-8:]}: {exc}")
                continue
            return web.Response(body=data, content_type="application/octet-stream")
        raise ApiError(403, "not_authorised", "; ".join(refusals) or "no peer holds this blob")
