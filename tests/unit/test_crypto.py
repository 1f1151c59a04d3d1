"""Keys and crypto: RFC 8032 vectors through our API, domain separation, addresses, peer ids,
sealed boxes and streamed encryption."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID

from carechain.consensus import crypto
from carechain.consensus.crypto import Purpose
from carechain.consensus.errors import AddressError, DecodeError, SignatureError
from carechain.tests.strategies import deterministic_key

# RFC 8032 section 7.1: secret key, public key, message, signature.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = crypto.PrivateKey(bytes.fromhex(secret))
    assert key.public_key.hex() == public
    assert key.sign_raw(bytes.fromhex(message)).hex() == signature
    assert crypto.verify_raw(
        bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    )
    flipped = bytearray(bytes.fromhex(signature))
    flipped[0] ^= 1
    assert not crypto.verify_raw(bytes.fromhex(public), bytes.fromhex(message), bytes(flipped))


def test_a_signature_for_one_purpose_fails_for_every_other() -> None:
    key = deterministic_key(1)
    payload = crypto.sha256(b"payload")
    for signed_for, checked_as in itertools.product(Purpose, Purpose):
        signature = key.sign(signed_for, "carechain-test", payload)
        valid = crypto.verify(key.public_key, checked_as, "carechain-test", payload, signature)
        assert valid == (signed_for == checked_as), (signed_for, checked_as)


def test_a_signature_for_one_chain_fails_on_another() -> None:
    key = deterministic_key(2)
    payload = crypto.sha256(b"payload")
    signature = key.sign(Purpose.TX, "carechain-a", payload)
    assert crypto.verify(key.public_key, Purpose.TX, "carechain-a", payload, signature)
    assert not crypto.verify(key.public_key, Purpose.TX, "carechain-b", payload, signature)


def test_malformed_keys_and_signatures_verify_false_never_raise() -> None:
    payload = crypto.sha256(b"x")
    assert not crypto.verify(b"short", Purpose.TX, "c", payload, bytes(64))
    assert not crypto.verify(bytes(32), Purpose.TX, "c", payload, b"short")
    assert not crypto.verify(b"\xff" * 32, Purpose.TX, "c", payload, bytes(64))


def test_require_signature_raises_a_typed_error() -> None:
    key = deterministic_key(3)
    payload = crypto.sha256(b"x")
    with pytest.raises(SignatureError, match="does not verify for vote"):
        crypto.require_signature(key.public_key, Purpose.VOTE, "c", payload, bytes(64))


def test_address_round_trip_and_every_single_character_typo_is_detected() -> None:
    account = crypto.account_id(deterministic_key(4).public_key)
    address = crypto.encode_address(account)
    assert address.startswith("cc1")
    assert crypto.decode_address(address) == account
    assert crypto.decode_address(address.upper()) == account
    alphabet = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
    typos = 0
    for position in range(len(address)):
        for replacement in alphabet + "1bio":
            if replacement == address[position]:
                continue
            typo = address[:position] + replacement + address[position + 1 :]
            with pytest.raises(AddressError):
                crypto.decode_address(typo)
            typos += 1
    assert typos > 1000


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "not a carechain address"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "not a carechain address"),
        ("cc1qqqq", "characters"),
    ],
)
def test_bad_addresses_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(AddressError, match=fragment):
        crypto.decode_address(text)


def test_address_with_a_character_dropped_or_added_is_detected() -> None:
    address = crypto.encode_address(crypto.account_id(deterministic_key(5).public_key))
    with pytest.raises(AddressError):
        crypto.decode_address(address[:-1])
    with pytest.raises(AddressError):
        crypto.decode_address(address + "q")


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_peer_id_matches_libp2p(seed: bytes) -> None:
    public_key = crypto.PrivateKey(seed).public_key
    expected = ID.from_pubkey(Ed25519PublicKey.from_bytes(public_key)).to_base58()
    assert crypto.peer_id(public_key) == expected
    assert expected.startswith("12D3KooW")
    assert crypto.public_key_from_peer_id(expected) == public_key


def test_bad_peer_ids_are_refused() -> None:
    with pytest.raises(AddressError):
        crypto.public_key_from_peer_id("not-base58-0OIl")
    with pytest.raises(AddressError, match="Ed25519"):
        crypto.public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")


def test_sealed_key_opens_only_for_its_recipient() -> None:
    alice, bob = deterministic_key(6), deterministic_key(7)
    data_key = crypto.new_data_key()
    sealed = crypto.seal(data_key, alice.public_key)
    assert crypto.unseal(sealed, alice) == data_key
    with pytest.raises(DecodeError) as caught:
        crypto.unseal(sealed, bob)
    assert caught.value.code == "not_a_recipient"


def test_small_encryption_detects_a_wrong_key() -> None:
    key, other = crypto.new_data_key(), crypto.new_data_key()
    box = crypto.encrypt_small(key, b"glucose 5.4 mmol/L")
    assert crypto.decrypt_small(key, box) == b"glucose 5.4 mmol/L"
    with pytest.raises(DecodeError):
        crypto.decrypt_small(other, box)


CHUNK = crypto.STREAM_CHUNK_BYTES


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_stream_round_trip_at_chunk_boundaries(size: int) -> None:
    key = crypto.new_data_key()
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pieces = [plaintext[i : i + 1000] for i in range(0, len(plaintext), 1000)]
    ciphertext = b"".join(crypto.encrypt_stream(key, pieces))
    # Deliver the ciphertext in odd-sized pieces: decryption must not depend on framing.
    odd = [ciphertext[i : i + 777] for i in range(0, len(ciphertext), 777)]
    assert b"".join(crypto.decrypt_stream(key, odd)) == plaintext


def _encrypted(size: int) -> tuple[bytes, bytes]:
    key = crypto.new_data_key()
    return key, b"".join(crypto.encrypt_stream(key, [bytes(size)]))


def test_stream_tamper_truncation_and_appended_data_are_refused() -> None:
    key, ciphertext = _encrypted(2 * CHUNK + 5)
    tampered = bytearray(ciphertext)
    tampered[crypto.STREAM_HEADER_BYTES + CHUNK + 100] ^= 0x40
    cases = {
        "tampered": bytes(tampered),
        "truncated": ciphertext[
            : crypto.STREAM_HEADER_BYTES + CHUNK + crypto.STREAM_OVERHEAD_BYTES
        ],
    }
    for code, data in [*cases.items(), ("tampered", ciphertext + b"appended")]:
        with pytest.raises(DecodeError) as caught:
            b"".join(crypto.decrypt_stream(key, [data]))
        assert caught.value.code == code


def test_stream_with_a_wrong_key_or_short_header_is_refused() -> None:
    _, ciphertext = _encrypted(10)
    with pytest.raises(DecodeError):
        b"".join(crypto.decrypt_stream(crypto.new_data_key(), [ciphertext]))
    with pytest.raises(DecodeError) as caught:
        b"".join(crypto.decrypt_stream(crypto.new_data_key(), [ciphertext[:5]]))
    assert caught.value.code == "truncated"
