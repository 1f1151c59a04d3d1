"""The API split into route families (node/api/) serves the same document: its paths,
methods, parameters, bodies and answers equal those of the single module it replaced (a copy
taken before the move, kept until the layout work of node/ and cli/ is done), and every
route's handler answers at the path the router serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from carechain.node.api.app import ROUTER_PATHS, Api
from carechain.node.daemon import Node

BEFORE = Path(__file__).parent.parent / "data" / "openapi_before_layout.json"


def test_the_generated_document_equals_the_one_before_the_split() -> None:
    api = Api(cast(Node, None))  # the routes' declarations need no node
    before = json.loads(BEFORE.read_text())
    after = json.loads(json.dumps(api.document()))
    assert list(after["paths"]) == list(before["paths"]), "the same paths, in the same order"
    for path, operations in before["paths"].items():
        assert after["paths"][path] == operations, path
    assert after == before


def test_every_route_is_declared_once_and_reachable_by_its_router_path() -> None:
    routes = Api(cast(Node, None)).routes()
    keys = [(route.method, route.path) for route in routes]
    assert len(keys) == len(set(keys))
    for route in routes:
        names = {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        assert set(route.parameters) <= names, f"{route.path}: schemas for unknown parameters"
    assert set(ROUTER_PATHS) <= {route.path for route in routes}
