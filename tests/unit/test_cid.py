"""Content ids are IPFS CIDv1 (raw, sha2-256, base32)."""

from __future__ import annotations

import cid as py_cid
import multihash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carechain.storage.blobs.cid import BadContentId, cid_of, digest_of

KNOWN = [
    (b"", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (b"hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
]


@pytest.mark.parametrize(("data", "expected"), KNOWN)
def test_known_ipfs_cids(data: bytes, expected: str) -> None:
    assert cid_of(data) == expected


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_matches_py_cid_and_round_trips(data: bytes) -> None:
    reference = py_cid.make_cid(1, "raw", multihash.digest(data, "sha2-256").encode())
    assert cid_of(data) == reference.encode("base32").decode()
    assert digest_of(cid_of(data)) == multihash.digest(data, "sha2-256").digest


@pytest.mark.parametrize(
    "text", ["Qmabc", "b!!!", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"]
)
def test_bad_cids_are_refused(text: str) -> None:
    with pytest.raises(BadContentId):
        digest_of(text)
