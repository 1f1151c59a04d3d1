"""Canonical encoding of records: one value, exactly one byte string.

Every consensus object is a `Record`: a frozen dataclass encoded as a msgpack array
`[VERSION, field1, field2, ...]` in declaration order, in the canonical msgpack of `wire.py`
(no maps or floats, bytes always `bin`, text always `str`, input that is not the one encoding of
its value refused, a size limit on every decode). Integers are unsigned 64-bit unless a field
says otherwise. Every field is checked against its declared type and bounds, both ways.

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

from carechain.consensus.errors import DecodeError, InvalidInput
from carechain.consensus.wire import (
    DECODE_BYTES_MAX_DEFAULT,
    UINT64_MAX,
    Wire,
    pack,
    unpack_canonical,
)


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


# --- typed records -------------------------------------------------------------------------

ToWire = Callable[[Any, str], Wire]
FromWire = Callable[[Wire, str], Any]


def _bounds(meta: tuple[Any, ...], kind: type) -> Any:
    for item in meta:
        if isinstance(item, kind):
            return item
    return kind()


def _unwrap(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(tp) is typing.Annotated:
        tp, *rest = typing.get_args(tp)
        return tp, tuple(rest)
    return tp, ()


def _converter(tp: Any) -> tuple[ToWire, FromWire]:  # noqa: PLR0911 - one return per kind
    """Build (to_wire, from_wire) for one field type; both check type and bounds."""
    tp, meta = _unwrap(tp)
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


# --- compiled fast paths ------------------------------------------------------------------
#
# The converters above check each field with its location, for the error messages. Every
# record class also gets a pair of functions generated from its fields (as `dataclasses`
# generates `__init__`): the same checks inline, without building location strings. They
# raise `_Slow` on anything unexpected and the record then runs the checked path, which
# raises the located error; so both accept exactly the same values and the fast path only
# changes the speed.


class _Slow(Exception):
    """The fast path met something it does not accept: run the checked path."""


_SLOW = _Slow()


class _Compiled(dict[type, Callable[[Any], Any]]):
    """Record class -> its generated function, made on first use (records may nest
    themselves, so a function names others by class and finds them here when it runs)."""

    def __init__(self, make: Callable[[type[Record]], Callable[[Any], Any]]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, cls: type[Record]) -> Callable[[Any], Any]:
        function = self.make(cls)
        self[cls] = function
        return function


class _Source:
    """Lines of a generated function and the names it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"_SLOW": _SLOW}
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def name(self, value: Any) -> str:
        label = self.fresh("k")
        self.names[label] = value
        return label

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _emit(source: _Source, tp: Any, src: str, dst: str, indent: int, decoding: bool) -> None:
    """Lines that check `src` as a value of field type `tp` and set `dst` to its conversion
    (wire -> value when decoding, value -> wire when encoding), or raise `_SLOW`."""
    tp, meta = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        source.add(indent, f"if {src} is None:")
        source.add(indent + 1, f"{dst} = None")
        source.add(indent, "else:")
        _emit(source, inner, src, dst, indent + 1, decoding)
        return
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        size = _bounds(meta, Size)
        container = "list" if decoding else "tuple"
        items, item, converted = source.fresh("l"), source.fresh("i"), source.fresh("c")
        source.add(
            indent,
            f"if type({src}) is not {container} or not {size.lo} <= len({src}) <= {size.hi}:",
        )
        source.add(indent + 1, "raise _SLOW")
        source.add(indent, f"{items} = []")
        source.add(indent, f"for {item} in {src}:")
        _emit(source, item_tp, item, converted, indent + 1, decoding)
        source.add(indent + 1, f"{items}.append({converted})")
        source.add(indent, f"{dst} = tuple({items})" if decoding else f"{dst} = {items}")
        return
    if isinstance(tp, type) and issubclass(tp, Record):
        if not decoding:
            source.add(indent, f"if type({src}) is not {source.name(tp)}:")
            source.add(indent + 1, "raise _SLOW")
        table = source.name(_DECODERS if decoding else _ENCODERS)
        source.add(indent, f"{dst} = {table}[{source.name(tp)}]({src})")
        return
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        if decoding:
            members = source.name({m.value: m for m in tp})
            source.add(indent, f"if type({src}) is not int or {src} not in {members}:")
            source.add(indent + 1, "raise _SLOW")
            source.add(indent, f"{dst} = {members}[{src}]")
        else:
            source.add(indent, f"if not isinstance({src}, {source.name(tp)}):")
            source.add(indent + 1, "raise _SLOW")
            source.add(indent, f"{dst} = int({src})")
        return
    if tp is bool:
        source.add(indent, f"if type({src}) is not bool:")
    elif tp is int:
        bounds = _bounds(meta, IntRange)
        source.add(indent, f"if type({src}) is not int or not {bounds.lo} <= {src} <= {bounds.hi}:")
    elif tp in (bytes, str):
        size = _bounds(meta, Size)
        source.add(
            indent,
            f"if type({src}) is not {tp.__name__} or not {size.lo} <= len({src}) <= {size.hi}:",
        )
    else:
        raise TypeError(f"unsupported field type {tp!r}")
    source.add(indent + 1, "raise _SLOW")
    source.add(indent, f"{dst} = {src}")


def _field_types(cls: type[Record]) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init for f in fields):
        raise TypeError(f"{cls.__name__}: every field of a record is set by its constructor")
    return [(f.name, hints[f.name]) for f in fields]


def _make_decoder(cls: type[Record]) -> Callable[[Any], Any]:
    source = _Source()
    fields = _field_types(cls)
    source.add(0, "def decode(value):")
    source.add(
        1,
        f"if type(value) is not list or len(value) != {len(fields) + 1} "
        f"or type(value[0]) is not int or value[0] != {cls.VERSION}:",
    )
    source.add(2, "raise _SLOW")
    results = []
    for index, (_, tp) in enumerate(fields, start=1):
        item, result = source.fresh("w"), source.fresh("v")
        source.add(1, f"{item} = value[{index}]")
        _emit(source, tp, item, result, 1, decoding=True)
        results.append(result)
    source.add(1, f"return {source.name(cls)}({', '.join(results)})")
    return _define(source, "decode")


def _make_encoder(cls: type[Record]) -> Callable[[Any], Any]:
    source = _Source()
    source.add(0, "def encode(record):")
    results = []
    for name, tp in _field_types(cls):
        item, result = source.fresh("v"), source.fresh("w")
        source.add(1, f"{item} = record.{name}")
        _emit(source, tp, item, result, 1, decoding=False)
        results.append(result)
    source.add(1, f"return [{', '.join([str(cls.VERSION), *results])}]")
    return _define(source, "encode")


def _define(source: _Source, name: str) -> Callable[[Any], Any]:
    namespace = dict(source.names)
    exec("\n".join(source.lines), namespace)  # noqa: S102 - code generated from field types
    return typing.cast(Callable[[Any], Any], namespace[name])


_DECODERS = _Compiled(_make_decoder)
_ENCODERS = _Compiled(_make_encoder)


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
        try:
            return typing.cast(Wire, _ENCODERS[type(self)](self))
        except _Slow:
            return self._checked_to_wire(where)

    def _checked_to_wire(self, where: str) -> Wire:
        where = where or type(self).__name__
        out: list[Wire] = [self.VERSION]
        for name, to_wire, _ in self._compiled():
            out.append(to_wire(getattr(self, name), f"{where}.{name}"))
        return out

    @classmethod
    def from_wire(cls, value: Wire, where: str = "") -> Self:
        try:
            return typing.cast(Self, _DECODERS[cls](value))
        except _Slow:
            return cls._checked_from_wire(value, where)

    @classmethod
    def _checked_from_wire(cls, value: Wire, where: str) -> Self:
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
        return cls.from_wire(unpack_canonical(data, max_bytes))

    def hash(self) -> bytes:
        """sha256 of the canonical encoding."""
        return hashlib.sha256(self.encode()).digest()


def to_json(value: Any) -> Any:
    """Records to JSON: bytes as hex, enums by name, nested records as objects."""
    if isinstance(value, Record):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value
