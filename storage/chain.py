"""The node's chain on one KV store: blocks, certificates, indexes and ledger state, committed
together.

Committing a block is one atomic write batch with sync: the block, its certificate, the hash
and transaction indexes, the state diff, the state height and root, and the head pointer. A
crash leaves the old head or the new one, never half. Opening checks that what is on disk is
consistent and says exactly what is wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from carechain.consensus.errors import CarechainError, InvalidInput
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.state import StateDiff, Table
from carechain.consensus.types import Block, BlockHeader, CommitCertificate, CommitSignature
from carechain.storage import schema
from carechain.storage.kv import KV, LevelKV, WriteBatch
from carechain.storage.state import R, StateCorruptError, StateStore


class ChainCorruptError(InvalidInput):
    code = "chain_corrupt"


class ChainStore:
    """Blocks and state of one node. Implements the consensus `ChainView`."""

    def __init__(self, kv: KV, *, heights_kept: int = 1000) -> None:
        self.kv = kv
        self.state = StateStore(kv, heights_kept=heights_kept)
        self._head_header: BlockHeader | None = None
        # the last block committed through this store, kept so the engine's re-announcement
        # at every height does not decode it again
        self._last_certified: tuple[Block, CommitCertificate] | None = None

    @classmethod
    def open(
        cls, path: Path, genesis: Genesis, *, verify_state: bool = False, heights_kept: int = 1000
    ) -> ChainStore:
        """Open (creating from genesis if empty) and check consistency. The state trees of
        the last `heights_kept` heights are kept for proofs."""
        store = cls(LevelKV(path), heights_kept=heights_kept)
        try:
            if not store.state.initialized:
                store.state.initialize(genesis)
            store.check(verify_state=verify_state)
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self.kv.close()

    # -- ChainView ------------------------------------------------------------------------------
    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.state.get(table, key)

    def load(self, table: Table, key: bytes, kind: type[R]) -> R | None:
        return self.state.load(table, key, kind)

    @property
    def height(self) -> int:
        return self.state.height

    def root_after(self, diff: StateDiff) -> bytes:
        return self.state.root_after(diff)

    def last_header(self) -> BlockHeader | None:
        if self._head_header is None and self.height > 0:
            self._head_header = self.block(self.height).header
        return self._head_header

    def table_entries(self, table: Table, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        return self.state.table_entries(table, prefix)

    def last_certified(self) -> tuple[Block, CommitCertificate] | None:
        height = self.height
        if height == 0:
            return None
        last = self._last_certified
        if last is not None and last[0].header.height == height:
            return last
        return self.block(height), self.certificate(height)

    # -- reading --------------------------------------------------------------------------------
    def head(self) -> tuple[int, bytes] | None:
        raw = self.kv.get(schema.HEAD_KEY)
        return None if raw is None else schema.decode_head(raw)

    def header(self, height: int) -> BlockHeader:
        """The header of the block at `height`; the head's is kept, not decoded again with
        its whole block (proofs and light clients ask for it at every read)."""
        head = self.last_header()
        if head is not None and head.height == height:
            return head
        return self.block(height).header

    def block(self, height: int) -> Block:
        raw = self.block_bytes(height)
        return Block.decode(raw, max_bytes=len(raw))

    def block_bytes(self, height: int) -> bytes:
        """The block at `height` as stored: its canonical encoding."""
        raw = self.kv.get(schema.block_key(height))
        if raw is None:
            raise ChainCorruptError(f"no block at height {height} (head is {self.height})")
        return raw

    def certificate(self, height: int) -> CommitCertificate:
        raw = self.certificate_bytes(height)
        return CommitCertificate.decode(raw, max_bytes=len(raw))

    def certificate_bytes(self, height: int) -> bytes:
        raw = self.kv.get(schema.certificate_key(height))
        if raw is None:
            raise ChainCorruptError(f"no commit certificate at height {height}")
        return raw

    def height_of(self, block_hash: bytes) -> int | None:
        raw = self.kv.get(schema.block_hash_key(block_hash))
        return None if raw is None else int.from_bytes(raw, "big")

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        raw = self.kv.get(schema.tx_key(tx_id))
        return None if raw is None else schema.decode_tx_location(raw)

    def blocks(self, first: int, last: int) -> Iterator[tuple[Block, CommitCertificate]]:
        """Committed blocks first..last (inclusive) with their certificates, in order."""
        for height in range(max(first, 1), min(last, self.height) + 1):
            yield self.block(height), self.certificate(height)

    # -- writing --------------------------------------------------------------------------------
    def commit(self, block: Block, certificate: CommitCertificate, diff: StateDiff) -> bytes:
        """Commit `block` atomically; returns the new state root (which must equal the
        header's: the caller validated the block, so a difference is our bug)."""
        height = block.header.height
        if height != self.height + 1:
            raise ChainCorruptError(f"the chain is at {self.height}; cannot commit {height}")
        batch = WriteBatch()
        block_hash = block.block_hash
        batch.put(schema.block_key(height), block.encode())
        batch.put(schema.certificate_key(height), certificate.encode())
        batch.put(schema.block_hash_key(block_hash), height.to_bytes(8, "big"))
        for position, tx in enumerate(block.txs):
            batch.put(schema.tx_key(tx.id), schema.encode_tx_location(height, position))
        batch.put(schema.HEAD_KEY, schema.encode_head(height, block_hash))
        root = self.state.root_after(diff)
        self.state.stage(diff, height, batch)
        assert root == block.header.state_root, f"height {height}: committing a wrong state root"
        self.kv.write(batch, sync=True)
        self.state.written(diff)
        self._head_header = block.header
        self._last_certified = (block, certificate)
        return root

    # -- late votes -----------------------------------------------------------------------------
    def record_late(self, certificate: CommitCertificate, late: CommitSignature) -> bool:
        """Keep a validator's precommit for the block `certificate` made final that came
        after the certificate (consensus checked it: `rules.late_precommit`). It is this
        node's record, apart from the certified chain: an auditor of this store can tell a
        validator that voted late from one that did not vote. False if already kept."""
        held = self.late_precommits(certificate.height)
        if self.height_of(certificate.block_hash) != certificate.height:
            raise ChainCorruptError(
                f"a late precommit for height {certificate.height} names a block this chain "
                "did not commit"
            )
        if any(entry.validator == late.validator for entry in held):
            return False
        record = CommitCertificate(
            certificate.height, certificate.round, certificate.block_hash, (*held, late)
        )
        batch = WriteBatch()
        batch.put(schema.late_key(certificate.height), record.encode())
        self.kv.write(batch, sync=False)  # lost in a crash at worst: the chain does not need it
        return True

    def late_precommits(self, height: int) -> tuple[CommitSignature, ...]:
        """The precommits for height's block that came after its certificate, kept in the
        certificate's form (same height, round and block); none if none came or were kept."""
        raw = self.kv.get(schema.late_key(height))
        if raw is None:
            return ()
        return CommitCertificate.decode(raw, max_bytes=len(raw)).precommits

    # -- checking -------------------------------------------------------------------------------
    def check(self, *, verify_state: bool = False) -> None:
        """Raise ChainCorruptError naming the first inconsistency found."""
        version = self.kv.get(schema.SCHEMA_VERSION_KEY)
        if version is None or int.from_bytes(version, "big") != schema.SCHEMA_VERSION:
            raise ChainCorruptError(
                f"data directory has schema version {version!r}; this carechain reads "
                f"{schema.SCHEMA_VERSION}",
                hint="use the carechain release that wrote it, or resync into a new directory",
            )
        height = self.state.height
        head = self.head()
        if height == 0:
            if head is not None:
                raise ChainCorruptError("a head block is recorded but the state is at genesis")
        else:
            self._check_head(height, head)
        if verify_state:
            try:
                self.state.verify()
            except StateCorruptError as exc:
                raise ChainCorruptError(str(exc)) from None

    def _check_head(self, height: int, head: tuple[int, bytes] | None) -> None:
        """The head block is the state's height's, readable, and its state root the state's."""
        if head is None:
            raise ChainCorruptError(f"state is at height {height} but no head block is recorded")
        head_height, head_hash = head
        if head_height != height:
            raise ChainCorruptError(
                f"head block is at height {head_height} but state is at height {height}",
                hint="the directory was changed outside carechain; restore it from a backup",
            )
        try:
            block = self.block(height)
            self.certificate(height)
        except CarechainError as exc:
            raise ChainCorruptError(f"head block {height} is unreadable: {exc}") from None
        if block.block_hash != head_hash:
            raise ChainCorruptError(f"head pointer names a different block than height {height}")
        if block.header.state_root != self.state.root:
            raise ChainCorruptError(
                f"state root {self.state.root.hex()[:16]} differs from block {height}'s "
                f"{block.header.state_root.hex()[:16]}"
            )
