"""Real blocks with real commit certificates, for storage, sync and audit tests: a one-validator
chain whose blocks each register a few patients. Built once per process and cached."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import ConsensusParams, Genesis
from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.state import StateDiff
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from carechain.node.local_chain import LocalChain
from carechain.node.wallet import builders
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.strategies import deterministic_key

CHAIN_ID = "carechain-fixture"
GENESIS_TIME_MS = 1_790_000_000_000
VALIDATOR = deterministic_key(90)


@functools.cache
def fixture_genesis() -> Genesis:
    validators = ValidatorSet.of([Validator("v0", VALIDATOR.public_key, VALIDATOR.public_key, 10)])
    return Genesis(CHAIN_ID, GENESIS_TIME_MS, validators, 1, (), ConsensusParams(), ())


def certify(block: Block) -> CommitCertificate:
    vote = Vote(
        CHAIN_ID, VoteType.PRECOMMIT, block.header.height, 0, block.block_hash, VALIDATOR.public_key
    ).signed_by(VALIDATOR)
    return CommitCertificate(
        block.header.height, 0, block.block_hash, (CommitSignature(vote.validator, vote.signature),)
    )


def _registrations(keys: Iterator[PrivateKey], count: int) -> list[Tx]:
    """`count` patient registrations, each by two fresh keys from `keys`."""
    txs = []
    for _ in range(count):
        first, second = next(keys), next(keys)
        draft = builders.register_patient(
            CHAIN_ID, (first.public_key, second.public_key), GENESIS_TIME_MS + 10**9
        )
        txs.append(draft.signed(first, second))
    return txs


@functools.cache
def certified_blocks(count: int, txs_per_block: int = 3) -> list[tuple[Block, CommitCertificate]]:
    ticks = itertools.count(GENESIS_TIME_MS + 1000, 1000)
    chain = LocalChain(MemoryKV(), fixture_genesis(), VALIDATOR.public_key, lambda: next(ticks))
    keys = (deterministic_key(100_000 + i) for i in itertools.count())
    made = []
    for _ in range(count):
        block = chain.commit(*_registrations(keys, txs_per_block))
        made.append((block, certify(block)))
    return made


COMMITTEE = [deterministic_key(95 + i) for i in range(4)]


@functools.cache
def committee_genesis() -> Genesis:
    validators = ValidatorSet.of(
        [Validator(f"v{i}", k.public_key, k.public_key, 10) for i, k in enumerate(COMMITTEE)]
    )
    return Genesis(CHAIN_ID, GENESIS_TIME_MS, validators, 3, (), ConsensusParams(), ())


def certify_by(block: Block, keys: list[PrivateKey]) -> CommitCertificate:
    entries = []
    for key in sorted(keys, key=lambda k: k.public_key):
        vote = Vote(
            CHAIN_ID, VoteType.PRECOMMIT, block.header.height, 0, block.block_hash, key.public_key
        ).signed_by(key)
        entries.append(CommitSignature(vote.validator, vote.signature))
    return CommitCertificate(block.header.height, 0, block.block_hash, tuple(entries))


def committee_chain(store: ChainStore, count: int, txs_per_block: int = 2) -> list[Block]:
    """Commit `count` blocks of patient registrations, each certified by 3 of 4 validators,
    into `store` (a ChainStore initialised with `committee_genesis()`)."""
    ticks = itertools.count(GENESIS_TIME_MS + 1000, 1000)
    chain = LocalChain(MemoryKV(), committee_genesis(), None, lambda: next(ticks))
    keys = (deterministic_key(200_000 + i) for i in itertools.count())
    made = []
    for _ in range(count):
        block = chain.commit(*_registrations(keys, txs_per_block))
        store.commit(block, certify_by(block, COMMITTEE[:3]), _diff_of(store, block))
        made.append(block)
    return made


def _diff_of(store: ChainStore, block: Block) -> StateDiff:
    return apply_block(store, block, ChainContext.from_genesis(committee_genesis()))
