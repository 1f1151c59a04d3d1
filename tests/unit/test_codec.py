"""The canonical codec: round trips, one byte string per value, and every non-canonical form
refused with a typed error."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carechain.consensus import codec
from carechain.consensus.codec import EncodeError, IntRange, Record, Size
from carechain.consensus.errors import DecodeError, InvalidInput
from carechain.consensus.poa.messages import BlockCarrier
from carechain.consensus.types import Block, Tx
from carechain.consensus.wire import array_header, pack, unpack
from carechain.tests.strategies import ALL_RECORDS, blocks, commits, locks, proposals, txs


@pytest.mark.parametrize("name", sorted(ALL_RECORDS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_record_round_trips_to_identical_bytes(name: str, data: st.DataObject) -> None:
    value = data.draw(ALL_RECORDS[name])
    encoded = value.encode()
    decoded = type(value).decode(encoded)
    assert decoded == value
    assert decoded.encode() == encoded  # one value, one byte string
    assert decoded.hash() == value.hash()


@settings(max_examples=200, deadline=None)
@given(txs, txs)
def test_distinct_values_have_distinct_bytes(a: Tx, b: Tx) -> None:
    assert (a == b) == (a.encode() == b.encode())


wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary() | st.text(),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(wire_values)
def test_wire_values_round_trip(value: Any) -> None:
    assert unpack(pack(value)) == value


NON_CANONICAL = [
    ("uint8 holding 5 (fixint is canonical)", b"\xcc\x05", "non_canonical"),
    ("uint16 holding 200 (uint8 is canonical)", b"\xcd\x00\xc8", "non_canonical"),
    ("uint64 holding 1", b"\xcf" + (1).to_bytes(8, "big"), "non_canonical"),
    ("int8 holding a positive 1", b"\xd0\x01", "non_canonical"),
    ("str8 for a 3-byte string", b"\xd9\x03abc", "non_canonical"),
    ("array16 of one element", b"\xdc\x00\x01\x01", "non_canonical"),
    ("map with a duplicate key", b"\x82\xa1a\x01\xa1a\x02", "non_canonical"),
    ("map with one key", b"\x81\xa1a\x01", "non_canonical"),
    ("float64", b"\xcb" + b"\x3f\xf0" + bytes(6), "non_canonical"),
    ("float32", b"\xca\x3f\x80\x00\x00", "non_canonical"),
    ("extension type", b"\xd4\x05\x00", "non_canonical"),
    ("timestamp extension", b"\xd6\xff\x00\x00\x00\x01", "malformed"),
    ("trailing byte", b"\x01\x02", "trailing_bytes"),
    ("truncated array", b"\x93\x01\x02", "malformed"),
    ("invalid utf-8 text", b"\xa2\xff\xfe", "malformed"),
    ("reserved byte 0xc1", b"\xc1", "malformed"),
    ("empty input", b"", "malformed"),
]


@pytest.mark.parametrize(("case", "data", "code"), NON_CANONICAL, ids=[c[0] for c in NON_CANONICAL])
def test_non_canonical_input_is_rejected(case: str, data: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as caught:
        unpack(data)
    assert caught.value.code == code, case


def test_oversize_input_is_rejected_before_decoding() -> None:
    data = pack(b"x" * 1000)
    with pytest.raises(DecodeError) as caught:
        unpack(data, max_bytes=999)
    assert caught.value.code == "oversize"
    assert unpack(data, max_bytes=len(data)) == b"x" * 1000


def test_deep_nesting_is_rejected() -> None:
    data = b"\x91" * 40 + b"\x90"
    with pytest.raises(DecodeError):
        unpack(data)


@dataclasses.dataclass(frozen=True, slots=True)
class Sample(Record):
    small: Annotated[int, IntRange(0, 10)]
    digest: Annotated[bytes, Size(4, 4)]
    note: str | None
    items: Annotated[tuple[int, ...], Size(0, 2)]


def test_typed_decode_names_the_bad_field() -> None:
    good = Sample(3, b"abcd", None, (1,))
    assert Sample.decode(good.encode()) == good
    bad = pack([1, 11, b"abcd", None, []])
    with pytest.raises(DecodeError, match=r"Sample\.small: expected an integer in \[0, 10\]"):
        Sample.decode(bad)
    with pytest.raises(DecodeError, match=r"Sample\.digest: expected bytes of length 4"):
        Sample.decode(pack([1, 1, b"abc", None, []]))
    with pytest.raises(DecodeError, match=r"Sample\.items: expected a list of 0\.\.2 items"):
        Sample.decode(pack([1, 1, b"abcd", None, [1, 2, 3]]))
    with pytest.raises(DecodeError, match=r"Sample\.note: expected text"):
        Sample.decode(pack([1, 1, b"abcd", b"not text", []]))
    with pytest.raises(DecodeError, match="expected an array of 5 items"):
        Sample.decode(pack([1, 1, b"abcd", None]))


def test_unknown_version_is_refused() -> None:
    with pytest.raises(DecodeError) as caught:
        Sample.decode(pack([2, 1, b"abcd", None, []]))
    assert caught.value.code == "unsupported_version"


def test_bool_is_not_an_int_and_an_int_is_not_a_bool() -> None:
    with pytest.raises(DecodeError):
        Sample.decode(pack([1, True, b"abcd", None, []]))


def test_encoding_checks_bounds_too() -> None:
    with pytest.raises(EncodeError, match=r"Sample\.small"):
        Sample(99, b"abcd", None, ()).encode()


def test_msgpack_accepts_what_we_refuse() -> None:
    """Why the re-encode check exists: plain msgpack decodes non-minimal forms silently."""
    assert msgpack.unpackb(b"\xcc\x05") == 5
    with pytest.raises(DecodeError):
        unpack(b"\xcc\x05")


def _mutated(wire: Any, data: st.DataObject) -> Any:
    """`wire` with one element, at any depth, replaced by an arbitrary wire value."""
    if not isinstance(wire, list) or not wire or data.draw(st.integers(0, 3)) == 0:
        return data.draw(wire_values)
    index = data.draw(st.integers(0, len(wire) - 1))
    return [*wire[:index], _mutated(wire[index], data), *wire[index + 1 :]]


def _outcome(run: Any) -> Any:
    try:
        return ("value", run())
    except codec._Slow:
        return ("refused",)
    except (DecodeError, EncodeError, InvalidInput):
        return ("refused",)


WITH_OPTIONAL = {
    **ALL_RECORDS,
    "Sample": st.builds(
        Sample,
        st.integers(0, 10),
        st.binary(min_size=4, max_size=4),
        st.none() | st.text(),
        st.lists(st.integers(0, 5), max_size=2).map(tuple),
    ),
}


@pytest.mark.parametrize("name", sorted(WITH_OPTIONAL))
@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_compiled_paths_accept_exactly_what_the_checked_paths_accept(
    name: str, data: st.DataObject
) -> None:
    """Each record's generated decoder and encoder only skip building error locations: on
    any input (valid, or with one part swapped for anything) they give the checked path's
    value or refuse where it refuses."""
    value = data.draw(WITH_OPTIONAL[name])
    cls = type(value)
    wire = _mutated(value._checked_to_wire(""), data)
    fast, checked = codec._DECODERS[cls], cls._checked_from_wire
    assert _outcome(lambda: fast(wire)) == _outcome(lambda: checked(wire, ""))
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(value)]))  # type: ignore[arg-type]
    try:
        swapped = dataclasses.replace(value, **{field: data.draw(wire_values)})  # type: ignore[type-var]
    except (InvalidInput, TypeError, AttributeError):
        return  # the constructor itself refused the swapped field
    fast_encode = codec._ENCODERS[cls]
    assert _outcome(lambda: fast_encode(swapped)) == _outcome(lambda: swapped._checked_to_wire(""))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(blocks)
def test_a_block_joined_from_its_transactions_encodings_is_its_canonical_encoding(
    block: Block,
) -> None:
    assert block.encode() == pack(block._checked_to_wire(""))
    decoded = Block.decode(block.encode())
    _assert_kept_encodings_are_canonical(decoded)
    assert decoded.__dict__["_encoded"] == block.encode()


def _assert_kept_encodings_are_canonical(block: Block) -> None:
    """A decoded block keeps its transactions' encodings (slices of what it was decoded
    from), each the one the checked path makes."""
    for tx in block.txs:
        assert tx.__dict__["_encoded"] == pack(tx._checked_to_wire(""))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.one_of(proposals, commits, locks), st.data())
def test_a_record_carrying_a_block_is_encoded_from_the_blocks_encoding_as_canonically(
    carrier: BlockCarrier, data: st.DataObject
) -> None:
    """Proposals, commits and locks join their block's kept encoding with their other
    fields': the same bytes as the checked path, and the same refusal of a bad field."""
    assert carrier.encode() == pack(carrier._checked_to_wire(""))
    decoded = type(carrier).decode(carrier.encode())
    assert decoded == carrier
    _assert_kept_encodings_are_canonical(decoded.block)
    assert decoded.__dict__["_encoded"] == carrier.encode()
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(carrier)]))  # type: ignore[arg-type]
    swapped = dataclasses.replace(carrier, **{field: data.draw(wire_values)})  # type: ignore[type-var]
    assert _outcome(swapped.encode) == _outcome(lambda: pack(swapped._checked_to_wire("")))


@pytest.mark.parametrize("length", [0, 1, 15, 16, 65_535, 65_536])
def test_array_headers_are_msgpacks_shortest(length: int) -> None:
    assert array_header(length) == pack([None] * length)[: -length or None]
