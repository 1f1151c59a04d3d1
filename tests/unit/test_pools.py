"""The mempool's bookkeeping after a block, and the node's signature cache."""

from __future__ import annotations

import dataclasses

import pytest

from carechain.consensus.ledger.apply import SignatureCache, TxStatus, select_txs
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import Tx
from carechain.node.pools import Mempool, PoolFull, admit
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key


def _puts(world: World, vault: bytes, count: int) -> list[Tx]:
    first = world.record_draft(vault)
    drafts = [dataclasses.replace(world.record_draft(vault), nonce=first.nonce + i)
              for i in range(count)]  # fmt: skip
    return [d.signed(world.p1, world.hospital["A"]) for d in drafts]


def test_after_a_block_the_pool_drops_included_spent_and_expired_transactions() -> None:
    world = World()
    vault = world.create_vault()
    other_vault = world.create_vault("hba1c")  # its transactions stay, unchecked
    first, second, third = _puts(world, vault, 3)
    stranger = _puts(world, other_vault, 1)[0]
    pool = Mempool(100, 1 << 20)
    for tx in (first, second, third, stranger):
        assert pool.add(tx, 0)
    assert not pool.add(first, 0), "a duplicate is not added twice"
    spent = dataclasses.replace(third, expiry_ms=third.expiry_ms + 1)  # same nonce as third
    pool.add(spent, 0)
    world.block(first, second, third)
    block = world.blocks[-1]
    pool.after_commit(block, world.store, world.time_ms)
    assert list(pool.txs) == [stranger.id]
    assert pool.rejected[spent.id] == "bad_nonce"
    pool.after_commit(block, world.store, stranger.expiry_ms + 1)
    assert len(pool) == 0
    assert pool.rejected[stranger.id] == "expired"
    assert pool.size_bytes == 0


def test_a_full_pool_refuses_with_pool_full() -> None:
    world = World()
    vault = world.create_vault()
    first, second = _puts(world, vault, 2)
    pool = Mempool(1, 1 << 20)
    pool.add(first, 0)
    with pytest.raises(PoolFull, match="full"):
        pool.add(second, 0)


def test_the_pool_sends_again_only_what_has_waited_and_not_every_round() -> None:
    world = World()
    vault = world.create_vault()
    first, second, third = _puts(world, vault, 3)
    pool = Mempool(100, 1 << 20)
    pool.add(first, now_ms=1_000)
    pool.add(second, now_ms=5_000)
    pool.add(third, now_ms=9_000)
    assert pool.to_resend(10_000, waited_ms=8_000, limit=10) == [first]
    assert pool.to_resend(12_000, waited_ms=8_000, limit=10) == []  # first: sent 2 s ago
    assert pool.to_resend(13_000, waited_ms=8_000, limit=10) == [second]
    assert pool.to_resend(18_000, waited_ms=8_000, limit=1) == [first]  # the limit holds
    assert pool.to_resend(18_000, waited_ms=8_000, limit=10) == [third]
    pool._drop(first.id, None)  # committed: forgotten
    assert pool.to_resend(40_000, waited_ms=8_000, limit=10) == [second, third]


def test_the_signature_cache_verifies_each_signature_set_once() -> None:
    world = World()
    vault = world.create_vault()
    tx = _puts(world, vault, 1)[0]
    cache = SignatureCache(size=2)
    expected = frozenset({world.p1.public_key, world.hospital["A"].public_key})
    assert cache(tx) == expected
    assert cache(tx) == expected
    assert cache.hits == 1
    wrong = dataclasses.replace(tx.signatures[0], signature=bytes(64))
    forged = dataclasses.replace(tx, signatures=(wrong, *tx.signatures[1:]))
    for _ in range(2):  # a failure is never remembered
        with pytest.raises(TxRejected, match="bad_signature"):
            cache(forged)
    assert cache.hits == 1
    cache.forget([tx.witness_hash])  # committed: it is never checked again
    assert len(cache) == 0
    for other in _puts(world, vault, 3):
        cache(other)
    assert len(cache) == 2, "bounded: the oldest entry went"


def test_a_proposal_rejecting_a_transaction_ahead_of_its_predecessor_keeps_it() -> None:
    """Sent to another node, nonce n may arrive after n + 1: a proposal that cannot include
    n + 1 yet must not drop it; one whose nonce is spent goes, with its reason."""
    world = World()
    vault = world.create_vault()
    first, second = _puts(world, vault, 2)
    pool = Mempool(100, 1 << 20)
    pool.add(second, 0)
    pool.drop_rejected([(second, TxRejected("bad_nonce", "a gap"))], world.store)
    assert second.id in pool.txs
    world.block(first, second)
    pool.drop_rejected([(second, TxRejected("bad_nonce", "a gap"))], world.store)
    assert pool.rejected[second.id] == "bad_nonce"
    assert second.id not in pool.txs


def test_a_partial_ahead_of_its_predecessor_is_admitted_as_partial() -> None:
    """A hospital's record put waiting for the patient's signature, queued behind another
    transaction of the same vault, must go to the partial pool, not into a block."""
    world = World()
    vault = world.create_vault()
    first, _ = _puts(world, vault, 2)
    draft = world.record_draft(vault)
    ahead = dataclasses.replace(draft, nonce=first.nonce + 1)
    context = world.next_context()
    assert admit(world.store, ahead.signed(world.hospital["A"]), context) is TxStatus.PARTIAL
    complete = ahead.signed(world.p1, world.hospital["A"])
    assert admit(world.store, complete, context) is TxStatus.COMPLETE


def test_a_relayed_transaction_is_checked_but_not_executed_again() -> None:
    """What a registered validator relays as complete is admitted on its envelope, signatures,
    body and nonce alone; a transaction it could not have admitted still fails those."""
    world = World()
    vault = world.create_vault()
    draft = world.record_draft(vault)
    hospital_only = draft.signed(world.hospital["A"])  # executing it finds it partial
    context = world.next_context()
    assert admit(world.store, hospital_only, context) is TxStatus.PARTIAL
    assert admit(world.store, hospital_only, context, execute=False) is TxStatus.COMPLETE
    wrong = dataclasses.replace(hospital_only.signatures[0], signature=bytes(64))
    forged = dataclasses.replace(hospital_only, signatures=(wrong,))
    with pytest.raises(TxRejected, match="bad_signature"):
        admit(world.store, forged, context, execute=False)
    spent = dataclasses.replace(draft, nonce=draft.nonce - 1).signed(world.p1, world.hospital["A"])
    with pytest.raises(TxRejected, match="bad_nonce"):
        admit(world.store, spent, context, execute=False)


def test_a_proposal_stops_after_as_many_failures_as_it_may_include() -> None:
    """A pool of transactions that do not apply (a peer's, not executed on admission) cannot
    stretch a proposal's build past its budget: selection stops after `max_rejected`."""
    world = World()
    vault = world.create_vault()
    good = _puts(world, vault, 3)
    spent = [dataclasses.replace(tx, expiry_ms=tx.expiry_ms + 1) for tx in good]  # same nonces
    world.block(*good)
    later = _puts(world, vault, 2)
    candidates = [*spent, *later]
    context = world.next_context(1000)
    capped = select_txs(world.store, candidates, context, max_txs=10, max_bytes=1 << 20,
                        max_rejected=2)  # fmt: skip
    assert (len(capped.rejected), capped.txs) == (2, ())
    whole = select_txs(world.store, candidates, context, max_txs=10, max_bytes=1 << 20)
    assert len(whole.rejected) == 3
    assert [tx.id for tx in whole.txs] == [tx.id for tx in later]


def test_a_partial_is_kept_only_if_someone_with_standing_began_it() -> None:
    """Unsigned, or signed by a key neither its policy nor the institutions know: refused
    (anyone could fill every pool and every patient's list with those). Signed by a key the
    policy names (the patient, the team hospital), or by a registered institution the policy
    does not name (a hospital asking the trusted party for emergency access): kept."""
    world = World()
    vault = world.create_vault()
    context = world.next_context()
    draft = world.record_draft(vault)
    for spam in (draft.unsigned(), draft.signed(deterministic_key(4242))):
        with pytest.raises(TxRejected, match="no_standing"):
            admit(world.store, spam, context)
    assert admit(world.store, draft.signed(world.hospital["A"]), context) is TxStatus.PARTIAL
    assert admit(world.store, draft.signed(world.p1), context) is TxStatus.PARTIAL
    hospital_b = world.hospital["B"].public_key
    emergency = builders.open_emergency(
        CHAIN_ID, vault, world.nonce(vault), world.expiry(), hospital=hospital_b,
        epoch_key=world.epoch_keys[(vault, 1)], reason="unconscious", duration_ms=3_600_000,
    )  # fmt: skip
    assert admit(world.store, emergency.signed(world.hospital["B"]), context) is TxStatus.PARTIAL
    newcomer = (deterministic_key(4243), deterministic_key(4244))
    keys = (newcomer[0].public_key, newcomer[1].public_key)
    registration = builders.register_patient(CHAIN_ID, keys, world.expiry())
    assert admit(world.store, registration.signed(newcomer[0]), context) is TxStatus.PARTIAL
    with pytest.raises(TxRejected, match="no_standing"):
        admit(world.store, registration.unsigned(), context)
