"""Content-addressable archives (CAR v1), the form IPFS tools move a whole DAG in: a
dag-cbor header `{roots: [CID], version: 1}`, then each block as a varint-framed CID and its
bytes. `write_car` streams a blob's blocks out (`BlobStore.blocks`: root first, then depth
first); `read_car` takes a CAR apart, refusing anything that is not one, and
`BlobStore.put_blocks` stores its blob only if its blocks are exactly that blob.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

import cbor2

from carechain.consensus.cid import BadContentId, ContentId, parse_cid_bytes
from carechain.consensus.errors import InvalidInput

HEADER_BYTES_MAX: Final = 1024
BLOCK_BYTES_MAX: Final = 2 * 1024 * 1024  # a 1 MiB leaf, or a node: both far below
_CID_TAG: Final = 42


class BadCar(InvalidInput):
    code = "bad_car"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def car_header(root: ContentId) -> bytes:
    header = cbor2.dumps(
        {"roots": [cbor2.CBORTag(_CID_TAG, b"\x00" + root.binary)], "version": 1},
        canonical=True,
    )
    return _varint(len(header)) + header


def car_section(cid: ContentId, block: bytes) -> bytes:
    return _varint(len(cid.binary) + len(block)) + cid.binary + block


async def write_car(
    root: ContentId, blocks: AsyncIterator[tuple[ContentId, bytes]]
) -> AsyncIterator[bytes]:
    """The CAR of a blob: its header, then its blocks in the order given."""
    yield car_header(root)
    async for cid, block in blocks:
        yield car_section(cid, block)


def _read_varint(data: memoryview, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 49:
            raise BadCar(f"the CAR ends inside a length at byte {at}")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def read_car(data: bytes) -> tuple[ContentId, dict[ContentId, bytes]]:
    """A CAR v1 of one root: that root and its blocks by id (each block's bytes are checked
    against its id by whoever stores them). BadCar says what is wrong and where."""
    view = memoryview(data)
    length, at = _read_varint(view, 0)
    if length > HEADER_BYTES_MAX or at + length > len(data):
        raise BadCar(f"the CAR's header of {length} bytes is cut short or too large")
    try:
        header = cbor2.loads(bytes(view[at : at + length]))
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise BadCar(f"the CAR's header is not CBOR: {exc}") from None
    at += length
    roots = header.get("roots") if isinstance(header, dict) else None
    version = header.get("version") if isinstance(header, dict) else None
    if type(version) is not int or version != 1 or not isinstance(roots, list):
        raise BadCar("the CAR's header is not {roots, version: 1}: not a CAR v1")
    if len(roots) != 1:
        raise BadCar(f"the CAR has {len(roots)} roots; a blob's has one")
    tag = roots[0]
    if (
        not isinstance(tag, cbor2.CBORTag)
        or tag.tag != _CID_TAG
        or not isinstance(tag.value, bytes)
        or tag.value[:1] != b"\x00"
    ):
        raise BadCar("the CAR's root is not a CID")
    try:
        root = parse_cid_bytes(tag.value[1:])
    except BadContentId as exc:
        raise BadCar(f"the CAR's root: {exc.message}") from None
    blocks: dict[ContentId, bytes] = {}
    while at < len(data):
        start = at
        length, at = _read_varint(view, at)
        if length > BLOCK_BYTES_MAX + 64 or at + length > len(data):
            raise BadCar(f"the section at byte {start} is cut short or too large")
        section = bytes(view[at : at + length])
        at += length
        try:
            cid = parse_cid_bytes(section[:36])
        except BadContentId as exc:
            raise BadCar(f"the section at byte {start}: {exc.message}") from None
        blocks[cid] = section[36:]
    return root, blocks
