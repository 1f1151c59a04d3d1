"""An institution governance revoked (a compromised key, a hospital that left) loses its powers
on the ledger: its signature counts for no patient's policy, it reads by no right and no grant,
its receipts and blob requests are refused, and the next epoch of every vault it could read must
be sealed without it. Its key is never registered again."""

from __future__ import annotations

import pytest

from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.blob_access import BlobAccessDenied, BlobRequest, authorise
from carechain.consensus.ledger.context import is_revoked, key_changes, required_members
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.records import InstitutionAction
from carechain.consensus.ledger.state import Overlay
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World


def _world() -> tuple[World, bytes, bytes, bytes]:
    """A glucose vault with team hospital A, one record, and a read grant to B."""
    world = World()
    vault = world.create_vault(team=("A",))
    record = world.put_record(vault)
    grant = world.grant(vault, "B")
    return world, vault, record, grant


def _members(world: World, vault: bytes) -> frozenset[bytes]:
    return required_members(Overlay(world.store), world.vault(vault), world.time_ms + 1000)


def _blob_request(world: World, reader: str, vault: bytes, record: bytes) -> BlobRequest:
    key = world.hospital[reader]
    request = BlobRequest(CHAIN_ID, key.public_key, vault, record, "inline", world.time_ms)
    return request.signed_by(key)


def test_a_revoked_team_hospital_neither_writes_nor_reads_and_the_next_epoch_leaves_it_out() -> (
    None
):
    world, vault, record, _ = _world()
    a = world.hospital["A"].public_key
    assert a in _members(world, vault)
    world.govern_institution(InstitutionAction.REVOKE, "A")
    assert is_revoked(Overlay(world.store), a)
    assert key_changes(Overlay(world.store)).revocations == 1
    assert a not in world.readers(vault)
    assert a not in _members(world, vault)
    assert a in world.vault(vault).members, "it still holds the current epoch's key"
    refused_put = world.reject(world.record_draft(vault).signed(world.p1, world.hospital["A"]))
    assert refused_put.code == "policy_not_satisfied", "A's signature no longer counts"
    assert world.reject(world.receipt("A", vault, record)).code == "unknown_institution"
    with pytest.raises(BlobAccessDenied, match="revoked"):
        authorise(world.store, CHAIN_ID, _blob_request(world, "A", vault, record), world.time_ms)
    # the patient's next epoch must leave A out: sealed to the old holders, it is refused
    stale = world.rotate(vault, set(world.vault(vault).members))
    assert world.reject(stale).code == "bad_members"
    world.block(world.rotate(vault, set(_members(world, vault))))
    assert a not in world.vault(vault).members
    world.put_record(vault, world.p1, world.p2)  # the patient still writes


def test_a_revoked_grantee_reads_nothing_more_and_its_key_is_never_registered_again() -> None:
    world, vault, record, grant = _world()
    b = world.hospital["B"].public_key
    assert b in _members(world, vault)
    world.block(world.receipt("B", vault, record, grant))
    world.govern_institution(InstitutionAction.REVOKE, "B")
    assert b not in _members(world, vault), "its grant counts no more"
    assert world.reject(world.receipt("B", vault, record, grant)).code == "unknown_institution"
    with pytest.raises(BlobAccessDenied, match="revoked"):
        authorise(world.store, CHAIN_ID, _blob_request(world, "B", vault, record), world.time_ms)
    register_again = builders.change_institution(
        CHAIN_ID, world.nonce(GOVERNANCE_ACCOUNT), world.expiry(), InstitutionAction.REGISTER,
        Institution("hospital-B", InstitutionKind.HOSPITAL, b),
    )  # fmt: skip
    refused = world.reject(register_again.signed(*world.validator_keys[:3]))
    assert refused.code == "institution_exists"
    assert "never registered again" in refused.message


def test_governance_signatures_count_whatever_institution_is_revoked() -> None:
    """Revoking one institution after another: each governance change is signed by the
    validators and applies; the list holds exactly the revoked keys."""
    world = World()
    world.govern_institution(InstitutionAction.REVOKE, "A")
    world.govern_institution(InstitutionAction.REVOKE, "C")
    state = Overlay(world.store)
    assert {name for name, key in world.hospital.items() if is_revoked(state, key.public_key)} == {
        "A",
        "C",
    }
    assert key_changes(state).revocations == 2
