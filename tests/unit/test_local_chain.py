"""The single-process chain: headers carry the committed state root; rejections commit nothing;
block time never goes backwards."""

from __future__ import annotations

import pytest

from carechain.consensus.ledger.apply import TxStatus
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import merkle_root
from carechain.node.local_chain import LocalChain
from carechain.node.wallet import builders
from carechain.storage.kv import MemoryKV
from carechain.tests.ledger_world import CHAIN_ID, World


def test_commits_carry_roots_and_links() -> None:
    world = World()
    times = iter([world.genesis.genesis_time_ms + 10, world.genesis.genesis_time_ms + 5])
    chain = LocalChain(MemoryKV(), world.genesis, b"\x01" * 32, clock_ms=lambda: next(times))
    tx = builders.register_patient(CHAIN_ID, world.patient_keys, world.expiry()).signed(
        world.p1, world.p2
    )
    first = chain.commit(tx)
    assert first.header.state_root == chain.store.root
    assert first.header.tx_root == merkle_root([tx.witness_hash])
    second = chain.commit()
    assert second.header.parent_hash == first.block_hash
    assert second.header.time_ms > first.header.time_ms, "time stays monotonic"


def test_a_rejected_transaction_commits_nothing() -> None:
    world = World()
    chain = LocalChain(
        MemoryKV(), world.genesis, b"\x01" * 32, clock_ms=lambda: world.time_ms + 1000
    )
    far = builders.register_patient(CHAIN_ID, world.patient_keys, 2**60).signed(world.p1)
    assert chain.classify(far).status is TxStatus.INVALID  # expiry too far ahead
    fine = builders.register_patient(CHAIN_ID, world.patient_keys, world.expiry())
    assert chain.classify(fine.signed(world.p1)).status is TxStatus.PARTIAL
    root = chain.store.root
    with pytest.raises(TxRejected):
        chain.commit(fine.signed(world.p1))
    assert chain.store.root == root
    assert chain.store.height == 0
