"""Content ids of the blob store's blocks: IPFS CIDv1, sha2-256, base32. A leaf (a piece of
a blob, or a whole blob of at most one chunk) is a raw block (`bafkrei...`); a larger blob is
named by its UnixFS root, a dag-pb block (`bafybei...`, see `unixfs.py`). The strict parser
lives with the ledger (`consensus.cid`), which refuses any other text on chain."""

from __future__ import annotations

import hashlib

from carechain.consensus.cid import DAG_PB, RAW, BadContentId, ContentId, parse_cid

__all__ = ["DAG_PB", "RAW", "BadContentId", "ContentId", "cid_of", "cid_of_digest", "parse_cid"]


def cid_of_digest(digest: bytes) -> str:
    """The content id of a raw block with this sha2-256 digest."""
    if len(digest) != 32:
        raise ValueError("a sha2-256 digest is 32 bytes")
    return ContentId(RAW, digest).text


def cid_of(data: bytes) -> str:
    """The content id of `data` as one raw block."""
    return cid_of_digest(hashlib.sha256(data).digest())
