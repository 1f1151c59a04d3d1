"""What validators send each other, and what the engine writes to its WAL.

- `Proposal`: a block for (height, round), with the round of the proof-of-lock it re-proposes
  (`pol_round`, -1 for a fresh block), signed by the round's proposer under Purpose.PROPOSAL.
- `Vote` (consensus.types): prevote or precommit for a block hash or nil.
- `Commit`: a decided block with its commit certificate, so a validator that missed the
  precommits commits without another round, and a lagging one learns it must sync.

One envelope carries any of them on the wire (`encode_message` / `decode_message`), with a
size limit on every decode: the one `limits.EncodedLimits` derives from the chain's genesis.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from typing import Annotated, Any, Final, Self

import msgpack

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.crypto import SIGNATURE_BYTES, PrivateKey, Purpose, sha256, verify
from carechain.consensus.errors import DecodeError
from carechain.consensus.types import (
    Block,
    BlockHeader,
    ChainId,
    CommitCertificate,
    PublicKey,
    Vote,
)
from carechain.consensus.wire import DECODE_BYTES_MAX_DEFAULT, array_header, pack, unpack

# The static bound of a WAL record's payload: the largest lock genesis allows (a block of
# 64 MiB and 256 prevotes) with room to spare; `limits` checks it covers that lock, and every
# read of a record is bounded by the chain's own, smaller, limit.
WAL_PAYLOAD_BYTES_MAX: Final = 65 * 1024 * 1024

# Stands in for the block while the other fields of a record carrying one are checked and
# converted (see `BlockCarrier`); never sent or stored.
_STAND_IN: Final = Block(BlockHeader("-", 1, 0, 0, bytes(32), *([bytes(32)] * 5)), ())


class BlockCarrier(Record):
    """A record with a `block` field, encoded once and from the block's own encoding: a
    msgpack array is its items' encodings joined, and a block keeps its encoding (joined from
    its transactions'), so a proposal, a commit or a lock of a block with thousands of
    transactions is not walked and packed again, as `Record.encode` would, each time it is
    sent or written to the WAL. The other fields go through the checked conversion (with a
    stand-in block), so a bad one is named as `Record.encode` names it."""

    block: Block

    @classmethod
    def decode(cls, data: bytes, *, max_bytes: int = DECODE_BYTES_MAX_DEFAULT) -> Self:
        """Decoded, keeping its encoding, its block's and its transactions' (see
        `Block.keep_encodings`)."""
        data = bytes(data)
        record: Any = super().decode(data, max_bytes=max_bytes)
        reader = msgpack.Unpacker(max_buffer_size=len(data))
        reader.feed(data)
        reader.read_array_header()
        for _ in range(cls._block_position()):
            reader.skip()  # VERSION and the fields before the block
        record.block.keep_encodings(data, reader)
        record.__dict__["_encoded"] = data
        return typing.cast(Self, record)

    def encode(self) -> bytes:
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> bytes:
        if type(self.block) is not Block:
            return super().encode()  # the checked path names the bad field
        record: Any = self  # a dataclass: each subclass is one
        wire = dataclasses.replace(record, block=_STAND_IN).to_wire()
        assert isinstance(wire, list)
        parts = [pack(item) for item in wire]
        parts[self._block_position()] = self.block.encode()
        return array_header(len(parts)) + b"".join(parts)

    @classmethod
    def _block_position(cls) -> int:
        """The block's place in the record's array (its fields follow VERSION)."""
        fields = dataclasses.fields(typing.cast(Any, cls))  # a dataclass: each subclass is one
        return 1 + [f.name for f in fields].index("block")


@dataclasses.dataclass(frozen=True)
class Proposal(BlockCarrier):
    chain_id: ChainId
    height: Annotated[int, IntRange(1, 2**63)]
    round: Annotated[int, IntRange(0, 2**31)]
    pol_round: Annotated[int, IntRange(-1, 2**31)]
    block: Block
    proposer: PublicKey
    signature: Annotated[bytes, Size(0, SIGNATURE_BYTES)] = b""

    def payload_hash(self) -> bytes:
        return sha256(
            pack([self.chain_id, self.height, self.round, self.pol_round, self.block.block_hash])
        )

    def signed_by(self, key: PrivateKey) -> Proposal:
        signature = key.sign(Purpose.PROPOSAL, self.chain_id, self.payload_hash())
        return dataclasses.replace(self, signature=signature)

    def signature_valid(self) -> bool:
        return verify(
            self.proposer, Purpose.PROPOSAL, self.chain_id, self.payload_hash(), self.signature
        )


@dataclasses.dataclass(frozen=True)
class Commit(BlockCarrier):
    block: Block
    certificate: CommitCertificate


class MessageKind(enum.IntEnum):
    PROPOSAL = 1
    VOTE = 2
    COMMIT = 3


ConsensusMessage = Proposal | Vote | Commit
_KINDS: Final[dict[type[Record], MessageKind]] = {
    Proposal: MessageKind.PROPOSAL,
    Vote: MessageKind.VOTE,
    Commit: MessageKind.COMMIT,
}
_TYPES: Final = {kind: record for record, kind in _KINDS.items()}


def encode_message(message: ConsensusMessage) -> bytes:
    return pack([int(_KINDS[type(message)]), message.encode()])


def decode_message(data: bytes, *, max_bytes: int) -> ConsensusMessage:
    """Decode a wire message; DecodeError for anything malformed, unknown or oversize.
    `max_bytes`: the chain's `EncodedLimits.message_bytes`."""
    envelope = unpack(data, max_bytes=max_bytes)
    if not isinstance(envelope, list) or len(envelope) != 2:
        raise DecodeError("a consensus message is [kind, body]")
    kind, body = envelope
    if not isinstance(kind, int) or kind not in _TYPES or not isinstance(body, bytes):
        raise DecodeError(f"unknown consensus message kind {kind!r}")
    return _TYPES[MessageKind(kind)].decode(body, max_bytes=max_bytes)  # type: ignore[return-value]


_PEEK_ERRORS: Final = (ValueError, msgpack.UnpackException, msgpack.ExtraData)


def _peek(data: bytes, kind: MessageKind, record: type[Record]) -> msgpack.Unpacker | None:
    """A reader of the message's body placed after its record's VERSION, if `data` is shaped
    like a `kind` message of `record` (decode it to learn more); raises _PEEK_ERRORS on bytes
    msgpack cannot read."""
    envelope = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
    envelope.feed(data)
    if envelope.read_array_header() != 2 or envelope.unpack() != kind:
        return None
    body = envelope.unpack()
    if not isinstance(body, bytes):
        return None
    reader = msgpack.Unpacker(raw=False, max_buffer_size=len(body))
    reader.feed(body)
    fields = len(dataclasses.fields(typing.cast(Any, record)))  # a dataclass, as every record
    if reader.read_array_header() != 1 + fields or reader.unpack() != record.VERSION:
        return None
    return reader


def commit_height(data: bytes) -> int | None:
    """The certificate height of a `Commit` message, read without decoding its block; None
    for any other message or anything not shaped like a commit (decode it to learn why).

    Every validator sends the commit it decided to all, and again each second: a node
    already past that height drops them unread instead of decoding whole blocks."""
    try:
        commit = _peek(data, MessageKind.COMMIT, Commit)
        if commit is None:
            return None
        commit.skip()  # the block
        if commit.read_array_header() != 5 or commit.unpack() != CommitCertificate.VERSION:
            return None
        height = commit.unpack()
    except _PEEK_ERRORS:
        return None
    return height if type(height) is int else None


def proposal_slot(data: bytes) -> tuple[int, int] | None:
    """The (height, round) of a `Proposal` message, read without decoding its block; None for
    any other message or anything not shaped like a proposal (decode it to learn why).

    A proposer sends its proposal again every second while its round lasts: a node that
    holds the proposal of that round already drops the copies unread instead of decoding
    (and canonically re-encoding) a block of megabytes each time."""
    try:
        proposal = _peek(data, MessageKind.PROPOSAL, Proposal)
        if proposal is None:
            return None
        proposal.skip()  # the chain id
        height, round = proposal.unpack(), proposal.unpack()
    except _PEEK_ERRORS:
        return None
    if type(height) is not int or type(round) is not int:
        return None
    return height, round


class WalKind(enum.IntEnum):
    PROPOSAL = 1  # our own signed proposal (with its block)
    VOTE = 2  # our own signed vote
    LOCK = 3  # a `Lock`: the block we locked on and the prevotes that justified it


@dataclasses.dataclass(frozen=True)
class Lock(BlockCarrier):
    """A lock survives a restart with its proof: without the prevotes, a re-proposal of the
    locked block could not convince anyone who missed that round, and the chain would stall."""

    block: Block
    prevotes: Annotated[tuple[Vote, ...], Size(1, 256)]


@dataclasses.dataclass(frozen=True)
class WalRecord(Record):
    """One WAL entry. Written (and fsynced) before the message it guards is sent."""

    kind: WalKind
    height: Annotated[int, IntRange(1, 2**63)]
    round: Annotated[int, IntRange(0, 2**31)]
    payload: Annotated[bytes, Size(0, WAL_PAYLOAD_BYTES_MAX)]  # an encoded Proposal, Vote or Lock
