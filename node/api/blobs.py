"""The node's blob store (ciphertext only): store a blob, read one held here, and fetch a
record's blob from a peer with a signed request."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import pydantic
from aiohttp import web

from carechain.consensus.cid import ContentId, parse_cid
from carechain.consensus.crypto import stream_ciphertext_bytes
from carechain.consensus.errors import CarechainError
from carechain.consensus.ledger.blob_access import (
    REQUEST_HEADER,
    BlobAccessDenied,
    BlobRequest,
    authorise,
)
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
from carechain.storage.blobs.car import write_car
from carechain.storage.blobs.store import from_bytes

CID: Final[Schema] = {"type": "string", "pattern": "^b[a-z2-7]{58}$"}
log = logging.getLogger("carechain.node")
CAR: Final = "application/vnd.ipld.car"
RAW_BLOCK: Final = "application/vnd.ipld.raw"


# Served to one reader the ledger allows, now: no shared cache may keep it for another (or
# after a revocation or an erasure), whatever the id says of the bytes.
GATEWAY_HEADERS: Final = {"Cache-Control": "private, no-store"}


async def _chain_first(
    first: tuple[ContentId, bytes], rest: AsyncIterator[tuple[ContentId, bytes]]
) -> AsyncIterator[tuple[ContentId, bytes]]:
    yield first
    async for block in rest:
        yield block


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
                "GET",
                "/ipfs/{cid}",
                self.gateway,
                "IPFS trustless gateway: a record's blob as a CAR (Accept: "
                "application/vnd.ipld.car) or one of its blocks (application/vnd.ipld.raw), "
                f"for a reader whose signed blob request ({REQUEST_HEADER}, hex) the ledger "
                "allows, as a peer's over libp2p",
                parameters={"cid": CID},
                answer={"type": "string", "format": "binary"},
                answer_type=CAR,
                refusals={
                    "403": f"no {REQUEST_HEADER}, or the ledger does not let its reader read "
                    "this record, or the block is not part of the record's blob",
                    "406": f"neither {CAR} nor {RAW_BLOCK} is acceptable to the caller",
                },
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

    async def gateway(self, request: web.Request) -> web.StreamResponse:
        """The Trustless Gateway's two formats, for what a blob request allows: the reader
        signs a `BlobRequest` naming the record (as for a peer's node) and sends it in a
        header; the ledger's rules decide (`blob_access.authorise`); the caller checks every
        block against its id, as any IPFS client does. The reader files its read receipt on
        chain as after any fetch (the payload is ciphertext)."""
        wanted = self._format(request)
        blob_request = self._blob_request(request)
        node = self.node
        try:
            authorise(node.store, node.genesis.chain_id, blob_request, node.clock_ms())
        except BlobAccessDenied as exc:
            raise ApiError(403, "not_authorised", exc.message) from None
        cid, root = request.match_info["cid"], blob_request.content_id
        if wanted == RAW_BLOCK:
            if cid != root and parse_cid(cid) not in await node.blobs.tree(root):
                raise ApiError(403, "not_authorised", f"{cid} is not a block of {root}")
            block = await node.blobs.block(cid)
            return web.Response(body=block, content_type=RAW_BLOCK, headers=GATEWAY_HEADERS)
        if cid != root:
            raise ApiError(403, "not_authorised", f"the request names blob {root}, not {cid}")
        response = web.StreamResponse(
            headers={"Content-Type": f"{CAR}; version=1", **GATEWAY_HEADERS}
        )
        blocks = node.blobs.blocks(root)
        first = await anext(blocks)  # a missing or broken root is refused before any byte
        await response.prepare(request)
        try:
            async for piece in write_car(parse_cid(root), _chain_first(first, blocks)):
                await response.write(piece)
        except CarechainError as exc:
            # a block missing or damaged below the root: the status line is sent, so the only
            # honest answer left is to break the transfer off (the client sees it cut short)
            log.warning("the CAR of %s broke off: %s", root, exc)
            response.force_close()
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    @staticmethod
    def _format(request: web.Request) -> str:
        asked = request.query.get("format")
        if asked in ("car", "raw"):
            return CAR if asked == "car" else RAW_BLOCK
        accept = request.headers.get("Accept", "")
        for media in (part.split(";")[0].strip() for part in accept.split(",")):
            if media in (CAR, RAW_BLOCK):
                return media
        raise ApiError(
            406, "not_acceptable", f"this gateway serves {CAR} (a blob) or {RAW_BLOCK} (a block)"
        )

    @staticmethod
    def _blob_request(request: web.Request) -> BlobRequest:
        text = request.headers.get(REQUEST_HEADER)
        if text is None:
            raise ApiError(
                403,
                "not_authorised",
                f"a blob is served to a reader the ledger allows: send the {REQUEST_HEADER} "
                "header, a BlobRequest signed by the reader (hex)",
            )
        try:
            return BlobRequest.decode(parse_hex(text.strip(), REQUEST_HEADER), max_bytes=8192)
        except CarechainError as exc:
            raise ApiError(400, "bad_request", f"{REQUEST_HEADER}: {exc}") from None

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
