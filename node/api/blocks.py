"""Committed blocks: one with its certificate, or only its transactions' ids."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from carechain.consensus.codec import to_json
from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.types import BlockHeader
from carechain.node.api.answers import HEX_TEXT, INT, array, obj, record
from carechain.node.api.base import ApiError, Route, RouteFamily, Schema, parse_int
from carechain.storage.state import HeightNotKept

BLOCK: Final[Schema] = obj(
    height=INT,
    hash=HEX_TEXT,
    header=record(BlockHeader),
    txs=array(HEX_TEXT),
    signers=array(HEX_TEXT),
    late_precommits=array(obj(validator=HEX_TEXT, signature=HEX_TEXT)),
    block=HEX_TEXT,
    certificate=HEX_TEXT,
)

HEIGHT: Final[Schema] = {"type": "string", "pattern": "^([1-9][0-9]{0,17}|latest)$"}


class Blocks(RouteFamily):
    def routes(self) -> list[Route]:
        height = {"height": HEIGHT}
        return [
            Route(
                "GET",
                "/v1/blocks/{height}",
                self.block,
                "A committed block with its certificate",
                parameters=height,
                answer=BLOCK,
            ),
            Route(
                "GET",
                "/v1/blocks/{height}/light",
                self.light_block,
                "What a light client checks a height with: the header and the certificate "
                "(canonical encodings) and the validator set that signs that height (its "
                "encoding, whose hash the header names)",
                parameters=height,
                answer=obj(height=INT, header=HEX_TEXT, certificate=HEX_TEXT, validators=HEX_TEXT),
                refusals={"410": "the state before that height is no longer kept here"},
            ),
            Route(
                "GET",
                "/v1/blocks/{height}/txs",
                self.block_txs,
                "The ids of a block's transactions",
                parameters=height,
                answer=obj(height=INT, hash=HEX_TEXT, txs=array(HEX_TEXT)),
            ),
        ]

    def _committed_height(self, request: web.Request) -> int:
        text = request.match_info["height"]
        height = self.node.store.height if text == "latest" else parse_int(text, "height")
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

    async def light_block(self, request: web.Request) -> web.Response:
        height = self._committed_height(request)
        store = self.node.store
        try:
            before = store.state.reader_at(height - 1)
        except HeightNotKept as exc:
            raise ApiError(410, exc.code, str(exc)) from None
        return web.json_response(
            {
                "height": height,
                "header": store.header(height).encode().hex(),
                "certificate": store.certificate_bytes(height).hex(),
                "validators": validator_set_at(before, height).encode().hex(),
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
                # precommits for this block that came after the certificate was made (this
                # node's record, apart from the certified chain; an audit checks each)
                "late_precommits": [
                    {"validator": p.validator.hex(), "signature": p.signature.hex()}
                    for p in self.node.store.late_precommits(height)
                ],
                "block": block.encode().hex(),
                "certificate": certificate.encode().hex(),
            }
        )
