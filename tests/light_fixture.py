"""A synthetic certified chain for the light client: headers linked by hash, each signed by more
than 2/3 of its validator set, the set replaced in part every few heights, so that trust has to
be carried across changes (and bisection has to happen when too much changed at once). No state
is executed: the light client checks headers, not transactions."""

from __future__ import annotations

import dataclasses
import random

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import ConsensusParams, Genesis
from carechain.consensus.light.verifier import LightBlock
from carechain.consensus.types import (
    ZERO_HASH,
    BlockHeader,
    CommitCertificate,
    CommitSignature,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from carechain.tests.strategies import deterministic_key

CHAIN_ID = "carechain-light"
GENESIS_TIME_MS = 1_790_000_000_000


@dataclasses.dataclass
class SyntheticChain:
    genesis: Genesis
    blocks: dict[int, LightBlock]
    keys: dict[bytes, PrivateKey]

    @property
    def head(self) -> int:
        return max(self.blocks)

    def time_after(self) -> int:
        """A clock just after the head's time."""
        return self.blocks[self.head].header.time_ms + 1000


def _set_of(keys: list[PrivateKey]) -> ValidatorSet:
    return ValidatorSet.of(
        [Validator(f"v{i}", k.public_key, k.public_key, 10) for i, k in enumerate(keys)]
    )


def sign(header: BlockHeader, keys: list[PrivateKey]) -> CommitCertificate:
    block_hash = header.hash()
    entries = []
    for key in sorted(keys, key=lambda k: k.public_key):
        vote = Vote(
            header.chain_id, VoteType.PRECOMMIT, header.height, 0, block_hash, key.public_key
        ).signed_by(key)
        entries.append(CommitSignature(vote.validator, vote.signature))
    return CommitCertificate(header.height, 0, block_hash, tuple(entries))


def synthetic_chain(
    heights: int,
    changes: int,
    *,
    validators: int = 4,
    replaced: int = 2,
    seed: int = 1,
    first_key: int = 10_000,
) -> SyntheticChain:
    """`heights` blocks; the set changes `changes` times, `replaced` of its members each time
    (with 4 validators, replacing 2 leaves exactly half the old power: enough for one skip,
    not for two changes at once)."""
    rng = random.Random(seed)
    fresh = iter(range(first_key, first_key + 1_000_000))
    members = [deterministic_key(next(fresh)) for _ in range(validators)]
    change_at = set(rng.sample(range(3, heights), changes)) if changes else set()
    sets: dict[int, list[PrivateKey]] = {}
    for height in range(1, heights + 2):
        if height in change_at:
            members = members[replaced:] + [deterministic_key(next(fresh)) for _ in range(replaced)]
        sets[height] = members
    genesis = Genesis(CHAIN_ID, GENESIS_TIME_MS, _set_of(sets[1]), 1, (), ConsensusParams(), ())
    blocks: dict[int, LightBlock] = {}
    parent = ZERO_HASH
    keys: dict[bytes, PrivateKey] = {}
    for height in range(1, heights + 1):
        signers = sets[height]
        header = BlockHeader(
            CHAIN_ID,
            height,
            0,
            GENESIS_TIME_MS + height * 1000,
            signers[height % len(signers)].public_key,
            parent,
            ZERO_HASH,
            rng.randbytes(32),  # a state root: the light client never recomputes one
            _set_of(signers).hash(),
            _set_of(sets[height + 1]).hash(),
        )
        quorum = signers[: len(signers) * 2 // 3 + 1]
        blocks[height] = LightBlock(header, sign(header, quorum), _set_of(signers))
        keys.update({k.public_key: k for k in signers})
        parent = header.hash()
    return SyntheticChain(genesis, blocks, keys)
