"""Who proposes, and how votes are counted.

Proposer: weighted round-robin, interleaved. Powers are divided by their gcd and one cycle of
smooth weighted round-robin (as in nginx) is laid out; the proposer of (height, round) is the
cycle's entry at (height + round) mod its length. It is a pure function of the validator set,
so every node agrees without shared mutable state, and a validator of power 2 proposes twice
per cycle, never twice in a row when others can take a turn.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Final

from carechain.consensus.types import ValidatorSet, Vote

CYCLE_LENGTH_MAX: Final = 4096


@functools.lru_cache(maxsize=64)
def proposer_cycle(validators: ValidatorSet) -> tuple[bytes, ...]:
    powers = [v.power for v in validators.validators]
    divisor = functools.reduce(math.gcd, powers)
    weights = [p // divisor for p in powers]
    total = sum(weights)
    if total > CYCLE_LENGTH_MAX:  # keep the cycle short; proportions stay close
        weights = [max(1, w * CYCLE_LENGTH_MAX // total) for w in weights]
        total = sum(weights)
    keys = [v.public_key for v in validators.validators]
    current = [0] * len(keys)
    cycle = []
    for _ in range(total):
        for index, weight in enumerate(weights):
            current[index] += weight
        chosen = max(range(len(keys)), key=lambda i: (current[i], keys[i]))
        current[chosen] -= total
        cycle.append(keys[chosen])
    return tuple(cycle)


def proposer_of(validators: ValidatorSet, height: int, round: int) -> bytes:
    cycle = proposer_cycle(validators)
    return cycle[(height + round) % len(cycle)]


HASHES_PER_VALIDATOR_MAX: Final = 8


@dataclasses.dataclass
class VoteSet:
    """The votes of one type at one height and round.

    Each validator's power counts at most once per block hash (b"" = nil), and once towards
    the total. A validator that equivocates thus counts for each hash it signed: that is what
    lets honest nodes that saw its votes in different orders reach the same quorum (Tendermint
    reaches the same through peers' +2/3 claims), and it is safe, since two quorums of more
    than 2/3 for different hashes would need more than 1/3 of the power to sign both. At most
    `HASHES_PER_VALIDATOR_MAX` hashes are kept per validator.
    """

    validators: ValidatorSet
    by_validator: dict[bytes, dict[bytes, Vote]] = dataclasses.field(default_factory=dict)
    power_by_hash: dict[bytes, int] = dataclasses.field(default_factory=dict)
    total: int = 0

    def has(self, vote: Vote) -> bool:
        return vote.block_hash in self.by_validator.get(vote.validator, {})

    def add(self, vote: Vote) -> Vote | None:
        """Count `vote`; returns an earlier vote of the same validator for another hash (the
        evidence of equivocation), if there is one."""
        votes = self.by_validator.setdefault(vote.validator, {})
        if vote.block_hash in votes or len(votes) >= HASHES_PER_VALIDATOR_MAX:
            return None
        power = self.validators.by_key[vote.validator].power
        earlier = next(iter(votes.values()), None)
        if earlier is None:
            self.total += power
        votes[vote.block_hash] = vote
        self.power_by_hash[vote.block_hash] = self.power_by_hash.get(vote.block_hash, 0) + power
        return earlier

    def votes_for(self, block_hash: bytes) -> list[Vote]:
        found = (votes.get(block_hash) for votes in self.by_validator.values())
        return sorted((v for v in found if v is not None), key=lambda v: v.validator)

    def has_quorum_any(self) -> bool:
        return self.validators.has_quorum(self.total)

    def quorum_hash(self) -> bytes | None:
        """The hash (b"" for nil) that more than 2/3 of the power voted for, if any."""
        for block_hash, power in self.power_by_hash.items():
            if self.validators.has_quorum(power):
                return block_hash
        return None

    def has_quorum_for(self, block_hash: bytes) -> bool:
        return self.validators.has_quorum(self.power_by_hash.get(block_hash, 0))
