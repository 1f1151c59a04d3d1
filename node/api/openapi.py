"""The OpenAPI 3.1 document, generated from the routes' own declarations (`base.Route`):
their paths, methods, summaries, path parameters' schemas, request bodies and the answers
each may give."""

from __future__ import annotations

from typing import Any, Final

from carechain.node.api.base import Route, Schema

ERROR_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def _operation(route: Route) -> dict[str, Any]:
    names = [part[1:-1] for part in route.path.split("/") if part.startswith("{")]
    success: dict[str, Any] = {"description": "success"}
    if route.answer is not None:
        success["content"] = {route.answer_type: {"schema": route.answer}}
    responses: dict[str, Any] = {
        route.success: success,
        "400": _error("the caller's mistake: what was wrong, in `error` and `message`"),
    }
    if names:
        responses["404"] = _error("nothing of that name here")
    if route.method == "POST":
        responses["413"] = _error("the body exceeds `api.body_bytes_max`")
    for status, why in route.refusals.items():
        responses[status] = _error(why)
    if route.pool_full:
        responses["503"] = _error("the node's pool is full: retry after the Retry-After seconds")
    operation: dict[str, Any] = {"summary": route.summary, "responses": responses}
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": route.parameters.get(name, {"type": "string"}),
        }
        for name in names
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in route.query.items()
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": route.body.model_json_schema()}},
        }
    elif route.raw_body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.raw_body: {"schema": {"type": "string", "format": "binary"}}},
        }
    return operation


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "carechain node API", "version": "1"},
        "paths": paths,
    }
