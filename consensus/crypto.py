"""Keys, signatures, addresses and envelope encryption.

Signing is always domain-separated: the signed message is the canonical encoding of
`["carechain/<purpose>/v1", chain_id, payload_hash]`, so a signature made for one purpose (a
vote) or one chain never verifies for another (a transaction, a test network).

Addresses are bech32 strings (`cc1...`) of a 20-byte account id; bech32's BCH checksum detects
every single-character change, and the fixed length rules out the insertion/deletion weakness of
bech32 before its final character. The libp2p peer id of a node key is derived here from the
same key bytes, without importing libp2p.

Envelope helpers (client side): a fresh data key per record, sealed (X25519 sealed box) to every
reader; large files stream through XChaCha20-Poly1305 secretstream in fixed-size chunks.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Iterator
from typing import Final

import base58
import bech32
import nacl.bindings as sodium
import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
import nacl.utils

from carechain.consensus.errors import AddressError, DecodeError, SignatureError
from carechain.consensus.wire import pack

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SEED_BYTES: Final = 32
ACCOUNT_ID_BYTES: Final = 20
HASH_BYTES: Final = 32
DATA_KEY_BYTES: Final = 32
ADDRESS_HRP: Final = "cc"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Purpose(enum.StrEnum):
    """What a signature authorises. Each is its own signing domain."""

    TX = "tx"
    PROPOSAL = "proposal"
    VOTE = "vote"
    HEARTBEAT = "heartbeat"
    BLOB_REQUEST = "blob-request"
    ERASURE = "erasure-attestation"
    PARTIAL = "partial"


def signing_message(purpose: Purpose, chain_id: str, payload_hash: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers for `purpose` on `chain_id`."""
    if len(payload_hash) != HASH_BYTES:
        raise ValueError("payload_hash must be a 32-byte digest")
    return pack([f"carechain/{purpose.value}/v1", chain_id, payload_hash])


class PrivateKey:
    """An Ed25519 private key; its X25519 key for sealed boxes is derived from it."""

    __slots__ = ("_signing", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        self._signing = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._signing.verify_key)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(nacl.utils.random(SEED_BYTES))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    def sign_raw(self, message: bytes) -> bytes:
        """Plain RFC 8032 Ed25519. Protocol code signs through `sign` instead."""
        return self._signing.sign(message).signature

    def sign(self, purpose: Purpose, chain_id: str, payload_hash: bytes) -> bytes:
        return self.sign_raw(signing_message(purpose, chain_id, payload_hash))

    def x25519_private(self) -> nacl.public.PrivateKey:
        return self._signing.to_curve25519_private_key()

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key.hex()[:16]}...)"


def verify_raw(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Plain RFC 8032 verification; False for any malformed key or signature."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def verify(
    public_key: bytes, purpose: Purpose, chain_id: str, payload_hash: bytes, signature: bytes
) -> bool:
    return verify_raw(public_key, signing_message(purpose, chain_id, payload_hash), signature)


def require_signature(
    public_key: bytes, purpose: Purpose, chain_id: str, payload_hash: bytes, signature: bytes
) -> None:
    if not verify(public_key, purpose, chain_id, payload_hash, signature):
        raise SignatureError(
            f"signature by {public_key.hex()[:16]}... does not verify for "
            f"{purpose.value} on chain {chain_id!r}"
        )


# --- addresses -------------------------------------------------------------------------------


def account_id(public_key: bytes) -> bytes:
    """The 20-byte account id of a single-key principal."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return sha256(b"carechain/account/v1" + public_key)[:ACCOUNT_ID_BYTES]


def derived_account_id(purpose: str, *parts: bytes) -> bytes:
    """The id of an account with no key of its own (a vault, the governance account)."""
    return sha256(pack([f"carechain/account/{purpose}/v1", *parts]))[:ACCOUNT_ID_BYTES]


def encode_address(account: bytes) -> str:
    if len(account) != ACCOUNT_ID_BYTES:
        raise ValueError("an account id is 20 bytes")
    data = bech32.convertbits(list(account), 8, 5, True)
    assert data is not None  # 8-to-5 bit conversion with padding cannot fail
    return str(bech32.bech32_encode(ADDRESS_HRP, data))


_ADDRESS_LENGTH: Final = len(ADDRESS_HRP) + 1 + 32 + 6  # hrp, "1", 160 bits in base32, checksum


def decode_address(text: str) -> bytes:
    """Parse `cc1...`; raises AddressError naming what is wrong."""
    candidate = text.strip()
    if not candidate.lower().startswith(ADDRESS_HRP + "1"):
        raise AddressError(
            f"{text!r} is not a carechain address", hint=f"addresses start with {ADDRESS_HRP}1"
        )
    if len(candidate) != _ADDRESS_LENGTH:
        raise AddressError(
            f"{text!r} has {len(candidate)} characters, an address has {_ADDRESS_LENGTH}",
            hint="check for a missing or extra character",
        )
    hrp, data = bech32.bech32_decode(candidate)
    if hrp != ADDRESS_HRP or data is None:
        raise AddressError(
            f"{text!r} fails its checksum", hint="a character was mistyped; copy it again"
        )
    raw = bech32.convertbits(data, 5, 8, False)
    if raw is None or len(raw) != ACCOUNT_ID_BYTES:
        raise AddressError(f"{text!r} does not hold a 20-byte account id")
    return bytes(raw)


def peer_id(public_key: bytes) -> str:
    """libp2p peer id of an Ed25519 node key: base58 of the identity multihash of the
    protobuf-encoded public key (`08 01 12 20 <key>`); begins with `12D3KooW`."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    protobuf = b"\x08\x01\x12\x20" + public_key
    multihash = bytes([0x00, len(protobuf)]) + protobuf
    return str(base58.b58encode(multihash).decode("ascii"))


# --- envelope encryption -----------------------------------------------------------------------


def x25519_public_key(public_key: bytes) -> bytes:
    return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public_key))


def is_public_key(public_key: bytes) -> bool:
    """Whether 32 bytes are an Ed25519 public key that keys can be sealed to (a point of the
    curve of large order): 32 valid hex characters can still name none."""
    try:
        x25519_public_key(public_key)
    except nacl.exceptions.CryptoError:
        return False
    return len(public_key) == 32


def new_data_key() -> bytes:
    return nacl.utils.random(DATA_KEY_BYTES)


def seal(data: bytes, recipient_public_key: bytes) -> bytes:
    """Anonymous sealed box to an Ed25519 principal (via its derived X25519 key)."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(x25519_public_key(recipient_public_key)))
    return bytes(box.encrypt(data))


def unseal(sealed: bytes, key: PrivateKey) -> bytes:
    try:
        return bytes(nacl.public.SealedBox(key.x25519_private()).decrypt(sealed))
    except nacl.exceptions.CryptoError as exc:
        raise DecodeError("sealed box does not open with this key", code="not_a_recipient") from exc


def encrypt_small(key: bytes, plaintext: bytes) -> bytes:
    """Authenticated encryption of a small value (inline record, data key under an epoch key)."""
    return bytes(nacl.secret.SecretBox(key).encrypt(plaintext))


def decrypt_small(key: bytes, ciphertext: bytes) -> bytes:
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(ciphertext))
    except nacl.exceptions.CryptoError as exc:
        raise DecodeError("ciphertext does not open with this key", code="bad_key") from exc


STREAM_CHUNK_BYTES: Final = 64 * 1024
STREAM_HEADER_BYTES: Final = int(sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES)
STREAM_OVERHEAD_BYTES: Final = int(sodium.crypto_secretstream_xchacha20poly1305_ABYTES)
_TAG_MESSAGE: Final = int(sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
_TAG_FINAL: Final = int(sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL)


def stream_ciphertext_bytes(plaintext_bytes: int) -> int:
    """The length `encrypt_stream` makes of `plaintext_bytes`: its header, then each 64 KiB
    piece and the last (possibly empty) one with its tag. A record's blob on chain is checked
    against it: the ledger records the plaintext's size."""
    pieces = plaintext_bytes // STREAM_CHUNK_BYTES + 1
    return STREAM_HEADER_BYTES + plaintext_bytes + pieces * STREAM_OVERHEAD_BYTES


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    yield bytes(buffer)  # the last (possibly empty) piece; it carries the FINAL tag


def encrypt_stream(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the secretstream header, then one ciphertext chunk per 64 KiB of plaintext.

    The last chunk carries the FINAL tag, so truncation is detected on decryption.
    """
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    yield bytes(sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key))
    pieces = _rechunk(chunks, STREAM_CHUNK_BYTES)
    current = next(pieces)
    for following in pieces:
        yield bytes(sodium.crypto_secretstream_xchacha20poly1305_push(state, current))
        current = following
    yield bytes(sodium.crypto_secretstream_xchacha20poly1305_push(state, current, tag=_TAG_FINAL))


def _take(source: Iterator[bytes], buffer: bytearray, size: int) -> bytes:
    """Up to `size` bytes from `buffer` refilled from `source`; fewer only at the end."""
    while len(buffer) < size:
        piece = next(source, None)
        if piece is None:
            break
        buffer += piece
    taken = bytes(buffer[:size])
    del buffer[:size]
    return taken


def decrypt_stream(key: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Inverse of `encrypt_stream`; raises DecodeError on tampering, reordering, truncation or
    appended data."""
    source, buffer = iter(chunks), bytearray()
    header = _take(source, buffer, STREAM_HEADER_BYTES)
    if len(header) < STREAM_HEADER_BYTES:
        raise DecodeError("encrypted stream is shorter than its header", code="truncated")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    while chunk := _take(source, buffer, STREAM_CHUNK_BYTES + STREAM_OVERHEAD_BYTES):
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk)
        except nacl.exceptions.RuntimeError as exc:
            raise DecodeError("encrypted chunk fails authentication", code="tampered") from exc
        yield bytes(plain)
        if tag == _TAG_FINAL:
            # The final chunk is always shorter than a full one, so any bytes appended after
            # it were read together with it and failed authentication above.
            return
    raise DecodeError("encrypted stream ends before its final chunk", code="truncated")


def public_key_from_peer_id(text: str) -> bytes:
    """The Ed25519 node key inside a libp2p peer id (inverse of `peer_id`)."""
    try:
        raw = base58.b58decode(text.strip())
    except ValueError as exc:
        raise AddressError(f"{text!r} is not base58", code="bad_peer_id") from exc
    prefix = b"\x00\x24\x08\x01\x12\x20"
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise AddressError(
            f"{text!r} is not the peer id of an Ed25519 key",
            code="bad_peer_id",
            hint="Ed25519 peer ids start with 12D3KooW",
        )
    return raw[len(prefix) :]
