"""Canonical encoding: one value, exactly one byte string.

Every consensus object is a `Record`: a frozen dataclass encoded as a msgpack array
`[VERSION, field1, field2, ...]` in declaration order. Maps (free key order) and floats never
appear; bytes are always msgpack `bin`, text always `str`; integers are unsigned 64-bit unless a
field says otherwise. msgpack itself accepts several encodings of one value (non-minimal integer
widths, non-minimal length headers), so decoding re-encodes what it read and rejects the input if
the bytes differ. Every decode takes a size limit.

Field types a record may declare:
    int, bool, str, bytes, IntEnum subclasses, nested records, `X | None`, `tuple[X, ...]`,
    and any of these wrapped in `Annotated[..., Size(lo, hi)]` (length of bytes, str, tuple)
    or `Annotated[int, IntRange(lo, hi)]`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import types
import typing
from collections.abc import Callable, Sized
from typing import Any, ClassVar, Self, TypeVar

import msgpack

from carechain.consensus.errors import DecodeError, InvalidInput

UINT64_MAX = 2**64 - 1
INT64_MIN = -(2**63)
DECODE_BYTES_MAX_DEFAULT = 4 * 1024 * 1024

# A value msgpack can carry in our canonical subset.
Wire = int | bool | bytes | str | None | list["Wire"]


@dataclasses.dataclass(frozen=True, slots=True)
class Size:
    """Inclusive length bounds for bytes, str and tuple fields."""

    lo: int = 0
    hi: int = DECODE_BYTES_MAX_DEFAULT


@dataclasses.dataclass(frozen=True, slots=True)
class IntRange:
    """Inclusive value bounds for an int field (default: unsigned 64-bit)."""

    lo: int = 0
    hi: int = UINT64_MAX


class EncodeError(InvalidInput):
    """A value cannot be encoded: wrong type or out of bounds for its field."""

    code = "encode_error"


def _reject_map(pairs: list[tuple[Any, Any]]) -> Any:
    raise DecodeError("maps are not canonical; records are arrays", code="non_canonical")


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed", code="non_canonical")


def pack(value: Wire) -> bytes:
    """Encode a wire value (already in the canonical subset) to msgpack bytes."""
    return typing.cast(bytes, msgpack.packb(value, use_bin_type=True, strict_types=True))


def unpack(data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Wire:
    """Decode msgpack bytes, rejecting anything that is not the canonical encoding."""
    value = _unpack_canonical(data, max_bytes)
    _check_wire(value, depth=0)
    return value


def _unpack_canonical(data: bytes, max_bytes: int) -> Wire:
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


# --- typed records -------------------------------------------------------------------------

ToWire = Callable[[Any, str], Wire]
FromWire = Callable[[Wire, str], Any]


def _bounds(meta: tuple[Any, ...], kind: type) -> Any:
    for item in meta:
        if isinstance(item, kind):
            return item
    return kind()


def _converter(tp: Any) -> tuple[ToWire, FromWire]:  # noqa: PLR0911 - one return per kind
    """Build (to_wire, from_wire) for one field type; both check type and bounds."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        tp, *rest = typing.get_args(tp)
        meta = tuple(rest)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"only `X | None` unions are supported, got {tp}")
        return _optional(_converter(args[0]))
    if origin is tuple:
        item_tp, ellipsis = typing.get_args(tp)
        if ellipsis is not Ellipsis:
            raise TypeError(f"only tuple[X, ...] is supported, got {tp}")
        return _sequence(_converter(item_tp), _bounds(meta, Size))
    if isinstance(tp, type) and issubclass(tp, Record):
        return _nested(tp)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return _int_enum(tp)
    if tp is bool:
        return _scalar(bool, "a boolean")
    if tp is int:
        return _integer(_bounds(meta, IntRange))
    if tp is bytes:
        return _sized(bytes, "bytes", _bounds(meta, Size))
    if tp is str:
        return _sized(str, "text", _bounds(meta, Size))
    raise TypeError(f"unsupported field type {tp!r}")


def _fail(where: str, expected: str, got: object, *, decoding: bool) -> InvalidInput:
    shown = type(got).__name__ if not isinstance(got, int | str) else repr(got)[:40]
    message = f"{where}: expected {expected}, got {shown}"
    return DecodeError(message) if decoding else EncodeError(message)


def _scalar(tp: type, expected: str) -> tuple[ToWire, FromWire]:
    def to_wire(v: Any, where: str) -> Wire:
        if type(v) is not tp:
            raise _fail(where, expected, v, decoding=False)
        return typing.cast(Wire, v)

    def from_wire(v: Wire, where: str) -> Any:
        if type(v) is not tp:
            raise _fail(where, expected, v, decoding=True)
        return v

    return to_wire, from_wire


def _integer(bounds: IntRange) -> tuple[ToWire, FromWire]:
    expected = f"an integer in [{bounds.lo}, {bounds.hi}]"

    def check(v: Any, where: str, decoding: bool) -> int:
        if type(v) is not int or not bounds.lo <= v <= bounds.hi:
            raise _fail(where, expected, v, decoding=decoding)
        return v

    return (lambda v, w: check(v, w, False)), (lambda v, w: check(v, w, True))


def _sized(tp: type, name: str, size: Size) -> tuple[ToWire, FromWire]:
    expected = (
        f"{name} of length {size.lo}"
        if size.lo == size.hi
        else f"{name} of length {size.lo}..{size.hi}"
    )

    def check(v: Any, where: str, decoding: bool) -> Any:
        if type(v) is not tp or not size.lo <= len(typing.cast(Sized, v)) <= size.hi:
            raise _fail(where, expected, v, decoding=decoding)
        return v

    return (lambda v, w: check(v, w, False)), (lambda v, w: check(v, w, True))


def _optional(inner: tuple[ToWire, FromWire]) -> tuple[ToWire, FromWire]:
    to_inner, from_inner = inner
    return (
        lambda v, w: None if v is None else to_inner(v, w),
        lambda v, w: None if v is None else from_inner(v, w),
    )


def _sequence(inner: tuple[ToWire, FromWire], size: Size) -> tuple[ToWire, FromWire]:
    to_inner, from_inner = inner
    expected = f"a list of {size.lo}..{size.hi} items"

    def to_wire(v: Any, where: str) -> Wire:
        if type(v) is not tuple or not size.lo <= len(v) <= size.hi:
            raise _fail(where, expected, v, decoding=False)
        return [to_inner(item, f"{where}[{i}]") for i, item in enumerate(v)]

    def from_wire(v: Wire, where: str) -> Any:
        if type(v) is not list or not size.lo <= len(v) <= size.hi:
            raise _fail(where, expected, v, decoding=True)
        return tuple(from_inner(item, f"{where}[{i}]") for i, item in enumerate(v))

    return to_wire, from_wire


def _int_enum(tp: type[enum.IntEnum]) -> tuple[ToWire, FromWire]:
    members = {m.value: m for m in tp}
    expected = f"one of {sorted(members)} ({tp.__name__})"

    def to_wire(v: Any, where: str) -> Wire:
        if not isinstance(v, tp):
            raise _fail(where, expected, v, decoding=False)
        return int(v)

    def from_wire(v: Wire, where: str) -> Any:
        if type(v) is not int or v not in members:
            raise _fail(where, expected, v, decoding=True)
        return members[v]

    return to_wire, from_wire


def _nested(tp: type[Record]) -> tuple[ToWire, FromWire]:
    def to_wire(v: Any, where: str) -> Wire:
        if type(v) is not tp:
            raise _fail(where, tp.__name__, v, decoding=False)
        return v.to_wire(where)

    return to_wire, tp.from_wire


R = TypeVar("R", bound="Record")


class Record:
    """Base of every canonically encoded value. Subclasses are frozen dataclasses.

    `VERSION` is the first array element; a decoder refuses a version it does not know, so a
    format change is always explicit.
    """

    VERSION: ClassVar[int] = 1
    _fields: ClassVar[tuple[tuple[str, ToWire, FromWire], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = ()  # compiled lazily: annotations may refer to later classes

    @classmethod
    def _compiled(cls) -> tuple[tuple[str, ToWire, FromWire], ...]:
        if not cls._fields:
            hints = typing.get_type_hints(cls, include_extras=True)
            cls._fields = tuple(
                (f.name, *_converter(hints[f.name]))
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            )
        return cls._fields

    def to_wire(self, where: str = "") -> Wire:
        where = where or type(self).__name__
        out: list[Wire] = [self.VERSION]
        for name, to_wire, _ in self._compiled():
            out.append(to_wire(getattr(self, name), f"{where}.{name}"))
        return out

    @classmethod
    def from_wire(cls, value: Wire, where: str = "") -> Self:
        where = where or cls.__name__
        fields = cls._compiled()
        if type(value) is not list or len(value) != len(fields) + 1:
            raise DecodeError(f"{where}: expected an array of {len(fields) + 1} items")
        if value[0] != cls.VERSION or type(value[0]) is not int:
            raise DecodeError(
                f"{where}: unsupported version {value[0]!r}, this node reads {cls.VERSION}",
                code="unsupported_version",
            )
        kwargs = {
            name: from_wire(item, f"{where}.{name}")
            for (name, _, from_wire), item in zip(fields, value[1:], strict=True)
        }
        return cls(**kwargs)

    def encode(self) -> bytes:
        return pack(self.to_wire())

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Self:
        return cls.from_wire(_unpack_canonical(data, max_bytes))

    def hash(self) -> bytes:
        """sha256 of the canonical encoding."""
        return hashlib.sha256(self.encode()).digest()
