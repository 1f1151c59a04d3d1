"""Prometheus metrics: what an operator graphs and alerts on.

Height, pools, peers and round; the interval between committed blocks; each validator's late
votes (its precommit came after the certificate was made, which keeps the first quorum) and
missed ones (none came before the next height committed); transactions refused, by reason
and where; p2p bytes and drops by lane; and the API's latency by route. The node counts as it
commits (`node.tally.CommitTally`); a scrape reads the counts and takes the intervals it
gathered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from carechain.node.api.base import Handler, Route, RouteFamily
from carechain.node.daemon import Node

BLOCK_INTERVAL_BUCKETS_S: Final = (0.25, 0.5, 1, 2, 3, 5, 10, 20, 60)
API_LATENCY_BUCKETS_S: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)


class NodeCounters(Collector):
    """What the node counts, as Prometheus counters, read at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily]:
        node = self.node
        refused = CounterMetricFamily(
            "carechain_tx_rejections",
            "transactions refused: at admission, or dropped from the mempool or partial pool",
            labels=["reason", "where"],
        )
        for reason, count in sorted(node.admission.refused.items()):
            refused.add_metric([reason, "admission"], count)
        for reason, count in sorted(node.mempool.rejection_counts.items()):
            refused.add_metric([reason, "pool"], count)
        yield refused
        network = node.network
        yield _counters("p2p_sent_bytes", "direct frames queued to peers", "lane",
                        network.sent_bytes())  # fmt: skip
        yield _counters("p2p_received_bytes", "payloads taken in from peers", "lane",
                        network.inbox.received_bytes)  # fmt: skip
        yield _counters("p2p_dropped", "messages the p2p layer dropped", "where",
                        network.drops())  # fmt: skip
        yield _counters("p2p_refused_peers", "peers refused at the handshake", "cause",
                        network.refused_peers())  # fmt: skip
        if node.heartbeats is not None:
            yield _counters("heartbeats_dropped", "UDP heartbeats dropped", "cause",
                            node.heartbeats.dropped_by)  # fmt: skip
        yield _counters(
            "validator_late_votes",
            "heights whose precommit from this validator came after the certificate was made",
            "validator",
            node.tally.late_votes,
        )
        yield _counters(
            "validator_missed_votes",
            "heights this validator did not precommit before the next height was committed",
            "validator",
            node.tally.missed_votes,
        )


def _counters(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(f"carechain_{name}", documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


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
        self.block_interval = Histogram(
            "carechain_block_interval_seconds",
            "time between a block and the one before it (their proposers' clocks)",
            buckets=BLOCK_INTERVAL_BUCKETS_S,
            registry=self.registry,
        )
        self.api_latency = Histogram(
            "carechain_api_request_seconds",
            "API requests, from arrival to the answer (event streams excluded)",
            labelnames=["method", "route", "status"],
            buckets=API_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(NodeCounters(node))

    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/metrics",
                self.metrics,
                "Prometheus metrics (text exposition format)",
                answer={"type": "string"},
                answer_type="text/plain",
            )
        ]

    @web.middleware
    async def timing(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request's latency, by its route's declared path (not the raw URL)."""
        started = time.monotonic()
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        if route != "/v1/events":
            self.api_latency.labels(request.method, route, str(response.status)).observe(
                time.monotonic() - started
            )
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        node = self.node
        self.height.set(node.store.height)
        self.mempool.set(len(node.mempool))
        self.partials.set(len(node.partials))
        self.peers.set(len(node.network.peers()))
        self.round.set(node.engine.state.round if node.engine.state else 0)
        intervals = node.tally.block_intervals_s
        while intervals:
            self.block_interval.observe(intervals.popleft())
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")
