"""Prometheus metrics: height, pools, peers, round."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from carechain.node.api.base import Route, RouteFamily
from carechain.node.daemon import Node


class Metrics(RouteFamily):
    def __init__(self, node: Node) -> None:
        super().__init__(node)
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

    def routes(self) -> list[Route]:
        return [Route("GET", "/metrics", self.metrics, "Prometheus metrics")]

    async def metrics(self, request: web.Request) -> web.Response:
        node = self.node
        self.height.set(node.store.height)
        self.mempool.set(len(node.mempool))
        self.partials.set(len(node.partials))
        self.peers.set(len(node.network.peers()))
        self.round.set(node.engine.state.round if node.engine.state else 0)
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")
