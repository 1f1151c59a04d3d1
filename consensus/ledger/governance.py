"""The validators' governance account: validator and institution changes, applied two heights
after the block that decides them (so the validator set of the next height is always known
when a block commits), and the genesis state.

The governance account's policy is `k_of(threshold, validator keys)`; the threshold starts at
genesis' `governance_threshold` and is ceil(2n/3) after every validator-set change.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from carechain.consensus.crypto import account_id, derived_account_id, sha256
from carechain.consensus.genesis import (
    Genesis,
    Institution,
    InstitutionKind,
    default_governance_threshold,
)
from carechain.consensus.ledger.bodies import ReportEquivocation
from carechain.consensus.ledger.context import (
    GOVERNANCE_KEY,
    KEY_CHANGES_KEY,
    TRUSTED_PARTIES_KEY,
    VALIDATORS_KEY,
    TxContext,
    institution_key_in_use,
    key_changes,
    load_account,
    pending_key,
    require_policy,
)
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.policy import OperationClass, PolicySet, k_of, single_key_policies
from carechain.consensus.ledger.records import (
    Account,
    AccountKind,
    Evidence,
    GovernanceState,
    InstitutionAction,
    InstitutionChange,
    InstitutionState,
    KeyChanges,
    KeyList,
    PendingChanges,
    ValidatorAction,
    ValidatorChange,
)
from carechain.consensus.ledger.state import (
    EmptyState,
    Overlay,
    StateAfter,
    StateDiff,
    StateReader,
    Table,
)
from carechain.consensus.types import ValidatorSet
from carechain.consensus.wire import pack

GOVERNANCE_ACCOUNT: Final = derived_account_id("governance")
GOVERNANCE_DELAY: Final = 2


def governance_policies(validators: ValidatorSet, threshold: int) -> PolicySet:
    policy = k_of(threshold, [v.public_key for v in validators.validators])
    return PolicySet(policy, policy, policy)


def validator_set(state: StateReader) -> ValidatorSet:
    raw = state.get(Table.META, VALIDATORS_KEY)
    assert raw is not None, "state has no validator set: was genesis applied?"
    return ValidatorSet.decode(raw)


def validator_set_at(state: StateReader, height: int) -> ValidatorSet:
    """The set that validates `height`, given state committed through height - 1."""
    raw = state.get(Table.META, pending_key(height))
    current = validator_set(state)
    if raw is None:
        return current
    return _apply_validator_changes(current, PendingChanges.decode(raw).validators)


def next_validator_set_hash(state: StateReader, diff: StateDiff, height: int) -> bytes:
    """The hash of the set that validates height + 1, as the state that block `height`
    leaves (`state`, committed through height - 1, with the block's `diff`) says."""
    return validator_set_at(StateAfter(state, diff), height + 1).hash()


def _apply_validator_changes(
    current: ValidatorSet, changes: tuple[ValidatorChange, ...]
) -> ValidatorSet:
    by_key = dict(current.by_key)
    for change in changes:
        key = change.validator.public_key
        if change.action is ValidatorAction.REMOVE:
            by_key.pop(key, None)
        else:
            by_key[key] = change.validator
    return ValidatorSet.of(list(by_key.values()))


def _schedule(state: Overlay, ctx: TxContext, change: ValidatorChange | InstitutionChange) -> None:
    key = pending_key(ctx.height + GOVERNANCE_DELAY)
    pending = state.load(Table.META, key, PendingChanges) or PendingChanges()
    if isinstance(change, ValidatorChange):
        pending = dataclasses.replace(pending, validators=(*pending.validators, change))
    else:
        pending = dataclasses.replace(pending, institutions=(*pending.institutions, change))
    state.save(Table.META, key, pending)


def registration_scheduled(state: Overlay, key: bytes, height: int) -> bool:
    """Whether governance decided to register an institution with `key`, taking effect after
    `height`: that key is spoken for."""
    for at in range(height + 1, height + GOVERNANCE_DELAY + 1):
        pending = state.load(Table.META, pending_key(at), PendingChanges)
        for change in pending.institutions if pending else ():
            if change.action is InstitutionAction.REGISTER and change.institution.public_key == key:
                return True
    return False


def _require_governance(state: Overlay, ctx: TxContext) -> None:
    if ctx.tx.account != GOVERNANCE_ACCOUNT:
        raise TxRejected("bad_account", "governance acts through the governance account")
    account = load_account(state, GOVERNANCE_ACCOUNT)
    require_policy(account, OperationClass.ADMIN, ctx.signers, "a governance change")


def process_change_validator(state: Overlay, body: ValidatorChange, ctx: TxContext) -> None:
    _require_governance(state, ctx)
    upcoming = validator_set_at(state, ctx.height + GOVERNANCE_DELAY)
    key = body.validator.public_key
    present = key in upcoming.by_key
    if body.action is ValidatorAction.ADD and present:
        raise TxRejected("bad_governance", f"{body.validator.name} is a validator already")
    if body.action is not ValidatorAction.ADD and not present:
        raise TxRejected("bad_governance", f"{body.validator.name} is not a validator")
    if body.action is ValidatorAction.REMOVE and len(upcoming.validators) == 1:
        raise TxRejected("bad_governance", "the last validator cannot be removed")
    _schedule(state, ctx, body)


def process_change_institution(state: Overlay, body: InstitutionChange, ctx: TxContext) -> None:
    _require_governance(state, ctx)
    existing = state.load(Table.INSTITUTION, body.institution.public_key, InstitutionState)
    if body.action is InstitutionAction.REGISTER and existing is not None:
        if not existing.active:
            raise TxRejected(
                "institution_exists",
                f"{body.institution.name}'s key was revoked at height {existing.revoked_height}: "
                "a revoked key is never registered again; register the institution's new key",
            )
        raise TxRejected("institution_exists", f"{body.institution.name} is registered already")
    if body.action is InstitutionAction.REVOKE and (existing is None or not existing.active):
        raise TxRejected("unknown_institution", f"{body.institution.name} is not active")
    key = body.institution.public_key
    if existing is None and (
        state.get(Table.ACCOUNT, account_id(key)) or state.get(Table.PATIENT_KEY, key)
    ):
        raise TxRejected("bad_account", "that key already controls a patient account")
    if body.action is InstitutionAction.REGISTER and institution_key_in_use(state, key):
        raise TxRejected("key_in_use", "that key is, or was, another institution's signing key")
    _schedule(state, ctx, body)


def process_equivocation(state: Overlay, body: ReportEquivocation, ctx: TxContext) -> None:
    """Record that a validator signed two conflicting votes. The votes prove it themselves,
    so anyone may submit it; it needs no account, nonce or signature of its own."""
    first, second = body.first, body.second
    same_slot = (first.validator, first.height, first.round, first.vote_type) == (
        second.validator,
        second.height,
        second.round,
        second.vote_type,
    )
    if not same_slot or first.block_hash == second.block_hash:
        raise TxRejected("bad_evidence", "the votes are not for one height, round and type")
    if first.chain_id != ctx.tx.chain_id or second.chain_id != ctx.tx.chain_id:
        raise TxRejected("bad_evidence", "the votes are for another chain")
    if first.validator not in validator_set(state).by_key:
        raise TxRejected("bad_evidence", "the key is not a validator")
    if not (first.signature_valid() and second.signature_valid()):
        raise TxRejected("bad_evidence", "a vote's signature does not verify")
    key = sha256(pack([first.validator, first.height, first.round, int(first.vote_type)]))
    if state.get(Table.EVIDENCE, key) is not None:
        raise TxRejected("duplicate_evidence", "this equivocation is recorded already")
    low, high = sorted([first.block_hash, second.block_hash])
    evidence = Evidence(
        first.validator, first.height, first.round, int(first.vote_type), low, high, ctx.height
    )
    state.save(Table.EVIDENCE, key, evidence)


def apply_pending(state: Overlay, height: int) -> None:
    """At the start of `height`, apply the governance changes decided at height - 2."""
    key = pending_key(height)
    pending = state.load(Table.META, key, PendingChanges)
    if pending is None:
        return
    if pending.validators:
        updated = _apply_validator_changes(validator_set(state), pending.validators)
        state.save(Table.META, VALIDATORS_KEY, updated)
        threshold = default_governance_threshold(len(updated.validators))
        state.save(Table.META, GOVERNANCE_KEY, GovernanceState(threshold))
        account = load_account(state, GOVERNANCE_ACCOUNT)
        policies = governance_policies(updated, threshold)
        state.save(
            Table.ACCOUNT, GOVERNANCE_ACCOUNT, dataclasses.replace(account, policies=policies)
        )
    for change in pending.institutions:
        if change.action is InstitutionAction.REGISTER:
            register_institution(state, change.institution, height)
        else:
            revoke_institution(state, change.institution.public_key, height)
    state.delete(Table.META, key)


def register_institution(state: Overlay, institution: Institution, height: int) -> None:
    key = institution.public_key
    state.save(Table.INSTITUTION, key, InstitutionState(institution, True, height))
    if state.get(Table.ACCOUNT, account_id(key)) is None:
        account = Account(AccountKind.INSTITUTION, 0, single_key_policies(key), (key,), height)
        state.save(Table.ACCOUNT, account_id(key), account)
    if institution.kind is InstitutionKind.TRUSTED_PARTY:
        _set_trusted(state, key, present=True)


def revoke_institution(state: Overlay, key: bytes, height: int) -> None:
    existing = state.load(Table.INSTITUTION, key, InstitutionState)
    assert existing is not None
    revoked = dataclasses.replace(existing, active=False, revoked_height=height)
    state.save(Table.INSTITUTION, key, revoked)
    if existing.kind is InstitutionKind.TRUSTED_PARTY:
        _set_trusted(state, key, present=False)
    changes = key_changes(state)
    counted = dataclasses.replace(changes, revocations=changes.revocations + 1)
    state.save(Table.META, KEY_CHANGES_KEY, counted)


def _set_trusted(state: Overlay, key: bytes, *, present: bool) -> None:
    listed = state.load(Table.META, TRUSTED_PARTIES_KEY, KeyList) or KeyList(())
    keys = set(listed.keys) | {key} if present else set(listed.keys) - {key}
    state.save(Table.META, TRUSTED_PARTIES_KEY, KeyList(tuple(sorted(keys))))


def genesis_state(genesis: Genesis) -> Overlay:
    """The state every node starts from, as writes over an empty store."""
    state = Overlay(EmptyState())
    state.save(Table.META, VALIDATORS_KEY, genesis.validators)
    state.save(Table.META, GOVERNANCE_KEY, GovernanceState(genesis.governance_threshold))
    state.save(Table.META, TRUSTED_PARTIES_KEY, KeyList(()))
    state.save(Table.META, KEY_CHANGES_KEY, KeyChanges())  # present: read by every transaction
    policies = governance_policies(genesis.validators, genesis.governance_threshold)
    state.save(
        Table.ACCOUNT, GOVERNANCE_ACCOUNT, Account(AccountKind.GOVERNANCE, 0, policies, (), 0)
    )
    for institution in genesis.institutions:
        register_institution(state, institution, 0)
    return state
