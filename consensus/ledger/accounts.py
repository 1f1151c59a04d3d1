"""Kinds that create accounts and change their policies."""

from __future__ import annotations

import dataclasses

from carechain.consensus.crypto import account_id
from carechain.consensus.ledger.bodies import RegisterPatient, SetPolicy
from carechain.consensus.ledger.context import (
    TxContext,
    institution_key_in_use,
    load_account,
    require_policy,
    trusted_parties,
)
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.policy import (
    OperationClass,
    check_policy,
    k_of,
    patient_policies,
)
from carechain.consensus.ledger.records import Account, AccountKind, Guardian, GuardianScope
from carechain.consensus.ledger.state import Overlay, Table


def process_register_patient(state: Overlay, body: RegisterPatient, ctx: TxContext) -> None:
    """A patient registers itself with two keys; both must sign. The account id is the
    address of the first key."""
    first, second = body.patient_keys
    if first == second:
        raise TxRejected("bad_account", "a patient's two keys must differ")
    if ctx.tx.account != account_id(first):
        raise TxRejected("bad_account", "a patient account's id is the address of its first key")
    if state.get(Table.ACCOUNT, ctx.tx.account) is not None:
        raise TxRejected("account_exists", f"account {ctx.tx.account.hex()} is registered already")
    if institution_key_in_use(state, first) or institution_key_in_use(state, second):
        raise TxRejected("bad_account", "an institution's key cannot be a patient key")
    if ctx.tx.nonce != 1:
        raise TxRejected("bad_nonce", f"a new account starts at nonce 1, not {ctx.tx.nonce}")
    if not {first, second} <= ctx.signers:
        raise PolicyNotSatisfied(
            "both patient keys must sign the registration", k_of(2, [first, second])
        )
    policies = patient_policies((first, second), sorted(trusted_parties(state)))
    if state.get(Table.PATIENT_KEY, first) or state.get(Table.PATIENT_KEY, second):
        raise TxRejected("bad_account", "one of the keys controls another patient's account")
    account = Account(AccountKind.PATIENT, 1, policies, (first, second), ctx.height)
    if body.guardian is not None:  # a minor's account: its guardian controls it until handover
        if body.guardian in (first, second) or institution_key_in_use(state, body.guardian):
            raise TxRejected("bad_guardian", "a guardian is a person: not the minor's own key, "
                             "not an institution's")  # fmt: skip
        if body.guardian not in ctx.signers:
            raise PolicyNotSatisfied(
                "a minor's registration is signed by its guardian too", k_of(1, [body.guardian])
            )
        guardian = Guardian(body.guardian, GuardianScope.FULL, ctx.height)
        account = dataclasses.replace(account, guardians=(guardian,), minor=True)
        state.put(Table.GUARDIAN_OF, body.guardian + ctx.tx.account, bytes([GuardianScope.FULL]))
    state.save(Table.ACCOUNT, ctx.tx.account, account)
    for key in (first, second):  # which account a key controls, once key 1 is replaced too
        state.put(Table.PATIENT_KEY, key, ctx.tx.account)


def process_set_policy(state: Overlay, body: SetPolicy, ctx: TxContext) -> None:
    account = load_account(state, ctx.tx.account)
    if account.kind not in (AccountKind.PATIENT, AccountKind.VAULT):
        raise TxRejected("bad_account", f"a {account.kind.name.lower()} account's policy is fixed")
    require_policy(account, OperationClass.ADMIN, ctx.signers, "changing a policy")
    check_policy(body.policy, f"new {body.operation.name.lower()} policy")
    updated = account.policies.replaced(body.operation, body.policy)
    state.save(Table.ACCOUNT, ctx.tx.account, dataclasses.replace(account, policies=updated))
