"""Canonical msgpack: a wire value to exactly one byte string, and back.

A wire value (`Wire`) is what msgpack carries in our canonical subset: integers, booleans,
bytes (always msgpack `bin`), text (always `str`), nil and arrays of these. Maps (free key
order), floats and extension types never appear. msgpack itself accepts several encodings of
one value (non-minimal integer widths, non-minimal length headers), so decoding re-encodes what
it read and rejects the input if the bytes differ. Every decode takes a size limit. The typed
records built on these values are in `codec.py`.
"""

from __future__ import annotations

import typing
from typing import Any

import msgpack

from carechain.consensus.errors import DecodeError

UINT64_MAX = 2**64 - 1
INT64_MIN = -(2**63)
DECODE_BYTES_MAX_DEFAULT = 4 * 1024 * 1024

# A value msgpack can carry in our canonical subset.
Wire = int | bool | bytes | str | None | list["Wire"]


def _reject_map(pairs: list[tuple[Any, Any]]) -> Any:
    raise DecodeError("maps are not canonical; records are arrays", code="non_canonical")


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed", code="non_canonical")


def pack(value: Wire) -> bytes:
    """Encode a wire value (already in the canonical subset) to msgpack bytes."""
    return typing.cast(bytes, msgpack.packb(value, use_bin_type=True, strict_types=True))


def array_header(length: int) -> bytes:
    """The msgpack header of an array of `length` items, in its shortest form: an array's
    encoding is this followed by its items' encodings, so encodings can be joined."""
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def unpack(data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Wire:
    """Decode msgpack bytes, rejecting anything that is not the canonical encoding."""
    value = unpack_canonical(data, max_bytes)
    _check_wire(value, depth=0)
    return value


def unpack_canonical(data: bytes, max_bytes: int) -> Wire:
    """Decode and check the bytes are the canonical encoding. Values are not walked: typed
    decoding checks every field's type itself (so floats and the like fail there)."""
    if len(data) > max_bytes:
        raise DecodeError(f"input is {len(data)} bytes, limit is {max_bytes}", code="oversize")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            object_pairs_hook=_reject_map,
            ext_hook=_reject_ext,
            timestamp=0,
        )
    except DecodeError:
        raise
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after the value", code="trailing_bytes") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"malformed msgpack: {exc}", code="malformed") from exc
    try:
        canonical = pack(value)
    except TypeError as exc:  # a value msgpack decodes but we never encode (a timestamp)
        raise DecodeError(f"value is not allowed: {exc}", code="malformed") from exc
    if canonical != data:
        raise DecodeError(
            "bytes are not the canonical encoding of their value", code="non_canonical"
        )
    return typing.cast(Wire, value)


_DEPTH_MAX = 32


def _check_wire(value: object, depth: int) -> None:
    if depth > _DEPTH_MAX:
        raise DecodeError(f"nesting deeper than {_DEPTH_MAX}", code="malformed")
    if isinstance(value, list):
        for item in value:
            _check_wire(item, depth + 1)
    elif isinstance(value, float):
        raise DecodeError("floats are not allowed", code="non_canonical")
    elif value is not None and not isinstance(value, int | bytes | str):
        raise DecodeError(f"value of type {type(value).__name__} is not allowed", code="malformed")
