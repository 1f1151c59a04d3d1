"""A patient's guardians from the signers' side (`carechain guardian ...`): name one (every
epoch key of every vault unsealed with a signer's own copy and sealed to the guardian), remove
one or hand a minor's account over (every vault moved to a new epoch the removed guardians do
not hold), and list who acts for whom. The ledger's rules are in
`consensus/ledger/guardians.py`."""

from __future__ import annotations

from typing import Any

from carechain.consensus import crypto
from carechain.consensus.errors import InvalidInput
from carechain.consensus.ledger.context import required_members
from carechain.consensus.ledger.records import Account, AccountKind, GuardianScope
from carechain.consensus.ledger.state import Table
from carechain.consensus.types import Tx
from carechain.node.wallet import builders
from carechain.node.wallet.client import RemoteState
from carechain.node.wallet.context import FlowContext, sealing_keys
from carechain.node.wallet.recovery_actions import all_epoch_keys


def patient_state(context: FlowContext, patient: bytes) -> Account:
    found = context.state().load(Table.ACCOUNT, patient, Account)
    if found is None or found.kind is not AccountKind.PATIENT:
        raise InvalidInput(
            f"no patient account {crypto.encode_address(patient)} on chain",
            hint="`carechain patient register` prints the patient's address",
        )
    return found


def add_guardian(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
    guardian: bytes,
    scope: GuardianScope,
) -> Tx:
    """`guardian.add`, signed by `keys` (both patient keys; for a minor, a full guardian), the
    first of which that holds a copy of an epoch key unseals it for the guardian."""
    state = context.next_state()
    vaults = context.vaults_of(patient).values()
    epoch_keys = {vault.vault_id: all_epoch_keys(state, vault, keys) for vault in vaults}
    draft = builders.add_guardian(
        context.chain_id, patient, context.nonce(patient), context.expiry(),
        guardian=guardian, scope=scope, epoch_keys=epoch_keys,
    )  # fmt: skip
    return draft.signed(*keys)


def remove_guardians(
    context: FlowContext, keys: list[crypto.PrivateKey], patient: bytes, guardian: bytes | None
) -> Tx:
    """`guardian.remove` of `guardian`, or (None) a minor's `guardian.handover`; every vault's
    next epoch sealed to who reads it once the guardian(s) are gone."""
    account = patient_state(context, patient)
    gone = account.guardian_keys if guardian is None else {guardian}
    state = context.next_state()
    new_epochs: dict[bytes, tuple[int, builders.Members]] = {}
    for vault in context.vaults_of(patient).values():
        members = set(required_members(state, vault, context.now_ms())) - gone
        new_epochs[vault.vault_id] = (vault.epoch + 1, sealing_keys(state, members))
    draft, _ = builders.remove_guardians(
        context.chain_id, patient, context.nonce(patient), context.expiry(),
        guardian=guardian, new_epochs=new_epochs,
    )  # fmt: skip
    return draft.signed(*keys)


def guardians_of(context: FlowContext, patient: bytes) -> dict[str, Any]:
    account = patient_state(context, patient)
    return {
        "patient": crypto.encode_address(patient),
        "minor": account.minor,
        "guardians": [
            {"key": g.key.hex(), "scope": g.scope.name.lower(), "added_height": g.added_height}
            for g in account.guardians
        ],
    }


def wards_of(context: FlowContext, guardian: bytes) -> list[dict[str, Any]]:
    """Whom `guardian` acts for: each patient and the scope."""
    entries = RemoteState(context.client).table_entries(Table.GUARDIAN_OF, guardian)
    return [
        {"patient": crypto.encode_address(key[32:]), "scope": GuardianScope(value[0]).name.lower()}
        for key, value in entries
    ]
