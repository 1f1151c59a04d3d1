"""What every route family of the API shares: how a route is declared (`Route`: the OpenAPI
document is generated from these), request bodies, typed refusals and the middleware that
turns them into JSON, and records as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import pydantic
from aiohttp import web

from carechain.consensus.crypto import decode_address
from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.node.daemon import Node
from carechain.node.pools import PoolFull

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

HEX: Final = r"^([0-9a-f]{2})+$"
# a transaction as hex, as long as the largest any genesis allows (the node then holds it to
# its own chain's max_tx_bytes, naming the limit)
TX_HEX_MAX: Final = 2 * LIMITS_AT_CAP.tx_bytes
HEX_64: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
HEX_40: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{40}$"}
ADDRESS: Final[Schema] = {
    "type": "string",
    "pattern": "^(cc1[02-9ac-hj-np-z]{38}|[0-9a-f]{40})$",
}


class Body(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True)


@dataclasses.dataclass(frozen=True)
class Route:
    """One route, declared where its handler lives: what the router serves and what the
    OpenAPI document says of it."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[Body] | None = None  # the JSON body a POST takes
    parameters: dict[str, Schema] = dataclasses.field(default_factory=dict)  # by name
    query: dict[str, Schema] = dataclasses.field(default_factory=dict)  # optional, by name
    success: str = "200"
    pool_full: bool = False  # may answer 503 (the pool is full); a batch says so per item
    answer: Schema | None = None  # the success answer's JSON Schema (`answers.py`)
    answer_type: str = "application/json"  # the success answer's media type
    raw_body: str | None = None  # a POST that takes raw bytes: their media type
    refusals: dict[str, str] = dataclasses.field(default_factory=dict)  # more statuses: why


class RouteFamily:
    """A family of routes over the node: its handlers, and their declarations (`routes`)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def routes(self) -> list[Route]:
        raise NotImplementedError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_account(text: str) -> bytes:
    """An account by address (cc1...) or hex id."""
    return decode_address(text) if text.startswith("cc1") else parse_hex(text, "address")


def parse_hex(value: str, field: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ApiError(400, "bad_hex", f"{field} is not hex") from None


def parse_int(text: str, field: str) -> int:
    if not (text.isascii() and text.isdigit()):  # "²".isdigit() is true; int() refuses it
        raise ApiError(400, "bad_field", f"{field} must be a whole number")
    return int(text)


async def read_body(request: web.Request, model: type[Body]) -> Any:
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
