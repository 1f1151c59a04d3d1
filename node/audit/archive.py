"""Portable, self-verifying chain archives, and the chain report auditors read.

An archive is `CARECHAIN-ARCHIVE/1\\n` followed by length-prefixed records: the genesis, then
one `Commit` (block and certificate) per height, in order. It verifies itself: replaying it
from its genesis checks every certificate, link and state root (`node.audit.replay`), so an
auditor needs nothing but the file.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

from carechain.consensus.crypto import encode_address
from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import apply_block, decode_body
from carechain.consensus.ledger.bodies import CancelRecovery, StartRecovery
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import (
    InstitutionChange,
    ValidatorAction,
    ValidatorChange,
)
from carechain.consensus.ledger.state import Table
from carechain.consensus.poa.limits import LIMITS_AT_CAP
from carechain.consensus.poa.messages import Commit
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    Tx,
    ValidatorSet,
)
from carechain.node.audit.replay import ChainSource
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV

MAGIC: Final = b"CARECHAIN-ARCHIVE/1\n"
# a genesis or a block with its certificate, of any chain genesis allows
RECORD_BYTES_MAX: Final = max(LIMITS_AT_CAP.commit_bytes, 1024 * 1024)


class ArchiveError(InvalidInput):
    code = "bad_archive"


def _write_record(handle: BinaryIO, payload: bytes) -> None:
    handle.write(struct.pack(">I", len(payload)) + payload)


def export_archive(source: ChainStore, genesis: Genesis, out: Path, first: int, last: int) -> int:
    """Write heights first..last (clamped to the chain) with the genesis; the count written."""
    last = min(last, source.height)
    temporary = out.with_name(out.name + ".tmp")
    written = 0
    with temporary.open("wb") as handle:
        handle.write(MAGIC)
        _write_record(handle, genesis.encode())
        for block, certificate in source.blocks(first, last):
            _write_record(handle, Commit(block, certificate).encode())
            written += 1
    temporary.replace(out)
    return written


def _records(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise ArchiveError(f"{path} is not a carechain archive")
        while header := handle.read(4):
            if len(header) < 4:
                raise ArchiveError(f"{path} ends inside a record header: the file is truncated")
            (length,) = struct.unpack(">I", header)
            if length > RECORD_BYTES_MAX:
                raise ArchiveError(f"{path}: a record of {length} bytes exceeds the limit")
            payload = handle.read(length)
            if len(payload) < length:
                raise ArchiveError(f"{path} ends inside a record: the file is truncated")
            yield payload


@dataclasses.dataclass
class _ArchiveState:
    def entries(self) -> Iterator[tuple[Table, bytes, bytes]]:
        return iter(())


class CommitsSource:
    """Blocks with their certificates from height 1, held in memory, as a `ChainSource`
    (an archive, or what an observer synced); it carries no node state to compare."""

    def __init__(self, commits: list[Commit]) -> None:
        self.commits = commits
        self.state = _ArchiveState()

    @property
    def height(self) -> int:
        return len(self.commits)

    def block(self, height: int) -> Block:
        return self.commits[height - 1].block

    def certificate(self, height: int) -> CommitCertificate:
        return self.commits[height - 1].certificate

    def late_precommits(self, height: int) -> tuple[CommitSignature, ...] | None:
        return None  # an archive keeps the certificates only


class ArchiveSource(CommitsSource):
    """An archive as a `ChainSource` (held in memory; archives are for offline audits)."""

    def __init__(self, path: Path) -> None:
        records = _records(path)
        try:
            self.genesis = Genesis.decode(next(records), max_bytes=RECORD_BYTES_MAX)
            commits = [Commit.decode(r, max_bytes=RECORD_BYTES_MAX) for r in records]
        except StopIteration:
            raise ArchiveError(f"{path} holds no genesis") from None
        except CarechainError as exc:
            raise ArchiveError(f"{path}: a record is unreadable: {exc}") from None
        super().__init__(commits)
        if commits and commits[0].block.header.height != 1:
            start = commits[0].block.header.height
            raise ArchiveError(
                f"{path} starts at height {start}; a replay from genesis needs it to start at 1",
                hint="export with --from 1",
            )


def import_archive(source: ArchiveSource, data: Path) -> int:
    """Write a verified archive into a new chain directory; its height."""
    if data.exists() and any(data.iterdir()):
        raise ArchiveError(f"{data} is not empty; import into a new directory")
    store = ChainStore(LevelKV(data))
    try:
        store.state.initialize(source.genesis)
        chain = ChainContext.from_genesis(source.genesis)
        for commit in source.commits:
            store.commit(commit.block, commit.certificate, apply_block(store, commit.block, chain))
        store.check(verify_state=True)
        return store.height
    finally:
        store.close()


@dataclasses.dataclass
class Participation:
    """A validator's heights: proposed; signed in the certificate (the first quorum of
    precommits); late (its precommit for the block came after the certificate was made, as
    the node under audit recorded it); missed (neither). A source that keeps no late votes
    (an archive) counts a late vote as missed: `ChainReport.late_votes_kept` says which."""

    name: str
    proposed: int = 0
    signed: int = 0
    late: int = 0
    missed: int = 0


@dataclasses.dataclass
class ChainReport:
    """What an auditor reads after a verified replay."""

    participation: dict[str, Participation] = dataclasses.field(default_factory=dict)
    heights_with_round_changes: int = 0
    max_round: int = 0
    governance: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # every key-loss recovery step (start, cancel, finish), in chain order
    recoveries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    late_votes_kept: bool = True

    def observe(
        self,
        block: Block,
        certificate: CommitCertificate,
        validators: ValidatorSet,
        late: tuple[CommitSignature, ...] | None,
    ) -> None:
        signers = {entry.validator for entry in certificate.precommits}
        latecomers = {entry.validator for entry in late or ()}
        self.late_votes_kept = self.late_votes_kept and late is not None
        for validator in validators.validators:
            key = validator.public_key
            row = self.participation.setdefault(key.hex(), Participation(validator.name))
            row.signed += key in signers
            row.late += key not in signers and key in latecomers
            row.missed += key not in signers and key not in latecomers
            row.proposed += key == block.header.proposer
        if certificate.round > 0:
            self.heights_with_round_changes += 1
        self.max_round = max(self.max_round, certificate.round)
        for tx in block.txs:
            if tx.account == GOVERNANCE_ACCOUNT:
                self.governance.append(
                    {
                        "height": block.header.height,
                        "effective_height": block.header.height + 2,
                        "kind": tx.kind,
                        "change": governance_change(tx),
                        "signers": len(tx.signatures),
                        "tx": tx.id.hex(),
                    }
                )
            elif tx.kind.startswith("recovery."):
                self.recoveries.append(recovery_step(block.header.height, tx))


def recovery_step(height: int, tx: Tx) -> dict[str, Any]:
    """A committed recovery transaction, for the report: whose account, which keys, who
    signed (a start shows whether the patient took part or a team hospital did)."""
    body = decode_body(tx)
    step: dict[str, Any] = {
        "height": height,
        "kind": tx.kind,
        "patient": encode_address(tx.account),
        "signers": [signature.public_key.hex() for signature in tx.signatures],
        "tx": tx.id.hex(),
    }
    if isinstance(body, StartRecovery):
        step |= {"lost": body.lost.hex(), "replacement": body.replacement.hex()}
    elif isinstance(body, CancelRecovery):
        step |= {"replacement": body.replacement.hex()}
    return step


def governance_change(tx: Tx) -> str:
    """What a committed governance transaction changed, in words: `register hospital
    "hospital-d" (key 3f2a...)`, `add validator "v5" with power 10`."""
    body = decode_body(tx)
    if isinstance(body, ValidatorChange):
        validator = body.validator
        what = f'{body.action.name.lower()} validator "{validator.name}"'
        key = f"(key {validator.public_key.hex()[:12]}...)"
        if body.action is ValidatorAction.REMOVE:
            return f"{what} {key}"
        return f"{what} with power {validator.power} {key}"
    if isinstance(body, InstitutionChange):
        institution = body.institution
        return (
            f"{body.action.name.lower()} {institution.kind.name.lower()} "
            f'"{institution.name}" (key {institution.public_key.hex()[:12]}...)'
        )
    return tx.kind


__all__ = ["ArchiveSource", "ChainReport", "ChainSource", "export_archive", "import_archive"]
