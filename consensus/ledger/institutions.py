"""An institution's planned key rotation: a hospital replaces the key it signs and reads with,
and keeps its name on the ledger.

Teams, grants, policies and sealed epoch keys name an institution by its first key (the one
governance registered), so nothing of the patients' changes when it rotates:
- `institution.rotate_key`, signed by the key it has now and the new one, makes the new key
  stand for the institution (`context.acting_keys`: its signature counts as the first key's)
  and retires the old one, whose signature counts for nothing from then on;
- `institution.reseal`, signed by its key now, replaces its own copies of epoch keys with the
  same keys sealed to the new key, in batches (a hospital may hold many); it can replace only a
  copy it holds, never add one. Patients' wallets seal new epochs to each member's key now.

A compromised key is not rotated but revoked by governance (the institution registers a new
key): its holder could otherwise rotate first."""

from __future__ import annotations

import dataclasses

from carechain.consensus.ledger.bodies import ResealEpochKeys, RotateInstitutionKey
from carechain.consensus.ledger.context import (
    KEY_CHANGES_KEY,
    RETIRED,
    TxContext,
    active_institution,
    epoch_key_key,
    key_changes,
    key_taken,
    load_account,
    require_policy,
)
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.governance import registration_scheduled
from carechain.consensus.ledger.policy import OperationClass, k_of
from carechain.consensus.ledger.records import AccountKind, InstitutionState
from carechain.consensus.ledger.state import Overlay, Table


def _institution(state: Overlay, ctx: TxContext) -> InstitutionState:
    account = load_account(state, ctx.tx.account)
    if account.kind is not AccountKind.INSTITUTION:
        raise TxRejected("bad_account", "only an institution's account rotates an institution key")
    return active_institution(state, account.keys[0])


def process_rotate_key(state: Overlay, body: RotateInstitutionKey, ctx: TxContext) -> None:
    found = _institution(state, ctx)
    first, old, new = found.institution.public_key, found.current_key, body.new_key
    if not {first, new} <= ctx.signers:  # `first`: the key it has now signed (it stands for it)
        raise PolicyNotSatisfied(
            "rotating an institution's key needs its key now and the new key", k_of(2, [old, new])
        )
    if key_taken(state, new) or registration_scheduled(state, new, ctx.height):
        raise TxRejected(
            "key_in_use", "the new key is, or was, an institution's or a patient's key"
        )
    state.save(Table.INSTITUTION, first, dataclasses.replace(found, key=new))
    state.put(Table.INSTITUTION_KEY, old, RETIRED)  # it stands for nobody from now on
    state.put(Table.INSTITUTION_KEY, new, first)
    changes = key_changes(state)
    rotated = dataclasses.replace(changes, rotations=changes.rotations + 1)
    state.save(Table.META, KEY_CHANGES_KEY, rotated)


def process_reseal(state: Overlay, body: ResealEpochKeys, ctx: TxContext) -> None:
    found = _institution(state, ctx)
    require_policy(
        load_account(state, ctx.tx.account), OperationClass.ADMIN, ctx.signers, "resealing"
    )
    first = found.institution.public_key
    places = [(entry.vault, entry.epoch) for entry in body.keys]
    if places != sorted(set(places)):
        raise TxRejected("bad_body", "resealed keys go by vault, then epoch, each once")
    for entry in body.keys:
        key = epoch_key_key(entry.vault, entry.epoch, first)
        if state.get(Table.EPOCH_KEY, key) is None:
            raise TxRejected(
                "unknown_epoch_key",
                f"the institution holds no key of epoch {entry.epoch} of vault "
                f"{entry.vault.hex()}: it reseals only its own copies",
            )
        state.put(Table.EPOCH_KEY, key, entry.sealed)
