"""The pure rules a partial pool follows: classification, co-signature admission, expiry."""

from __future__ import annotations

import dataclasses

from carechain.consensus.crypto import Purpose
from carechain.consensus.ledger.apply import TxStatus, classify, may_cosign, partial_expired
from carechain.consensus.types import TxSignature
from carechain.tests.ledger_world import World
from carechain.tests.strategies import deterministic_key


def test_classification_partial_then_complete_and_invalid() -> None:
    world = World()
    vault = world.create_vault()
    draft = world.record_draft(vault)
    partial = draft.signed(world.hospital["A"])
    context = world.next_context()
    assert classify(world.store, partial, context).status is TxStatus.PARTIAL
    assert classify(world.store, partial.signed_by(world.p1), context).status is TxStatus.COMPLETE
    wrong_nonce = dataclasses.replace(draft.unsigned(), nonce=99)
    result = classify(world.store, wrong_nonce.signed_by(world.p1), context)
    assert result.status is TxStatus.INVALID
    assert result.reason is not None
    assert result.reason.code == "bad_nonce"


def test_may_cosign_only_valid_new_signatures() -> None:
    world = World()
    vault = world.create_vault()
    tx = world.record_draft(vault).signed(world.hospital["A"])
    good = TxSignature(world.p1.public_key, world.p1.sign(Purpose.TX, tx.chain_id, tx.id))
    assert may_cosign(tx, good)
    assert not may_cosign(tx.with_signature(good), good), "already signed by that key"
    forged = TxSignature(deterministic_key(50).public_key, good.signature)
    assert not may_cosign(tx, forged)
    other_purpose = TxSignature(
        world.p1.public_key, world.p1.sign(Purpose.VOTE, tx.chain_id, tx.id)
    )
    assert not may_cosign(tx, other_purpose)


def test_partials_expire_at_their_own_expiry_or_the_pool_limit() -> None:
    world = World()
    vault = world.create_vault()
    tx = world.record_draft(vault).signed(world.hospital["A"])
    seen = world.time_ms
    limit = world.chain.params.partial_expiry_ms
    assert not partial_expired(tx, seen, seen + 1000, world.chain)
    assert partial_expired(tx, seen, tx.expiry_ms + 1, world.chain)
    assert partial_expired(tx, seen - limit - 1, seen, world.chain)
    assert not partial_expired(tx, seen - limit, seen, world.chain)
