"""An auditor's replay: trust nothing in a node's data directory, check everything from genesis.

For every height, in order: the block decodes; it links to the previous block's hash; its time
moves forward; the validator set it names is the one this replay computes (following every
governance change from genesis); its proposer is that round's proposer; its commit certificate
carries more than 2/3 of that set's power for exactly this block; its transaction root matches;
every transaction's signatures verify (checked in parallel across processes) and satisfy its
policy, and re-executing the block reproduces the state root in its header. At the end the
rebuilt state must equal the node's own, entry by entry (for a store or a copy of one; an
archive, a live node's API and an observer's sync (`node.audit.observer`) carry no state to
compare, and rest on the header state roots). The first failure stops the replay with its
height, block hash and what failed. Nothing is ever repaired or written.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from typing import Final, Protocol

from carechain.consensus.crypto import stream_ciphertext_bytes
from carechain.consensus.errors import CarechainError
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.apply import apply_block, signers_of
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.errors import BlockRejected, TxRejected
from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.ledger.records import RecordEntry
from carechain.consensus.ledger.state import Table
from carechain.consensus.poa.votes import proposer_of
from carechain.consensus.types import (
    ZERO_HASH,
    Block,
    CommitCertificate,
    CommitSignature,
    Tx,
    ValidatorSet,
)
from carechain.storage.blobs.store import BlobStore
from carechain.storage.kv import MemoryKV
from carechain.storage.state import StateStore

BATCH_BLOCKS: Final = 256


class AuditFailure(CarechainError):
    """The chain does not verify; `height` says where."""

    code = "audit_failed"

    def __init__(self, height: int, block_hash: bytes | None, problem: str) -> None:
        where = f"height {height}" + (f" (block {block_hash.hex()[:16]})" if block_hash else "")
        super().__init__(f"{where}: {problem}")
        self.height = height
        self.problem = problem


@dataclasses.dataclass
class ReplayReport:
    chain_id: str
    blocks: int = 0
    txs: int = 0
    signatures: int = 0
    validator_set_changes: int = 0
    seconds: float = 0.0
    state_root: str = ""
    blobs_checked: int = 0
    # content ids of live records this blob store never held: not damage (a node holds the
    # blobs stored or fetched through it), but what an auditor may want to fetch
    blobs_missing: list[str] = dataclasses.field(default_factory=list)


class SignatureChecks:
    """Verify the signatures of a batch of blocks in parallel; answer the ledger's
    `check_signers` from the results."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        self.results: dict[bytes, frozenset[bytes] | str] = {}

    def prepare(self, blocks: list[Block]) -> None:
        txs = [tx.encode() for block in blocks for tx in block.txs]
        if self.pool is not None and len(txs) > 64:
            found = self.pool.map(
                signers_of, txs, chunksize=max(16, len(txs) // (self.workers * 4))
            )
        else:
            found = [signers_of(tx) for tx in txs]
        self.results = dict(found)

    def __call__(self, tx: Tx) -> frozenset[bytes]:
        found = self.results.get(tx.witness_hash)
        if found is None:
            found = signers_of(tx.encode())[1]
        if isinstance(found, str):
            code, _, detail = found.partition(": ")
            raise TxRejected(code, detail)
        return found

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


class StateEntries(Protocol):
    def entries(self) -> Iterator[tuple[Table, bytes, bytes]]: ...


class ChainSource(Protocol):
    """What a replay reads: a node's store, a copy of it, or a node's API."""

    @property
    def height(self) -> int: ...

    @property
    def state(self) -> StateEntries: ...

    def block(self, height: int) -> Block: ...

    def certificate(self, height: int) -> CommitCertificate: ...

    def late_precommits(self, height: int) -> tuple[CommitSignature, ...] | None:
        """The precommits for height's block the node received after its certificate was
        made (`ChainStore.record_late`); None for a source that keeps none (an archive)."""
        ...


def _blocks(
    source: ChainSource, first: int, last: int
) -> Iterator[tuple[int, Block, CommitCertificate]]:
    for height in range(first, last + 1):
        try:
            yield height, source.block(height), source.certificate(height)
        except CarechainError as exc:
            raise AuditFailure(height, None, f"block or certificate unreadable: {exc}") from None


def _check_block(
    height: int,
    block: Block,
    certificate: CommitCertificate,
    replayed: StateStore,
    chain: ChainContext,
    previous: tuple[bytes, int],
) -> None:
    header = block.header
    block_hash = block.block_hash
    parent_hash, parent_time = previous
    validators = validator_set_at(replayed, height)
    checks = [
        (header.height == height, f"the block says height {header.height}"),
        (header.chain_id == chain.chain_id, f"the block is for chain {header.chain_id!r}"),
        (header.parent_hash == parent_hash, "it does not link to the previous block's hash"),
        (header.time_ms > parent_time, "its time does not move forward"),
        (header.validator_set_hash == validators.hash(), "it names another validator set"),
        (
            header.proposer == proposer_of(validators, height, header.round),
            f"its proposer had no right to propose round {header.round}",
        ),
        (header.tx_root == block.computed_tx_root(), "its transaction root does not match"),
    ]
    for ok, problem in checks:
        if not ok:
            raise AuditFailure(height, block_hash, problem)
    try:
        certificate.verify(chain.chain_id, validators, block_hash)
    except CarechainError as exc:
        raise AuditFailure(height, block_hash, exc.message.split(": ", 1)[-1]) from None


def _late_of(source: ChainSource, height: int) -> tuple[CommitSignature, ...] | None:
    try:
        return source.late_precommits(height)
    except CarechainError as exc:
        raise AuditFailure(height, None, f"late precommits unreadable: {exc}") from None


def _check_late(
    height: int,
    block: Block,
    certificate: CommitCertificate,
    late: tuple[CommitSignature, ...],
    chain_id: str,
    validators: ValidatorSet,
) -> None:
    """Each late precommit must be one the certificate could have held: a validator of
    the height that the certificate lacks, its signature good for this block and round."""
    signers = {entry.validator for entry in certificate.precommits}
    for entry in late:
        who = validators.by_key.get(entry.validator)
        name = who.name if who else entry.validator.hex()[:16]
        if who is None or entry.validator in signers:
            problem = "is not a validator of the height" if who is None else "is in the certificate"
            raise AuditFailure(height, block.block_hash, f"a late precommit by {name} {problem}")
        if not certificate.vote_of(chain_id, entry).signature_valid():
            raise AuditFailure(
                height, block.block_hash, f"the late precommit by {name} does not verify"
            )


def replay(
    source: ChainSource,
    genesis: Genesis,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    observer: Callable[
        [Block, CommitCertificate, ValidatorSet, tuple[CommitSignature, ...] | None], None
    ]
    | None = None,
    compare_state: bool = True,
    into: StateStore | None = None,
) -> ReplayReport:
    """Replay `source` from genesis; raises AuditFailure at the first problem."""
    started = time.perf_counter()
    chain = ChainContext.from_genesis(genesis)
    # `into`: keep the verified rebuild; a rebuild of its own keeps only the last tree
    replayed = into or StateStore(MemoryKV(), heights_kept=1)
    replayed.initialize(genesis)
    report = ReplayReport(genesis.chain_id)
    checks = SignatureChecks(workers or os.cpu_count() or 1)
    previous = (ZERO_HASH, genesis.genesis_time_ms)
    head = source.height
    try:
        for first in range(1, head + 1, BATCH_BLOCKS):
            batch = list(_blocks(source, first, min(head, first + BATCH_BLOCKS - 1)))
            checks.prepare([block for _, block, _ in batch])
            for height, block, certificate in batch:
                _check_block(height, block, certificate, replayed, chain, previous)
                validators = validator_set_at(replayed, height)
                late = _late_of(source, height)
                if late:
                    _check_late(height, block, certificate, late, chain.chain_id, validators)
                if observer is not None:
                    observer(block, certificate, validators, late)
                before = validator_set_at(replayed, height + 1).hash()
                try:
                    diff = apply_block(replayed, block, chain, checks)
                except BlockRejected as exc:
                    raise AuditFailure(height, block.block_hash, str(exc.reason)) from None
                root = replayed.apply(diff, height)
                if validator_set_at(replayed, height + 1).hash() != (
                    block.header.next_validator_set_hash
                ):
                    raise AuditFailure(
                        height, block.block_hash, "it names another next validator set"
                    )
                if root != block.header.state_root:
                    raise AuditFailure(
                        height,
                        block.block_hash,
                        f"state root differs: the header says "
                        f"{block.header.state_root.hex()[:16]}, "
                        f"re-executing gives {root.hex()[:16]}",
                    )
                report.validator_set_changes += (
                    validator_set_at(replayed, height + 2).hash() != before
                )
                report.blocks += 1
                report.txs += len(block.txs)
                report.signatures += sum(len(tx.signatures) for tx in block.txs)
                previous = (block.block_hash, block.header.time_ms)
                if progress is not None:
                    progress(height, head)
    finally:
        checks.close()
    if compare_state:
        _compare_states(source, replayed, head)
    report.seconds = time.perf_counter() - started
    report.state_root = replayed.root.hex()
    return report


def _compare_states(source: ChainSource, replayed: StateStore, head: int) -> None:
    """The node's state must be exactly what the replay rebuilt."""
    theirs = source.state.entries()
    ours = replayed.entries()
    while True:
        mine, other = next(ours, None), next(theirs, None)
        if mine is None and other is None:
            return
        if mine != other:
            first = min((e for e in (mine, other) if e is not None), key=lambda e: (e[0], e[1]))
            table, key = first[0], first[1]
            raise AuditFailure(
                head,
                None,
                f"the node's state differs from the replay; first differing key: "
                f"{Table(table).name.lower()} {key.hex()}",
            )


@dataclasses.dataclass
class BlobCheck:
    checked: int = 0  # blobs present and read whole
    missing: list[str] = dataclasses.field(default_factory=list)  # never held here
    broken: list[str] = dataclasses.field(default_factory=list)  # held, not what was named


async def check_blobs(state: StateStore, blobs: BlobStore) -> BlobCheck:
    """Every blob a live record names that `blobs` holds must match its content id (broken:
    damage); one it does not hold is reported apart (missing: not damage)."""
    result = BlobCheck()
    for _, raw in state.table_entries(Table.RECORD):
        record = RecordEntry.decode(raw)
        if record.content_id == "inline" or record.erased_height is not None:
            continue
        if not await blobs.has(record.content_id):
            result.missing.append(record.content_id)
            continue
        try:  # held: any failure to read it whole (a lost chunk too) is damage
            await blobs.read(record.content_id, size=stream_ciphertext_bytes(record.size_bytes))
        except CarechainError as exc:
            result.broken.append(f"record {record.record_id.hex()}: {exc}")
        else:
            result.checked += 1
    return result
