"""A stream of new blocks and partials, as newline-delimited JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from carechain.node.api.base import Route, RouteFamily


class Events(RouteFamily):
    def routes(self) -> list[Route]:
        return [
            Route(
                "GET",
                "/v1/events",
                self.events,
                "Stream of new blocks and partials (NDJSON): one JSON object per line, its kind in "
                "`event`",
                answer={"type": "string"},
                answer_type="application/x-ndjson",
            )
        ]

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
        except ConnectionResetError:  # the client left: routine, not an error
            return response
        finally:
            self.node.subscribers.discard(queue)
