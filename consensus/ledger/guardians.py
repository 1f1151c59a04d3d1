"""Guardians: a person who acts for a patient (a parent, a carer, a legal proxy).

A patient names a guardian with a scope (`guardian.add`, both patient keys):
- `cosign`: the guardian's signature stands for one patient key (it co-signs what a team
  hospital began: a reading, a report), and it reads every vault;
- `full`: its signature stands for the patient in everything but changing who controls the
  account: never for `guardian.*`, `policy.set` or `recovery.*`; and it reads every vault.
The guardian reads as a member: `guardian.add` carries every epoch key of every vault sealed
to it, and new epochs are sealed to it (`context.readers_by_right`). `guardian.remove` (both
patient keys, or the guardian itself stepping down) moves every vault to a new epoch it does
not hold.

A minor's account is registered with a guardian (`account.register` with `guardian`, signed by
the child's two keys and the guardian): until `guardian.handover` its own keys act for nothing
and its full guardians may name or remove guardians; the handover (the child's two keys with a
full guardian, or with a trusted party when no guardian agrees) makes it an adult's account,
with no guardian and a new epoch in every vault.

The signatures a kind sees are `acting_for`'s: what they stand for once guardians count."""

from __future__ import annotations

import dataclasses
from typing import Final

from carechain.consensus.ledger.bodies import AddGuardian, NewEpoch, RemoveGuardians
from carechain.consensus.ledger.context import (
    TxContext,
    epoch_key_key,
    every_patient_vault,
    institution_key_in_use,
    load_patient,
    require_policy,
    trusted_parties,
)
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.policy import OperationClass, k_of
from carechain.consensus.ledger.records import (
    GUARDIANS_MAX,
    Account,
    AccountKind,
    Guardian,
    GuardianScope,
    Recovery,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.vaults import rotate
from carechain.consensus.types import Tx

# Kinds a guardian's signature never stands for the patient in: who controls the account.
UNDELEGATED: Final = frozenset(
    {
        "guardian.add",
        "guardian.remove",
        "guardian.handover",
        "policy.set",
        "recovery.start",
        "recovery.cancel",
        "recovery.finish",
    }
)


def _owner(state: Overlay, account_id: bytes, account: Account) -> Account | None:
    if account.kind is AccountKind.PATIENT:
        return account
    if account.kind is AccountKind.VAULT:
        vault = state.load(Table.VAULT, account_id, Vault)
        return None if vault is None else state.load(Table.ACCOUNT, vault.owner, Account)
    return None


def acting_for(state: Overlay, tx: Tx, signers: frozenset[bytes]) -> frozenset[bytes]:
    """The keys `signers` act as on `tx`'s account once its patient's guardians count: a full
    guardian's signature as both patient keys, cosign guardians' (however many sign) as one
    more; a minor's own keys as nobody (but in its handover)."""
    account = state.load(Table.ACCOUNT, tx.account, Account)
    owner = None if account is None else _owner(state, tx.account, account)
    if owner is None or not (owner.guardians or owner.minor):
        return signers
    acting = set(signers)
    if owner.minor and tx.kind != "guardian.handover":
        acting -= set(owner.keys)
    if tx.kind in UNDELEGATED:
        return frozenset(acting)
    scopes = {guardian.scope for guardian in owner.guardians if guardian.key in signers}
    if GuardianScope.FULL in scopes:
        acting |= set(owner.keys)
    elif GuardianScope.COSIGN in scopes:  # all cosign guardians together: one key, not two
        acting.update([key for key in owner.keys if key not in acting][:1])
    return frozenset(acting)


def _full_guardians(account: Account) -> list[bytes]:
    return [g.key for g in account.guardians if g.scope is GuardianScope.FULL]


def _require_control(account: Account, ctx: TxContext, what: str) -> None:
    """Who changes a patient's guardians: both patient keys; for a minor, a full guardian."""
    if not account.minor:
        require_policy(account, OperationClass.ADMIN, ctx.signers, what)
        return
    full = _full_guardians(account)
    if not ctx.signers & set(full):
        raise PolicyNotSatisfied(f"{what} for a minor needs a full guardian", k_of(1, full))


def process_add_guardian(state: Overlay, body: AddGuardian, ctx: TxContext) -> None:
    account = load_patient(state, ctx, "has guardians")
    _require_control(account, ctx, "naming a guardian")
    if body.key in account.keys or institution_key_in_use(state, body.key):
        raise TxRejected("bad_guardian", "a guardian is a person: not the patient's own key, "
                         "not an institution's")  # fmt: skip
    if body.key in account.guardian_keys:
        raise TxRejected("bad_guardian", "that key is a guardian of this patient already")
    pending = state.load(Table.RECOVERY, ctx.tx.account, Recovery)
    if pending is not None and pending.replacement == body.key:
        raise TxRejected("bad_guardian", "that key is the replacement of a pending recovery")
    if len(account.guardians) >= GUARDIANS_MAX:
        raise TxRejected("bad_guardian", f"a patient has at most {GUARDIANS_MAX} guardians")
    named = [e.vault for e in body.vaults]
    vaults = every_patient_vault(state, named, ctx, "bad_guardian", "the change names")
    guardian = Guardian(body.key, body.scope, ctx.height)
    state.save(
        Table.ACCOUNT,
        ctx.tx.account,
        dataclasses.replace(account, guardians=(*account.guardians, guardian)),
    )
    state.put(Table.GUARDIAN_OF, body.key + ctx.tx.account, bytes([body.scope]))
    for vault, given in zip(vaults, body.vaults, strict=True):
        if len(given.epochs) != vault.epoch:
            raise TxRejected(
                "bad_guardian",
                f"vault {vault.vault_id.hex()} has {vault.epoch} epoch(s): each one's key "
                f"sealed to the guardian, not {len(given.epochs)}",
            )
        for epoch, sealed in enumerate(given.epochs, start=1):
            state.put(Table.EPOCH_KEY, epoch_key_key(vault.vault_id, epoch, body.key), sealed)
        members = tuple(sorted({*vault.members, body.key}))
        state.save(Table.VAULT, vault.vault_id, dataclasses.replace(vault, members=members))


def _remove(
    state: Overlay,
    account: Account,
    keys: frozenset[bytes],
    vaults: tuple[NewEpoch, ...],
    ctx: TxContext,
    *,
    minor: bool,
) -> None:
    """Drop the guardians `keys` (all of them on a handover) and rotate every vault."""
    kept = tuple(g for g in account.guardians if g.key not in keys)
    named = [v.vault for v in vaults]
    given = every_patient_vault(state, named, ctx, "bad_guardian", "the change names")
    updated = dataclasses.replace(account, guardians=kept, minor=minor)
    state.save(Table.ACCOUNT, ctx.tx.account, updated)
    for key in keys:
        state.delete(Table.GUARDIAN_OF, key + ctx.tx.account)
    for vault, change in zip(given, vaults, strict=True):
        rotate(state, vault, change.new_epoch, change.sealed_epoch_keys, ctx)


def process_remove_guardian(state: Overlay, body: RemoveGuardians, ctx: TxContext) -> None:
    account = load_patient(state, ctx, "has guardians")
    if body.key is None or body.key not in account.guardian_keys:
        raise TxRejected("bad_guardian", "name one of the patient's guardians")
    if body.key not in ctx.signers:  # a guardian may step down by itself
        _require_control(account, ctx, "removing a guardian")
    if account.minor and not set(_full_guardians(account)) - {body.key}:
        raise TxRejected("bad_guardian", "a minor keeps a full guardian until its handover")
    _remove(state, account, frozenset({body.key}), body.vaults, ctx, minor=account.minor)


def process_handover(state: Overlay, body: RemoveGuardians, ctx: TxContext) -> None:
    """A minor comes of age: its two keys and a full guardian (or a trusted party, when no
    guardian agrees) sign; every guardian goes, every vault gets a new epoch."""
    account = load_patient(state, ctx, "has guardians")
    if not account.minor:
        raise TxRejected("bad_guardian", "only a minor's account is handed over")
    if body.key is not None:
        raise TxRejected("bad_guardian", "a handover names no guardian: all of them go")
    witnesses = sorted({*_full_guardians(account), *trusted_parties(state)})
    if not set(account.keys) <= ctx.signers or not ctx.signers & set(witnesses):
        raise PolicyNotSatisfied(
            "a handover needs the patient's two keys and a full guardian or a trusted party",
            k_of(2, [k_of(2, list(account.keys)), k_of(1, witnesses)]),
        )
    _remove(state, account, account.guardian_keys, body.vaults, ctx, minor=False)
