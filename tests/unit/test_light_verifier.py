"""The light client's verification: trust carried from genesis across validator-set changes in
few steps (skipping, bisecting when a skip is not trusted), and every kind of lie refused with
an error that names it. Entries are proved against a trusted header of a real chain store."""

from __future__ import annotations

import dataclasses

import pytest

from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.state import Table
from carechain.consensus.light.verifier import (
    Clock,
    LightBlock,
    Trusted,
    VerificationError,
    sync_to,
    verify_adjacent,
    verify_entry,
)
from carechain.consensus.types import BlockHeader
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.chain_fixture import (
    COMMITTEE,
    certify_by,
    committee_chain,
    committee_genesis,
)
from carechain.tests.light_fixture import SyntheticChain, sign, synthetic_chain


class Fetcher:
    def __init__(self, chain: SyntheticChain, lies: dict[int, LightBlock] | None = None) -> None:
        self.chain = chain
        self.lies = lies or {}
        self.asked: list[int] = []

    def __call__(self, height: int) -> LightBlock:
        self.asked.append(height)
        return self.lies.get(height) or self.chain.blocks[height]


def test_trust_moves_from_genesis_across_changes_in_few_steps() -> None:
    chain = synthetic_chain(2000, changes=8)
    fetch = Fetcher(chain)
    start = Trusted.of_genesis(chain.genesis)
    newly = sync_to(start, chain.head, fetch, Clock(chain.time_after()))
    assert newly[-1].height == chain.head
    assert newly[-1].block_hash == chain.blocks[chain.head].header.hash()
    assert newly[-1].signed_power * 3 > newly[-1].total_power * 2
    assert len(set(fetch.asked)) < 80, "bisection, not a walk through every height"
    heights = [t.height for t in newly]
    assert heights == sorted(heights)


def test_adjacent_steps_walk_the_chain() -> None:
    chain = synthetic_chain(30, changes=3)
    trusted = Trusted.of_genesis(chain.genesis)
    clock = Clock(chain.time_after())
    for height in range(1, 31):
        trusted = verify_adjacent(trusted, chain.blocks[height], clock)
    assert trusted.height == 30


def _resigned(chain: SyntheticChain, block: LightBlock, **changes: object) -> LightBlock:
    """The block with header fields changed and signed again by its own set's keys: a lie the
    validators would have to make, not one a node can forge alone."""
    header = dataclasses.replace(block.header, **changes)  # type: ignore[arg-type]
    keys = [chain.keys[v.public_key] for v in block.validators.validators][:3]
    return LightBlock(header, sign(header, keys), block.validators)


def _forged(block: LightBlock, **changes: object) -> LightBlock:
    """The header changed, the certificate left as it was: what a lying node can do."""
    return LightBlock(
        dataclasses.replace(block.header, **changes),  # type: ignore[arg-type]
        block.certificate,
        block.validators,
    )


LIES = [
    ("a changed state root", lambda c, b: _forged(b, state_root=b"\x01" * 32), "certificate"),
    ("another chain", lambda c, b: _resigned(c, b, chain_id="other"), "chain"),
    ("a future time", lambda c, b: _resigned(c, b, time_ms=b.header.time_ms + 10**9), "future"),
    (
        "a certificate of another height",
        lambda c, b: LightBlock(b.header, c.blocks[b.height - 1].certificate, b.validators),
        "certificate is of another height",
    ),
    (
        "a validator set not its own",
        lambda c, b: LightBlock(b.header, b.certificate, c.blocks[1].validators),
        "validator set served is not its",
    ),
]


@pytest.mark.parametrize(("case", "lie", "says"), LIES, ids=[lie[0] for lie in LIES])
def test_a_lying_node_is_refused(case: str, lie: object, says: str) -> None:
    chain = synthetic_chain(200, changes=2, seed=3)
    target = chain.head
    lying = lie(chain, chain.blocks[target])  # type: ignore[operator]
    with pytest.raises(VerificationError, match=says):
        sync_to(
            Trusted.of_genesis(chain.genesis),
            target,
            Fetcher(chain, {target: lying}),
            Clock(chain.time_after()),
        )


def test_a_fork_and_a_foreign_set_are_refused() -> None:
    chain = synthetic_chain(20, changes=0)
    clock = Clock(chain.time_after())
    trusted = Trusted.of_genesis(chain.genesis)
    for height in range(1, 10):
        trusted = verify_adjacent(trusted, chain.blocks[height], clock)
    forked = _resigned(chain, chain.blocks[10], parent_hash=b"\x02" * 32)
    with pytest.raises(VerificationError, match="parent"):
        verify_adjacent(trusted, forked, clock)
    # a chain its own validators certified, none of whom this chain ever trusted
    foreign = synthetic_chain(20, changes=0, seed=9, first_key=500_000).blocks[15]
    with pytest.raises(VerificationError, match="parent"):
        sync_to(trusted, 15, Fetcher(chain, {15: foreign}), clock)


def test_stale_and_expired_trust_are_refused() -> None:
    chain = synthetic_chain(20, changes=0)
    trusted = Trusted.of_genesis(chain.genesis)
    with pytest.raises(VerificationError, match="not beyond"):
        sync_to(trusted, 0, Fetcher(chain), Clock(chain.time_after()))
    late = Clock(chain.time_after() + 10**12)
    with pytest.raises(VerificationError, match="older than the trusting period"):
        sync_to(trusted, 20, Fetcher(chain), late)


def _genesis_and_store(blocks: int) -> tuple[Genesis, ChainStore]:
    genesis = committee_genesis()
    store = ChainStore(MemoryKV())
    store.state.initialize(genesis)
    committee_chain(store, blocks)
    return genesis, store


def test_entries_verify_against_a_trusted_header_of_a_real_chain() -> None:
    genesis, store = _genesis_and_store(3)
    start = Trusted.of_genesis(genesis)
    assert start.state_root == store.state.root_at(0)[8:40]  # type: ignore[index]

    def fetch(height: int) -> LightBlock:
        block = store.block(height)
        return LightBlock(block.header, store.certificate(height), genesis.validators)

    clock = Clock(store.block(3).header.time_ms + 1000)
    trusted = sync_to(start, 3, fetch, clock)[-1]
    account, value = next(iter(store.table_entries(Table.ACCOUNT)))
    proof, found, height = store.state.prove(Table.ACCOUNT, account)
    assert (found, height) == (value, 3)
    verify_entry(trusted, Table.ACCOUNT, account, value, proof)
    with pytest.raises(VerificationError):
        verify_entry(trusted, Table.ACCOUNT, account, value + b"\x00", proof)
    with pytest.raises(VerificationError):
        verify_entry(trusted, Table.ACCOUNT, account, None, proof)
    absent, _, _ = store.state.prove(Table.ACCOUNT, b"\x00" * 20)
    verify_entry(trusted, Table.ACCOUNT, b"\x00" * 20, None, absent)
    with pytest.raises(VerificationError):
        verify_entry(start, Table.ACCOUNT, account, value, proof)  # another height's root


def test_a_header_signed_by_too_few_is_refused() -> None:
    genesis, store = _genesis_and_store(2)
    block = store.block(2)
    weak = LightBlock(block.header, certify_by(block, COMMITTEE[:2]), genesis.validators)
    trusted = Trusted.of_block(
        LightBlock(store.block(1).header, store.certificate(1), genesis.validators)
    )
    with pytest.raises(VerificationError, match="2/3"):
        verify_adjacent(trusted, weak, Clock(block.header.time_ms + 1000))
    assert isinstance(block.header, BlockHeader)
