"""What /metrics counts of each commit: the interval between blocks, and for each validator
the heights it voted on late (its precommit came after the certificate was made: this node
keeps it, `ChainStore.record_late`) and the heights it missed (no precommit in the
certificate, and none late before the next height was committed, when the engine stops
taking votes for it)."""

from __future__ import annotations

import collections
from collections import Counter

from carechain.consensus.ledger.governance import validator_set_at
from carechain.consensus.types import Block, CommitCertificate, CommitSignature
from carechain.storage.chain import ChainStore


class CommitTally:
    def __init__(self, store: ChainStore) -> None:
        self.store = store
        self.block_intervals_s: collections.deque[float] = collections.deque(maxlen=10_000)
        self.late_votes: Counter[str] = Counter()
        self.missed_votes: Counter[str] = Counter()
        last = store.last_header()
        self._last_block_time_ms = last.time_ms if last is not None else None
        # the last committed height and its validators (key -> name) absent from its
        # certificate: each is late or missed once the next height commits
        self._absent: tuple[int, dict[bytes, str]] | None = None

    def committed(self, block: Block, certificate: CommitCertificate) -> None:
        """Count a block as it commits (the store holds it; the validator set read is the
        height's own)."""
        height = block.header.height
        if self._last_block_time_ms is not None:
            interval_ms = max(0, block.header.time_ms - self._last_block_time_ms)
            self.block_intervals_s.append(interval_ms / 1000)
        self._last_block_time_ms = block.header.time_ms
        if self._absent is not None and self._absent[0] == height - 1:
            late = {entry.validator for entry in self.store.late_precommits(height - 1)}
            for key, name in self._absent[1].items():
                if key not in late:
                    self.missed_votes[name] += 1
        signers = {entry.validator for entry in certificate.precommits}
        validators = validator_set_at(self.store, height).validators
        absent = {v.public_key: v.name for v in validators if v.public_key not in signers}
        self._absent = (height, absent)

    def late(self, certificate: CommitCertificate, late: CommitSignature) -> None:
        """Keep a late precommit the engine found, and count it once."""
        if not self.store.record_late(certificate, late):
            return
        absent = self._absent
        name = absent[1].get(late.validator) if absent and absent[0] == certificate.height else None
        self.late_votes[name or late.validator.hex()[:16]] += 1
