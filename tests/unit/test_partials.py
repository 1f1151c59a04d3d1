"""The pure rules a partial pool follows: classification, co-signature admission, expiry."""

from __future__ import annotations

import dataclasses

from carechain.consensus.crypto import Purpose
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.apply import TxStatus, classify, may_cosign, partial_expired
from carechain.consensus.ledger.context import trusted_parties
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import InstitutionAction
from carechain.consensus.ledger.state import Overlay
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.consensus.types import Tx, TxSignature
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World
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


def test_admission_judges_as_the_next_block_executes_after_governance_takes_effect() -> None:
    """A trusted party registered at height h reads every vault from h + 2. A vault created
    at h + 2 must seal its key to it: admission at h + 1 judges the next block as it will
    execute (the change applied), not the head's state, so a creation sealed to the head's
    members is refused at once with `bad_members` (it used to be admitted, then rejected
    in the block a few seconds later with no cause shown) and one sealed to the next
    block's members is admitted."""
    world = World()
    world.register()
    newcomer = deterministic_key(77)
    registration = builders.change_institution(
        CHAIN_ID, world.nonce(GOVERNANCE_ACCOUNT), world.expiry(), InstitutionAction.REGISTER,
        Institution("second-trusted", InstitutionKind.TRUSTED_PARTY, newcomer.public_key),
    )  # fmt: skip
    world.block(registration.signed(*world.validator_keys[:3]))
    world.block()  # height h + 1: the change takes effect at the start of the next block
    head_members = {*world.patient_keys, world.trusted.public_key}
    assert trusted_parties(Overlay(world.store)) == {world.trusted.public_key}

    def creation(members: set[bytes]) -> Tx:
        draft, _ = builders.create_vault(
            CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
            data_type="glucose", template=Template.PATIENT_CONTROLLED, team=[], members=members,
        )  # fmt: skip
        return draft.signed(world.p1, world.p2)

    stale = classify(world.store, creation(head_members), world.next_context())
    assert stale.status is TxStatus.INVALID
    assert stale.reason is not None
    assert stale.reason.code == "bad_members"
    fresh = creation({*head_members, newcomer.public_key})
    assert classify(world.store, fresh, world.next_context()).status is TxStatus.COMPLETE
    world.block(fresh)  # and the block executes it
    assert newcomer.public_key in world.vault(vault_id_of(world.patient, "glucose")).members
