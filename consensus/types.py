"""Core consensus types and their hash rules.

Hash rules (all sha256 over canonical encodings, see `codec`):
- Transaction id: hash of the transaction encoded *without* its signatures (`Tx.unsigned_wire`),
  so co-signers sign the same id and adding a co-signature does not change it. Signatures are
  kept sorted by public key and unique, so a complete transaction has one encoding too.
- Transaction witness hash: hash of the full encoding, signatures included. The block's `tx_root`
  is the Merkle root (RFC 6962 shape: leaf `0x00 || h`, node `0x01 || l || r`) of the witness
  hashes, so a block commits to the exact signatures it carries.
- Block hash: hash of the header's encoding. The header commits to the transactions (`tx_root`),
  the state after them (`state_root`) and the validator set that signs it (`validator_set_hash`).
- Vote payload: hash of the vote without its signature; signed under `Purpose.VOTE`.
- Commit certificate: the precommits of more than 2/3 of the voting power for one block hash at
  one height and round; each precommit verifies as a `Vote` rebuilt from the certificate.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from typing import Annotated, Final, Self

import msgpack

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.crypto import (
    ACCOUNT_ID_BYTES,
    HASH_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    PrivateKey,
    Purpose,
    verify,
)
from carechain.consensus.errors import InvalidInput, SignatureError
from carechain.consensus.wire import DECODE_BYTES_MAX_DEFAULT, array_header, pack

PublicKey = Annotated[bytes, Size(PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES)]
SignatureBytes = Annotated[bytes, Size(SIGNATURE_BYTES, SIGNATURE_BYTES)]
AccountId = Annotated[bytes, Size(ACCOUNT_ID_BYTES, ACCOUNT_ID_BYTES)]
Hash = Annotated[bytes, Size(HASH_BYTES, HASH_BYTES)]
MaybeHash = Annotated[bytes, Size(0, HASH_BYTES)]  # empty = nil (a vote for no block)
ChainId = Annotated[str, Size(1, 64)]
Name = Annotated[str, Size(1, 64)]

TX_BODY_BYTES_MAX: Final = 256 * 1024
TX_SIGNATURES_MAX: Final = 32
BLOCK_TXS_MAX: Final = 20_000
VALIDATORS_MAX: Final = 128
ZERO_HASH: Final = bytes(HASH_BYTES)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over already-hashed leaves; sha256(b"") when empty."""
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    return _merkle_reduce(level)


def _merkle_reduce(nodes: list[bytes]) -> bytes:
    if len(nodes) == 1:
        return nodes[0]
    split = 1 << ((len(nodes) - 1).bit_length() - 1)  # largest power of two below len
    return sha256(b"\x01" + _merkle_reduce(nodes[:split]) + _merkle_reduce(nodes[split:]))


@dataclasses.dataclass(frozen=True, slots=True)
class TxSignature(Record):
    public_key: PublicKey
    signature: SignatureBytes


@dataclasses.dataclass(frozen=True)
class Tx(Record):
    """A transaction: who acts (`account`), in what order (`nonce`), until when (`expiry_ms`,
    block time), what (`kind` and its encoded `body`), and the signatures gathered so far."""

    chain_id: ChainId
    kind: Annotated[str, Size(1, 32)]
    account: AccountId
    nonce: int
    expiry_ms: int
    body: Annotated[bytes, Size(0, TX_BODY_BYTES_MAX)]
    signatures: Annotated[tuple[TxSignature, ...], Size(0, TX_SIGNATURES_MAX)] = ()

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Self:
        tx = super().decode(data, max_bytes=max_bytes)
        tx.__dict__["_encoded"] = bytes(data)  # canonical: decoding checked it re-encodes so
        return tx

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        """Encoded once: a transaction is measured, hashed, stored and sent many times."""
        return pack(self.to_wire())

    def unsigned_wire(self) -> bytes:
        wire = self.to_wire()
        assert isinstance(wire, list)
        return pack(wire[:-1])

    @functools.cached_property
    def id(self) -> bytes:
        return sha256(self.unsigned_wire())

    @functools.cached_property
    def witness_hash(self) -> bytes:
        return self.hash()

    def signed_by(self, key: PrivateKey) -> Tx:
        """A copy with `key`'s signature added (kept sorted by public key, one per key)."""
        signature = TxSignature(key.public_key, key.sign(Purpose.TX, self.chain_id, self.id))
        return self.with_signature(signature)

    def with_signature(self, signature: TxSignature) -> Tx:
        others = [s for s in self.signatures if s.public_key != signature.public_key]
        ordered = tuple(sorted([*others, signature], key=lambda s: s.public_key))
        return dataclasses.replace(self, signatures=ordered)

    def valid_signers(self) -> frozenset[bytes]:
        """Public keys whose signatures verify for this transaction's id and chain."""
        return frozenset(
            s.public_key
            for s in self.signatures
            if verify(s.public_key, Purpose.TX, self.chain_id, self.id, s.signature)
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Validator(Record):
    name: Name
    public_key: PublicKey  # validator key: signs proposals and votes
    node_key: PublicKey  # node key: the libp2p identity of the validator's node
    power: Annotated[int, IntRange(1, 2**32)]


@dataclasses.dataclass(frozen=True)
class ValidatorSet(Record):
    """Validators sorted by public key, each key once."""

    validators: Annotated[tuple[Validator, ...], Size(1, VALIDATORS_MAX)]

    def __post_init__(self) -> None:
        keys = [v.public_key for v in self.validators]
        if keys != sorted(set(keys)):
            raise InvalidInput(
                "validator set must be sorted by public key with no duplicates",
                code="bad_validator_set",
            )

    @classmethod
    def of(cls, validators: list[Validator]) -> ValidatorSet:
        return cls(tuple(sorted(validators, key=lambda v: v.public_key)))

    @functools.cached_property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    @functools.cached_property
    def by_key(self) -> dict[bytes, Validator]:
        return {v.public_key: v for v in self.validators}

    def power_of(self, keys: frozenset[bytes] | set[bytes]) -> int:
        return sum(self.by_key[k].power for k in keys if k in self.by_key)

    def has_quorum(self, power: int) -> bool:
        """More than 2/3 of the total voting power."""
        return 3 * power > 2 * self.total_power

    def has_one_third(self, power: int) -> bool:
        """More than 1/3: at least one honest validator is among them."""
        return 3 * power > self.total_power


@dataclasses.dataclass(frozen=True, slots=True)
class BlockHeader(Record):
    chain_id: ChainId
    height: Annotated[int, IntRange(1, 2**63)]
    round: Annotated[int, IntRange(0, 2**31)]
    time_ms: int
    proposer: PublicKey
    parent_hash: Hash
    tx_root: Hash
    state_root: Hash
    validator_set_hash: Hash
    # the set that validates the next height, as this block's state says (governance changes
    # take effect two heights after they are decided, so it is known here): a light client
    # trusts the next header's signers by this, without the state
    next_validator_set_hash: Hash


@dataclasses.dataclass(frozen=True)
class Block(Record):
    header: BlockHeader
    txs: Annotated[tuple[Tx, ...], Size(0, BLOCK_TXS_MAX)]

    @functools.cached_property
    def block_hash(self) -> bytes:
        return self.header.hash()

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Self:
        data = bytes(data)
        block = super().decode(data, max_bytes=max_bytes)
        reader = msgpack.Unpacker(max_buffer_size=len(data))
        reader.feed(data)
        block.keep_encodings(data, reader)
        return block

    def keep_encodings(self, data: bytes, reader: msgpack.Unpacker) -> None:
        """Keep the block's and each transaction's encoding as slices of `data`, canonical
        bytes this block was just decoded from, which `reader` (fed `data`) is about to read:
        re-encoding them costs more than decoding did. (Canonical as a whole means canonical
        in every part: msgpack encodes an array as its items' encodings joined.)"""
        start = reader.tell()
        reader.read_array_header()
        reader.skip()  # VERSION
        reader.skip()  # header
        reader.read_array_header()
        for tx in self.txs:
            first = reader.tell()
            reader.skip()
            tx.__dict__["_encoded"] = data[first : reader.tell()]
        self.__dict__["_encoded"] = data[start : reader.tell()]

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        """Encoded once (a block is measured, stored and sent), from its transactions' own
        encodings, which they keep: msgpack arrays are their items' encodings joined."""
        txs = self.txs
        if (
            type(self.header) is not BlockHeader
            or type(txs) is not tuple
            or len(txs) > BLOCK_TXS_MAX
            or any(type(t) is not Tx for t in txs)
        ):
            return pack(self.to_wire())  # the checked path names the bad field
        header = pack([self.VERSION, self.header.to_wire()])[1:]  # without its array header
        return array_header(3) + header + array_header(len(txs)) + b"".join(t.encode() for t in txs)

    def computed_tx_root(self) -> bytes:
        return merkle_root([tx.witness_hash for tx in self.txs])


class VoteType(enum.IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Vote(Record):
    chain_id: ChainId
    vote_type: VoteType
    height: Annotated[int, IntRange(1, 2**63)]
    round: Annotated[int, IntRange(0, 2**31)]
    block_hash: MaybeHash
    validator: PublicKey
    signature: Annotated[bytes, Size(0, SIGNATURE_BYTES)] = b""

    def payload_hash(self) -> bytes:
        return dataclasses.replace(self, signature=b"").hash()

    def signed_by(self, key: PrivateKey) -> Vote:
        if key.public_key != self.validator:
            raise ValueError("a vote is signed by the validator it names")
        signature = key.sign(Purpose.VOTE, self.chain_id, self.payload_hash())
        return dataclasses.replace(self, signature=signature)

    def signature_valid(self) -> bool:
        return verify(
            self.validator, Purpose.VOTE, self.chain_id, self.payload_hash(), self.signature
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CommitSignature(Record):
    validator: PublicKey
    signature: SignatureBytes


@dataclasses.dataclass(frozen=True)
class CommitCertificate(Record):
    """The precommits that made a block final; anyone can verify a block with it alone."""

    height: Annotated[int, IntRange(1, 2**63)]
    round: Annotated[int, IntRange(0, 2**31)]
    block_hash: Hash
    precommits: Annotated[tuple[CommitSignature, ...], Size(1, VALIDATORS_MAX)]

    def vote_of(self, chain_id: str, entry: CommitSignature) -> Vote:
        return Vote(
            chain_id,
            VoteType.PRECOMMIT,
            self.height,
            self.round,
            self.block_hash,
            entry.validator,
            entry.signature,
        )

    def verify(self, chain_id: str, validators: ValidatorSet, block_hash: bytes) -> None:
        """Raise SignatureError saying exactly what is wrong, or return if the certificate
        proves `block_hash` final under `validators`."""
        if self.block_hash != block_hash:
            raise SignatureError(
                f"height {self.height}: commit certificate is for block "
                f"{self.block_hash.hex()[:16]}, not {block_hash.hex()[:16]}",
                code="certificate_wrong_block",
            )
        signers: set[bytes] = set()
        for entry in self.precommits:
            if entry.validator not in validators.by_key:
                raise SignatureError(
                    f"height {self.height}: certificate signer {entry.validator.hex()[:16]} "
                    "is not a validator at this height",
                    code="certificate_unknown_signer",
                )
            if entry.validator in signers:
                raise SignatureError(
                    f"height {self.height}: validator {entry.validator.hex()[:16]} signs twice",
                    code="certificate_duplicate_signer",
                )
            if not self.vote_of(chain_id, entry).signature_valid():
                raise SignatureError(
                    f"height {self.height}: precommit of {entry.validator.hex()[:16]} "
                    "does not verify",
                    code="certificate_bad_signature",
                )
            signers.add(entry.validator)
        power = validators.power_of(signers)
        if not validators.has_quorum(power):
            raise SignatureError(
                f"height {self.height}: commit certificate has {len(signers)} of "
                f"{len(validators.validators)} validator signatures ({power} of "
                f"{validators.total_power} power), needs more than 2/3 of power",
                code="certificate_no_quorum",
            )
