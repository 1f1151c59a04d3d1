"""The JSON Schemas of the API's answers, for the OpenAPI document (`openapi.py`): built from
the ledger's own record types where an answer is a record (`record`: bytes as hex, enums by
lower-case name, as `base.to_json` writes them), and spelled out where it is not. The API fuzz
test (`tests/fuzz/test_api.py`) checks every answer a real node gives against them."""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, Final

from carechain.consensus.codec import IntRange, Record, Size
from carechain.node.api.base import Schema

HEX_TEXT: Final[Schema] = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
HEX_32: Final[Schema] = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
INT: Final[Schema] = {"type": "integer"}
NUMBER: Final[Schema] = {"type": "number"}
STR: Final[Schema] = {"type": "string"}
BOOL: Final[Schema] = {"type": "boolean"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(optional: dict[str, Schema] | None = None, **required: Schema) -> Schema:
    """An object with these fields (each present), plus `optional` ones that may be absent."""
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


def mapping(values: Schema) -> Schema:
    """An object whose keys are names and whose values all have one schema."""
    return {"type": "object", "additionalProperties": values}


def extend(base: Schema, **required: Schema) -> Schema:
    """`base` (an object schema) with more required fields."""
    return {
        "type": "object",
        "required": sorted({*base["required"], *required}),
        "properties": {**base["properties"], **required},
    }


@functools.cache
def record(kind: type[Record]) -> Schema:
    """A record as `base.to_json` writes it: every field, by its declared type. A record
    inside itself (a policy's nested rules) is an object there, not spelled out again."""
    return _record(kind, frozenset())


def _record(kind: type[Record], within: frozenset[type]) -> Schema:
    if kind in within:
        return {"type": "object"}
    hints = typing.get_type_hints(kind, include_extras=True)
    inner = within | {kind}
    fields = {
        field.name: _of(hints[field.name], inner)
        for field in dataclasses.fields(kind)  # type: ignore[arg-type]
    }
    return obj(**fields)


def _of(hint: Any, within: frozenset[type]) -> Schema:  # noqa: PLR0911 - a return per kind
    bounds: list[Any] = []
    if typing.get_origin(hint) is typing.Annotated:
        hint, *bounds = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_of(arg, within) for arg in typing.get_args(hint)]
        return {"anyOf": options}
    if hint is type(None):
        return {"type": "null"}
    if hint is bytes:
        size = next((b for b in bounds if isinstance(b, Size)), None)
        if size is not None and size.lo == size.hi:
            return {"type": "string", "pattern": f"^[0-9a-f]{{{2 * size.lo}}}$"}
        return HEX_TEXT
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.name.lower() for member in hint]}
    if hint is bool:
        return BOOL
    if hint is int:
        value_range = next((b for b in bounds if isinstance(b, IntRange)), None)
        if value_range is None:
            return INT
        return {"type": "integer", "minimum": value_range.lo, "maximum": value_range.hi}
    if hint is str:
        return STR
    if origin is tuple:
        return array(_of(typing.get_args(hint)[0], within))
    if isinstance(hint, type) and issubclass(hint, Record):
        return _record(hint, within)
    return {}  # a type this document does not spell out: any JSON value
