"""Key-loss recovery: a patient who lost one of its two keys gets control back, and no
institution can take it (the seed paper's section 4.2 gives the trusted party its part).

Two phases on the patient's account:
- `recovery.start` names the lost key and its replacement. It needs the recovery policy:
  (a remaining patient key AND a trusted party), the fast path, or (a trusted party AND a
  hospital on the team of one of the patient's vaults), the slow path. Both patient keys
  together are a fast path too: a planned rotation (`carechain patient rotate-key`), where the
  patient replaces a key it still holds. A slow recovery may
  finish only `recovery_delay_ms` (genesis) after it started; meanwhile ANY current patient key,
  the lost one included, may cancel it (`recovery.cancel`): a patient who still holds a key
  always hears of it and can stop it. The fast path needs no wait (the patient is there).
- `recovery.finish` (the same policy) puts the replacement where the lost key was, in the
  account and in every policy of every vault of the patient (walking custom policies too), in
  one transaction. It carries, for each vault, every past epoch's key sealed to the
  replacement (so old records read again) and a new epoch sealed to the members who read now
  (so the lost key, perhaps in a thief's hands, reads nothing written after). A vault left out,
  or an epoch left out, refuses the whole transaction: nothing is ever half recovered.

The recovery policy is derived from the current state, not stored in the account's
`PolicySet` (a departure from the other operation classes, said in the README): it follows
governance's changes to the trusted parties, and no `policy.set` can weaken it to a trusted
party alone or to hospitals alone. No set of hospitals without a trusted party satisfies it,
nor a trusted party without a remaining patient key or a team hospital.
"""

from __future__ import annotations

import dataclasses

from carechain.consensus.ledger.bodies import (
    CancelRecovery,
    FinishRecovery,
    ShareEpochKeys,
    StartRecovery,
)
from carechain.consensus.ledger.context import (
    TxContext,
    epoch_key_key,
    every_patient_vault,
    institution_key_in_use,
    key_taken,
    load_account,
    load_patient,
    patient_vaults,
    trusted_parties,
)
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.policy import (
    POLICY_KEYS_MAX,
    Policy,
    PolicySet,
    check_policy,
    k_of,
)
from carechain.consensus.ledger.records import Account, Recovery, Vault
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.vaults import rotate


def recovery_policy(
    state: Overlay, account: Account, lost: bytes, ctx: TxContext, patient: bytes | None = None
) -> Policy:
    """Who may replace `lost` in `patient`'s account (by default the transaction's): both of
    the patient's keys (a planned rotation: the patient holds them both) OR (a remaining key
    AND a trusted party) OR (a trusted party AND a hospital on one of the patient's vaults'
    teams). The first two are the fast paths. Never stored: see the module's docs."""
    both = k_of(2, list(account.keys))
    trusted = sorted(trusted_parties(state))
    if not trusted:
        return k_of(1, [both])  # without a trusted party, only the patient itself
    remaining = [key for key in account.keys if key != lost]
    owner = ctx.tx.account if patient is None else patient
    teams = sorted({k for v in patient_vaults(state, owner, ctx) for k in v.team})
    paths = [both, k_of(2, [k_of(1, remaining), k_of(1, trusted)])]
    if teams:
        # a policy node lists at most POLICY_KEYS_MAX keys: many hospitals go in groups
        groups = [teams[i : i + POLICY_KEYS_MAX] for i in range(0, len(teams), POLICY_KEYS_MAX)]
        hospitals = k_of(1, [k_of(1, group) for group in groups])
        paths.append(k_of(2, [k_of(1, trusted), hospitals]))
    return k_of(1, paths)


def _require_recovery_policy(
    state: Overlay, account: Account, lost: bytes, ctx: TxContext, what: str
) -> bool:
    """Check the recovery policy; whether a fast path holds (both patient keys, or a
    remaining key with a trusted party): then there is no window to wait."""
    policy = recovery_policy(state, account, lost, ctx)
    if not policy.satisfied_by(ctx.signers):
        raise PolicyNotSatisfied(
            f"{what} needs both patient keys, or a trusted party with the patient's remaining "
            "key, or a trusted party with a hospital of the patient's vaults' teams",
            policy,
        )
    return any(path.satisfied_by(ctx.signers) for path in policy.policies[:2])


def _not_a_guardian(state: Overlay, key: bytes, ctx: TxContext) -> None:
    """A guardian's key never becomes one of the patient's own: it would count twice."""
    if state.get(Table.GUARDIAN_OF, key + ctx.tx.account) is not None:
        raise TxRejected("bad_recovery", "the replacement is a guardian of this patient")


def process_start_recovery(state: Overlay, body: StartRecovery, ctx: TxContext) -> None:
    account = load_patient(state, ctx, "is recovered")
    if account.minor:
        raise TxRejected(
            "bad_recovery",
            "a minor's account is not recovered: its guardian keeps its keys until the handover",
        )
    _not_a_guardian(state, body.replacement, ctx)
    if body.lost not in account.keys:
        raise TxRejected("bad_recovery", f"the account holds no key {body.lost.hex()[:16]}")
    if body.replacement in account.keys:
        raise TxRejected("bad_recovery", "the replacement is one of the account's keys already")
    if key_taken(state, body.replacement):  # a trusted party is an institution too
        raise TxRejected(
            "bad_recovery", "the replacement is an institution's key or another account's"
        )
    if state.get(Table.RECOVERY, ctx.tx.account) is not None:
        raise TxRejected(
            "recovery_pending", "a recovery of this account is pending: finish or cancel it"
        )
    fast = _require_recovery_policy(state, account, body.lost, ctx, "starting a recovery")
    delay_ms = 0 if fast else ctx.block.chain.params.recovery_delay_ms
    recovery = Recovery(
        body.lost, body.replacement, ctx.height, ctx.time_ms, ctx.time_ms + delay_ms, fast
    )
    state.save(Table.RECOVERY, ctx.tx.account, recovery)


def _pending(state: Overlay, ctx: TxContext) -> Recovery:
    recovery = state.load(Table.RECOVERY, ctx.tx.account, Recovery)
    if recovery is None:
        raise TxRejected("no_recovery", "no recovery of this account is pending")
    return recovery


def process_cancel_recovery(state: Overlay, body: CancelRecovery, ctx: TxContext) -> None:
    """Any key the account holds now cancels: the patient is still there to say no."""
    account = load_patient(state, ctx, "is recovered")
    recovery = _pending(state, ctx)
    if body.replacement != recovery.replacement:
        raise TxRejected("no_recovery", "the pending recovery names another replacement key")
    if not ctx.signers & set(account.keys):
        raise PolicyNotSatisfied(
            "cancelling a recovery needs one of the patient's keys", k_of(1, list(account.keys))
        )
    state.delete(Table.RECOVERY, ctx.tx.account)


def process_finish_recovery(state: Overlay, body: FinishRecovery, ctx: TxContext) -> None:
    account = load_patient(state, ctx, "is recovered")
    recovery = _pending(state, ctx)
    _require_recovery_policy(state, account, recovery.lost, ctx, "finishing a recovery")
    if ctx.time_ms < recovery.ready_ms:
        raise TxRejected(
            "recovery_too_early",
            f"the recovery may finish from {recovery.ready_ms} ms (block time {ctx.time_ms}): "
            "until then the patient's keys may cancel it",
        )
    given = [handover.vault for handover in body.vaults]
    vaults = every_patient_vault(state, given, ctx, "recovery_incomplete", "a finish hands over")
    if (  # taken since the start
        state.get(Table.PATIENT_KEY, recovery.replacement) is not None
        or institution_key_in_use(state, recovery.replacement)
    ):
        raise TxRejected("bad_recovery", "the replacement is another account's or an "
                         "institution's key now")  # fmt: skip
    _not_a_guardian(state, recovery.replacement, ctx)
    swap = _Swap(recovery.lost, recovery.replacement)
    keys = tuple(swap.key(key) for key in account.keys)
    state.delete(Table.PATIENT_KEY, recovery.lost)
    state.put(Table.PATIENT_KEY, recovery.replacement, ctx.tx.account)
    state.save(
        Table.ACCOUNT,
        ctx.tx.account,
        dataclasses.replace(account, keys=keys, policies=swap.policies(account.policies)),
    )
    handovers = {handover.vault: handover for handover in body.vaults}
    for vault in vaults:
        handover = handovers[vault.vault_id]
        if len(handover.old_epochs) not in (0, vault.epoch):  # none: deferred to epoch.share
            raise TxRejected(
                "recovery_incomplete",
                f"vault {vault.vault_id.hex()} has {vault.epoch} epoch(s): each one's key, "
                f"sealed to the replacement (or none, shared after with `epoch.share`), not "
                f"{len(handover.old_epochs)}",
            )
        for epoch, sealed in enumerate(handover.old_epochs, start=1):
            state.put(Table.EPOCH_KEY, epoch_key_key(vault.vault_id, epoch, swap.new), sealed)
        vault_account = load_account(state, vault.vault_id)
        swapped = dataclasses.replace(vault_account, policies=swap.policies(vault_account.policies))
        state.save(Table.ACCOUNT, vault.vault_id, swapped)
        # sealed to who reads now: the replacement in, the lost key out
        rotate(state, vault, handover.new_epoch, handover.sealed_epoch_keys, ctx)
    state.delete(Table.RECOVERY, ctx.tx.account)


@dataclasses.dataclass(frozen=True)
class _Swap:
    old: bytes
    new: bytes

    def key(self, key: bytes) -> bytes:
        return self.new if key == self.old else key

    def policy(self, policy: Policy) -> Policy:
        return Policy(
            policy.threshold,
            tuple(self.key(k) for k in policy.keys),
            tuple(self.policy(p) for p in policy.policies),
        )

    def policies(self, policies: PolicySet) -> PolicySet:
        swapped = PolicySet(
            self.policy(policies.admin),
            self.policy(policies.write),
            self.policy(policies.emergency),
        )
        for name in ("admin", "write", "emergency"):
            check_policy(getattr(swapped, name), f"the {name} policy with the replacement key")
        return swapped


def process_share_epochs(state: Overlay, body: ShareEpochKeys, ctx: TxContext) -> None:
    """Past epoch keys of a vault for one of its patient's own keys (after a recovery whose
    finish deferred them). Signed as a recovery may be, with no key to lose: both patient
    keys, a patient key with a trusted party, or a trusted party with a team hospital. It
    only ever gives the patient's own key what the vault held: no one else gains a reader."""
    vault = state.load(Table.VAULT, ctx.tx.account, Vault)
    if vault is None:
        raise TxRejected("unknown_vault", f"no vault {ctx.tx.account.hex()}")
    owner = load_account(state, vault.owner)
    if body.member not in owner.keys:
        raise TxRejected("bad_members", "past epoch keys are shared only with the patient's keys")
    policy = recovery_policy(state, owner, b"", ctx, vault.owner)
    if not policy.satisfied_by(ctx.signers):
        raise PolicyNotSatisfied(
            "sharing past epoch keys needs both patient keys, a patient key with a trusted "
            "party, or a trusted party with a team hospital",
            policy,
        )
    last = body.first_epoch + len(body.sealed) - 1
    if last > vault.epoch:
        raise TxRejected("stale_epoch", f"the vault is at epoch {vault.epoch}, not {last}")
    for epoch, sealed in enumerate(body.sealed, start=body.first_epoch):
        state.put(Table.EPOCH_KEY, epoch_key_key(vault.vault_id, epoch, body.member), sealed)
