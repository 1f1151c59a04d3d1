"""The node's local HTTP JSON API (aiohttp), bound to 127.0.0.1 by default: the application,
its middleware and its routes, gathered from one module per route family.

Every error is JSON `{"error": <reason code>, "message": ...}` with a 4xx status for the
caller's mistakes (malformed JSON, unknown fields, oversize bodies, bad signatures, a wrong
chain id, ledger rejections) and never stops the node. `GET /openapi.json` describes every
route, generated from the routes' declarations; `GET /metrics` serves Prometheus metrics;
`GET /v1/events` streams new blocks and partial transactions as newline-delimited JSON.

A new route goes in the module of its family (or a new one), declared with `base.Route`, and
that family's `routes()` is listed in `Api.routes` below.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from carechain.node.api.answers import STR, obj
from carechain.node.api.base import Route, errors
from carechain.node.api.blobs import Blobs
from carechain.node.api.blocks import Blocks
from carechain.node.api.console import mount_console
from carechain.node.api.events import Events
from carechain.node.api.metrics import Metrics
from carechain.node.api.openapi import openapi_document
from carechain.node.api.state import State
from carechain.node.api.status import Status
from carechain.node.api.transactions import Transactions
from carechain.node.daemon import Node

# A parameter may not take the name of a sibling route (`/v1/txs/batch` is not a transaction
# id), or a 405 there would advertise the sibling's methods too.
ROUTER_PATHS: Final = {
    "/v1/txs/{id}": "/v1/txs/{id:(?!batch$|check$)[^/]+}",
    "/v1/blobs/{cid}": "/v1/blobs/{cid:(?!fetch$)[^/]+}",
}


class Api:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.status = Status(node)
        self.transactions = Transactions(node)
        self.state = State(node)
        self.blocks = Blocks(node)
        self.blobs = Blobs(node)
        self.events = Events(node)
        self.metrics = Metrics(node)

    def app(self) -> web.Application:
        application = web.Application(
            middlewares=[self.metrics.timing, errors],
            client_max_size=self.node.config.api.body_bytes_max,
        )
        for route in self.routes():
            path = ROUTER_PATHS.get(route.path, route.path)
            application.router.add_route(route.method, path, route.handler)
        if self.node.config.api.console:
            mount_console(application)
        return application

    def routes(self) -> list[Route]:
        return [
            *self.status.routes(),
            *self.transactions.routes(),
            *self.state.routes(),
            *self.blocks.routes(),
            *self.blobs.routes(),
            *self.events.routes(),
            *self.metrics.routes(),
            Route(
                "GET",
                "/openapi.json",
                self.openapi,
                "This document",
                answer=obj(openapi=STR, info={"type": "object"}, paths={"type": "object"}),
            ),
        ]

    def document(self) -> dict[str, Any]:
        return openapi_document(self.routes())

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.document())


async def serve(api: Api, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
