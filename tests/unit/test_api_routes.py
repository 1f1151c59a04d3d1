"""The API's route families (node/api/) declare each route once, with schemas only for the
parameters its path has, and every route the router serves is declared (so the generated
OpenAPI document lists it)."""

from __future__ import annotations

from typing import cast

from carechain.node.api.app import ROUTER_PATHS, Api
from carechain.node.daemon import Node


def test_every_route_is_declared_once_and_reachable_by_its_router_path() -> None:
    routes = Api(cast(Node, None)).routes()
    keys = [(route.method, route.path) for route in routes]
    assert len(keys) == len(set(keys))
    for route in routes:
        names = {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        assert set(route.parameters) <= names, f"{route.path}: schemas for unknown parameters"
    assert set(ROUTER_PATHS) <= {route.path for route in routes}
