"""Content ids as IPFS writes them, and only so: CIDv1, sha2-256, codec raw (a block of bytes)
or dag-pb (a UnixFS file node over such blocks), in multibase `b` (lower-case base32 without
padding). One text per id: anything else (upper or mixed case, another base, CIDv0, another
hash or codec, non-zero trailing bits, a wrong length) is refused, so one content id never
names two strings on chain. `tests/unit/test_cid.py` holds the parser to py-cid's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Final

from carechain.consensus.errors import InvalidInput

RAW: Final = 0x55
DAG_PB: Final = 0x70
SHA2_256: Final = 0x12
CODECS: Final = {RAW: "raw", DAG_PB: "dag-pb"}
DIGEST_BYTES: Final = 32
CID_BYTES: Final = 4 + DIGEST_BYTES  # version, codec, hash, length (one byte each), digest
CID_TEXT_CHARS: Final = 1 + (CID_BYTES * 8 + 4) // 5  # "b" and the base32 digits: 59
_BASE32: Final = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class BadContentId(InvalidInput):
    code = "bad_content_id"


@dataclasses.dataclass(frozen=True, slots=True)
class ContentId:
    codec: int  # RAW or DAG_PB
    digest: bytes  # sha2-256 of the block

    def __post_init__(self) -> None:
        if self.codec not in CODECS or len(self.digest) != DIGEST_BYTES:
            raise BadContentId(f"no content id has codec {self.codec:#x} and this digest")

    @property
    def binary(self) -> bytes:
        """The CID's bytes, as a dag-pb link holds them."""
        return bytes([0x01, self.codec, SHA2_256, DIGEST_BYTES]) + self.digest

    @property
    def text(self) -> str:
        return "b" + base64.b32encode(self.binary).decode("ascii").lower().rstrip("=")

    def __str__(self) -> str:
        return self.text

    @classmethod
    def of_block(cls, codec: int, block: bytes) -> ContentId:
        return cls(codec, hashlib.sha256(block).digest())

    def matches(self, block: bytes) -> bool:
        return hashlib.sha256(block).digest() == self.digest


def parse_cid(text: str) -> ContentId:
    """The content id `text` names, if it is one written the one way this chain accepts."""
    shown = repr(text[:80])
    if not isinstance(text, str) or len(text) != CID_TEXT_CHARS or not text.startswith("b"):
        raise BadContentId(
            f"{shown} is not a content id: one is {CID_TEXT_CHARS} characters, 'b' and "
            "lower-case base32 (a CIDv1, as `ipfs add --cid-version 1` prints it)"
        )
    if not set(text[1:]) <= _BASE32:
        raise BadContentId(f"{shown} is not lower-case base32 after its 'b'")
    body = text[1:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    found = parse_cid_bytes(raw, shown)
    if found.text != text:
        raise BadContentId(f"{shown} has non-zero trailing bits: not its canonical text")
    return found


def parse_cid_bytes(raw: bytes, shown: str | None = None) -> ContentId:
    """A binary CID (as a dag-pb link holds it), under the same rules as `parse_cid`."""
    shown = shown or raw.hex()
    if len(raw) != CID_BYTES:
        raise BadContentId(f"{shown} is not a sha2-256 CIDv1 of {CID_BYTES} bytes")
    version, codec, hash_code, length = raw[0], raw[1], raw[2], raw[3]
    if version != 0x01:
        raise BadContentId(f"{shown} is not a CIDv1 (version {version})")
    if codec not in CODECS:
        raise BadContentId(f"{shown} has codec {codec:#x}; content ids are raw or dag-pb")
    if hash_code != SHA2_256 or length != DIGEST_BYTES:
        raise BadContentId(f"{shown} is not hashed with sha2-256")
    return ContentId(codec, raw[4:])
