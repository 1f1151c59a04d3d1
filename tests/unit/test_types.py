"""Core types: transaction ids and co-signatures, Merkle roots, validator sets and commit
certificates."""

from __future__ import annotations

import dataclasses

import pytest

from carechain.consensus.crypto import PrivateKey, sha256
from carechain.consensus.errors import InvalidInput, SignatureError
from carechain.consensus.types import (
    CommitCertificate,
    CommitSignature,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
    merkle_root,
)
from carechain.tests.strategies import deterministic_key

CHAIN = "carechain-test"


def _tx() -> Tx:
    return Tx(CHAIN, "record.put", bytes(20), 7, 10**12, b"body")


def test_tx_id_ignores_signatures_and_cosigning_keeps_one_encoding() -> None:
    a, b = deterministic_key(1), deterministic_key(2)
    ab = _tx().signed_by(a).signed_by(b)
    ba = _tx().signed_by(b).signed_by(a)
    assert ab.id == ba.id == _tx().id
    assert ab.encode() == ba.encode()  # signatures are kept sorted
    assert ab.valid_signers() == {a.public_key, b.public_key}
    assert ab.witness_hash != _tx().witness_hash


def test_signing_twice_with_one_key_keeps_one_signature() -> None:
    a = deterministic_key(1)
    assert len(_tx().signed_by(a).signed_by(a).signatures) == 1


def test_a_forged_signature_is_not_a_valid_signer() -> None:
    a, b = deterministic_key(1), deterministic_key(2)
    signed = _tx().signed_by(a)
    forged = dataclasses.replace(
        signed.signatures[0], public_key=b.public_key
    )  # a's signature under b's key
    assert _tx().with_signature(forged).valid_signers() == frozenset()


def test_changing_any_field_changes_the_id() -> None:
    base = _tx()
    for change in (
        {"chain_id": "other"},
        {"kind": "access.grant"},
        {"account": b"\x01" * 20},
        {"nonce": 8},
        {"expiry_ms": 1},
        {"body": b"other"},
    ):
        assert dataclasses.replace(base, **change).id != base.id, change


def test_merkle_root_matches_rfc6962_shape() -> None:
    a, b, c = sha256(b"a"), sha256(b"b"), sha256(b"c")
    leaf = {x: sha256(b"\x00" + x) for x in (a, b, c)}
    assert merkle_root([]) == sha256(b"")
    assert merkle_root([a]) == leaf[a]
    assert merkle_root([a, b]) == sha256(b"\x01" + leaf[a] + leaf[b])
    assert merkle_root([a, b, c]) == sha256(b"\x01" + sha256(b"\x01" + leaf[a] + leaf[b]) + leaf[c])
    assert merkle_root([a, b]) != merkle_root([b, a])


def _validators(count: int, power: int = 10) -> tuple[ValidatorSet, list[PrivateKey]]:
    keys = [deterministic_key(100 + i) for i in range(count)]
    validator_set = ValidatorSet.of(
        [Validator(f"v{i}", k.public_key, k.public_key, power) for i, k in enumerate(keys)]
    )
    return validator_set, keys


def test_validator_set_must_be_sorted_and_unique() -> None:
    validator_set, _ = _validators(3)
    with pytest.raises(InvalidInput):
        ValidatorSet(tuple(reversed(validator_set.validators)))
    with pytest.raises(InvalidInput):
        ValidatorSet((validator_set.validators[0], validator_set.validators[0]))


def test_quorum_is_more_than_two_thirds_of_power() -> None:
    validator_set, _ = _validators(4)
    assert validator_set.total_power == 40
    assert not validator_set.has_quorum(26)
    assert validator_set.has_quorum(27)
    assert not validator_set.has_one_third(13)
    assert validator_set.has_one_third(14)


def _certificate(keys: list[PrivateKey], block_hash: bytes, signers: int) -> CommitCertificate:
    entries = []
    for key in keys[:signers]:
        vote = Vote(CHAIN, VoteType.PRECOMMIT, 5, 1, block_hash, key.public_key).signed_by(key)
        entries.append(CommitSignature(vote.validator, vote.signature))
    return CommitCertificate(5, 1, block_hash, tuple(entries))


def test_certificate_with_quorum_verifies() -> None:
    validator_set, keys = _validators(4)
    block_hash = sha256(b"block")
    _certificate(keys, block_hash, 3).verify(CHAIN, validator_set, block_hash)


CERTIFICATE_FAILURES = [
    ("too few signers", "certificate_no_quorum"),
    ("wrong block", "certificate_wrong_block"),
    ("unknown signer", "certificate_unknown_signer"),
    ("duplicate signer", "certificate_duplicate_signer"),
    ("bad signature", "certificate_bad_signature"),
    ("wrong chain", "certificate_bad_signature"),
]


@pytest.mark.parametrize(("case", "code"), CERTIFICATE_FAILURES)
def test_certificate_failures_are_precise(case: str, code: str) -> None:
    validator_set, keys = _validators(4)
    block_hash = sha256(b"block")
    certificate = _certificate(keys, block_hash, 3)
    chain, expected_hash = CHAIN, block_hash
    if case == "too few signers":
        certificate = _certificate(keys, block_hash, 2)
    elif case == "wrong block":
        expected_hash = sha256(b"other")
    elif case == "unknown signer":
        outsider = deterministic_key(999)
        certificate = _certificate([*keys[:2], outsider], block_hash, 3)
    elif case == "duplicate signer":
        first = certificate.precommits[0]
        certificate = dataclasses.replace(certificate, precommits=(first, first))
    elif case == "bad signature":
        entry = certificate.precommits[0]
        broken = CommitSignature(entry.validator, bytes(64))
        certificate = dataclasses.replace(
            certificate, precommits=(broken, *certificate.precommits[1:])
        )
    elif case == "wrong chain":
        chain = "carechain-other"
    with pytest.raises(SignatureError) as caught:
        certificate.verify(chain, validator_set, expected_hash)
    assert caught.value.code == code


def test_no_quorum_message_names_the_counts() -> None:
    validator_set, keys = _validators(4)
    block_hash = sha256(b"block")
    with pytest.raises(SignatureError, match=r"has 2 of 4 validator signatures"):
        _certificate(keys, block_hash, 2).verify(CHAIN, validator_set, block_hash)


def test_vote_signature_covers_every_field() -> None:
    key = deterministic_key(5)
    vote = Vote(CHAIN, VoteType.PREVOTE, 3, 0, sha256(b"b"), key.public_key).signed_by(key)
    assert vote.signature_valid()
    for change in (
        {"round": 1},
        {"height": 4},
        {"block_hash": b""},
        {"vote_type": VoteType.PRECOMMIT},
    ):
        assert not dataclasses.replace(vote, **change).signature_valid(), change
