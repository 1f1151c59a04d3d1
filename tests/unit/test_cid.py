"""Content ids are IPFS CIDv1 (sha2-256, base32), written one way only: py-cid agrees with
every id carechain writes, and every other spelling of one is refused."""

from __future__ import annotations

import cid as py_cid
import multihash
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carechain.consensus.cid import DAG_PB, RAW, ContentId, parse_cid, parse_cid_bytes
from carechain.storage.blobs.cid import BadContentId, cid_of

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
    assert parse_cid(cid_of(data)).digest == multihash.digest(data, "sha2-256").digest
    assert parse_cid(cid_of(data)).codec == RAW


HELLO = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.sampled_from([RAW, DAG_PB]))
def test_every_id_written_is_py_cids_and_parses_back(digest: bytes, codec: int) -> None:
    written = ContentId(codec, digest).text
    reference = py_cid.make_cid(1, {RAW: "raw", DAG_PB: "dag-pb"}[codec],
                                multihash.encode(digest, "sha2-256"))  # fmt: skip
    assert written == reference.encode("base32").decode()
    assert parse_cid(written) == ContentId(codec, digest)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Qmabc", "59 characters"),
        ("b!!!", "59 characters"),
        (HELLO.upper(), "59 characters"),  # multibase B: upper-case base32
        ("b" + HELLO[1:].upper(), "lower-case"),
        (HELLO[:-1] + "f", "trailing bits"),  # the same 36 bytes, a non-zero pad bit
        (HELLO[:20] + "1" + HELLO[21:], "lower-case"),
        (HELLO + "a", "59 characters"),
        # CIDv1 dag-cbor, sha2-256: a codec content ids do not use
        (ContentId(RAW, bytes(32)).text.replace("bafkre", "bafyre"), "codec"),
        # CIDv0 (QmHash) spelled in base58: not a CIDv1
        ("QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u", "59 characters"),
    ],
)
def test_every_other_spelling_is_refused(text: str, problem: str) -> None:
    with pytest.raises(BadContentId, match=problem):
        parse_cid(text)


def test_a_binary_id_of_another_hash_or_version_is_refused() -> None:
    """As a dag-pb link holds them: the same rules."""
    sha512 = py_cid.make_cid(1, "raw", multihash.digest(b"x", "sha2-512").encode()).buffer
    with pytest.raises(BadContentId, match="sha2-256"):
        parse_cid_bytes(sha512)
    wrong_hash = bytes([0x01, RAW, 0x13, 32]) + bytes(32)  # another hash code, 32 bytes
    with pytest.raises(BadContentId, match="sha2-256"):
        parse_cid_bytes(wrong_hash)
    v0 = multihash.digest(b"x", "sha2-256").encode()  # CIDv0: a bare multihash
    with pytest.raises(BadContentId):
        parse_cid_bytes(v0)
    assert parse_cid_bytes(ContentId(DAG_PB, bytes(32)).binary) == ContentId(DAG_PB, bytes(32))
