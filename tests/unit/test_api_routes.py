"""The API's route families (node/api/) declare each route once, with schemas only for the
parameters its path has, and every route the router serves is declared (so the generated
OpenAPI document lists it)."""

from __future__ import annotations

import dataclasses
from typing import cast

from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import Grant, Vault
from carechain.node.api.answers import record
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


def test_every_route_says_what_it_answers_and_raw_bodies_are_documented() -> None:
    """Each success answer has a schema in the OpenAPI document (the API fuzz test checks the
    node's real answers against them); `POST /v1/blobs` documents its raw body."""
    api = Api(cast(Node, None))
    document = api.document()
    for route in api.routes():
        success = document["paths"][route.path][route.method.lower()]["responses"][route.success]
        assert "content" in success, f"{route.method} {route.path} documents no answer"
        [(media, content)] = success["content"].items()
        assert media == route.answer_type
        assert content["schema"], f"{route.method} {route.path}: an empty schema"
    blob_body = document["paths"]["/v1/blobs"]["post"]["requestBody"]["content"]
    assert blob_body == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }


def test_a_records_answer_schema_follows_its_declared_fields() -> None:
    vault = record(Vault)
    assert set(vault["required"]) == {f.name for f in dataclasses.fields(Vault)}
    assert vault["properties"]["vault_id"] == {"type": "string", "pattern": "^[0-9a-f]{40}$"}
    assert vault["properties"]["template"]["enum"] == [t.name.lower() for t in Template]
    grant = record(Grant)
    assert grant["properties"]["revoked_height"] == {
        "anyOf": [{"type": "integer"}, {"type": "null"}]
    }
