"""IPFS-compatible content ids: CIDv1, raw codec (0x55), sha2-256, base32 (`bafkrei...`)."""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from carechain.consensus.errors import InvalidInput

_PREFIX: Final = bytes([0x01, 0x55, 0x12, 0x20])  # version 1, raw, sha2-256, 32 bytes


class BadContentId(InvalidInput):
    code = "bad_content_id"


def cid_of_digest(digest: bytes) -> str:
    if len(digest) != 32:
        raise ValueError("a sha2-256 digest is 32 bytes")
    return "b" + base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")


def cid_of(data: bytes) -> str:
    return cid_of_digest(hashlib.sha256(data).digest())


def digest_of(cid: str) -> bytes:
    """The sha2-256 digest a CIDv1 (raw) names; BadContentId for anything else."""
    if not cid.startswith("b"):
        raise BadContentId(f"{cid!r} is not a base32 CIDv1 (they start with 'b')")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise BadContentId(f"{cid!r} is not valid base32") from None
    if len(raw) != 36 or not raw.startswith(_PREFIX):
        raise BadContentId(f"{cid!r} is not a raw sha2-256 CIDv1")
    return raw[4:]
