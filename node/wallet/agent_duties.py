"""What the patient's agent does on each pass (`carechain agent`, and the service behind the
web console), with the patient's keys, which never leave it:

- co-sign the partials its rules allow (`agent_rules.decide`), never one a revoked
  institution initiated;
- report a recovery of the patient's account pending on chain (an alert), and cancel one that
  no patient key started when the rules file says `on_recovery = "cancel"`;
- rotate the epoch of each of the patient's vaults whose current key a revoked institution
  still holds (`rotate_after_revocation`, default on), so the revoked key reads nothing
  written afterwards. With one patient key the rotation waits as a partial for the other.

Each pass returns its decisions (JSON-ready, each with its reason) for the agent's log;
`decision_id` names one so that a loop reports it once."""

from __future__ import annotations

from pathlib import Path

from carechain.consensus import crypto
from carechain.consensus.ledger.context import is_revoked
from carechain.consensus.ledger.records import Account, Recovery, Vault
from carechain.consensus.ledger.state import StateReader, Table
from carechain.consensus.light.verifier import VerificationError
from carechain.consensus.types import Tx
from carechain.node.wallet.agent_rules import Rule, decide, load_rule_file
from carechain.node.wallet.client import ApiRequestError
from carechain.node.wallet.context import FlowContext
from carechain.node.wallet.patient_actions import cosignature, rotate_vault_epoch
from carechain.node.wallet.recovery_actions import cancel_recovery, recovery_summary

Decision = dict[str, object]


def decision_id(decision: Decision) -> str:
    """What a decision is about: its transaction, the pending recovery it reports, or the
    node's answer that did not verify."""
    if decision.get("tx"):
        return str(decision["tx"])
    if decision.get("alert") == "not_verified":
        return f"not_verified@{decision.get('code')}"
    return f"recovery@{decision.get('started_height')}"


def agent_pass(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    rules_path: Path,
    refused: frozenset[str] = frozenset(),
) -> list[Decision]:
    """One pass of the agent holding the patient's `keys` (the first co-signs partials). A
    partial the patient refused in person (`refused`, ids in hex) is never signed by a rule."""
    settings = load_rule_file(rules_path)
    state = context.next_state()
    decisions = cosign_partials(context, keys, settings.rule, refused)
    patient = context.account_of(keys[0])
    account = state.load(Table.ACCOUNT, patient, Account)
    if account is None:  # not registered (yet): no recovery, no vaults
        return decisions
    recovery = state.load(Table.RECOVERY, patient, Recovery)
    if recovery is not None:
        on_recovery = settings.on_recovery
        decisions.append(_on_recovery(context, keys, patient, account, recovery, on_recovery))
    if settings.rotate_after_revocation:
        decisions.extend(_rotate_after_revocation(context, keys, patient))
    return decisions


def verified_pass(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    rules_path: Path,
    refused: frozenset[str] = frozenset(),
) -> list[Decision]:
    """`agent_pass`, or, when a state entry the node served did not verify against what the
    agent's light client trusts (`FlowContext.light`), nothing done and an alert saying so:
    the agent never acts on an answer it could not check."""
    try:
        return agent_pass(context, keys, rules_path, refused)
    except VerificationError as exc:
        reason = f"the node's answer did not verify, so nothing was signed: {exc}"
        return [{"alert": "not_verified", "signed": False, "code": exc.code, "reason": reason}]


def cosign_partials(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    rules: list[Rule],
    refused: frozenset[str],
) -> list[Decision]:
    key, patient_keys = keys[0], frozenset(k.public_key for k in keys)
    decisions: list[Decision] = []
    head = context.state()  # one read of the head for every partial of the pass
    for partial in context.client.partials(awaiting=key.public_key):
        if partial["id"] in refused:
            continue
        transaction = Tx.decode(bytes.fromhex(partial["tx"]))
        stands_for = _institutions_of(head, transaction, patient_keys)
        # institutions are named by their first keys: a rotated key is looked up as the
        # institution it stands for, as `decide` compares them
        signers = {stands_for.get(s.public_key, s.public_key) for s in transaction.signatures}
        revoked = frozenset(key for key in signers - {b""} if is_revoked(head, key))
        decision = decide(rules, transaction, patient_keys, revoked, stands_for)
        if decision.sign:
            context.client.cosign(transaction.id, cosignature(key, transaction))
        decisions.append(
            {
                "tx": transaction.id.hex(),
                "kind": transaction.kind,
                "signed": decision.sign,
                "reason": decision.reason,
            }
        )
    return decisions


def _institutions_of(
    state: StateReader, tx: Tx, patient_keys: frozenset[bytes]
) -> dict[bytes, bytes]:
    """Whom each non-patient signature acts for, where it is an institution's rotated key
    (b"" for one rotated away from): rules name institutions by their first keys."""
    found = {}
    for signature in tx.signatures:
        if signature.public_key in patient_keys:
            continue
        first = state.get(Table.INSTITUTION_KEY, signature.public_key)
        if first is not None:
            found[signature.public_key] = first
    return found


def _on_recovery(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
    account: Account,
    recovery: Recovery,
    on_recovery: str,
) -> Decision:
    alert: Decision = {"alert": "recovery_pending", **recovery_summary(recovery)}
    if recovery.fast:
        reason = "started with the patient's own key: reported, not cancelled"
        return {**alert, "signed": False, "reason": reason}
    held = [key for key in keys if key.public_key in account.keys]
    if on_recovery != "cancel" or not held:
        why = (
            'on_recovery = "cancel" in the rules makes the agent cancel such'
            if on_recovery != "cancel"
            else "the agent holds none of the account's keys, so it cannot cancel"
        )
        reason = (
            f"no patient key started it: it may finish from {recovery.ready_ms} ms unless a "
            f"patient key cancels it (`carechain recovery cancel`); {why}"
        )
        return {**alert, "signed": False, "reason": reason}
    tx = cancel_recovery(context, held[:1], patient)
    try:
        context.send(tx)
    except ApiRequestError as exc:
        return {**alert, "tx": tx.id.hex(), "kind": "recovery.cancel", "signed": False,
                "reason": f"the cancel was refused: {exc.detail}"}  # fmt: skip
    reason = 'no patient key started it: cancelled (on_recovery = "cancel")'
    return {**alert, "tx": tx.id.hex(), "kind": "recovery.cancel", "signed": True,
            "reason": reason}  # fmt: skip


def _rotate_after_revocation(
    context: FlowContext,
    keys: list[crypto.PrivateKey],
    patient: bytes,
) -> list[Decision]:
    state = context.state()
    decisions: list[Decision] = []
    waiting: dict[bytes, str] | None = None
    for vault in context.vaults_of(patient, state).values():
        holders = sorted(key for key in vault.members if is_revoked(state, key))
        if not holders:
            continue
        names = ", ".join(key.hex()[:16] for key in holders)
        why = f"revoked institution(s) {names} hold the key of epoch {vault.epoch}"
        if waiting is None:
            waiting = _rotations_waiting(context)
        if vault.vault_id in waiting:
            decisions.append(
                {"tx": waiting[vault.vault_id], "kind": "epoch.rotate", "signed": False,
                 "vault": vault.vault_id.hex(),
                 "reason": f"{why}: the rotation waits for the patient's other key"}
            )  # fmt: skip
            continue
        decisions.append(_rotate(context, keys, vault, why))
    return decisions


def _rotations_waiting(context: FlowContext) -> dict[bytes, str]:
    """Rotations waiting at the node for a co-signature, by vault: sent once, not again."""
    waiting = {}
    for partial in context.client.partials():
        tx = Tx.decode(bytes.fromhex(partial["tx"]))
        if tx.kind == "epoch.rotate":
            waiting[tx.account] = tx.id.hex()
    return waiting


def _rotate(
    context: FlowContext, keys: list[crypto.PrivateKey], vault: Vault, why: str
) -> Decision:
    sent: list[Tx] = []

    def build() -> Tx:
        sent.append(rotate_vault_epoch(context, keys, vault.vault_id))
        return sent[-1]

    decision: Decision = {"kind": "epoch.rotate", "vault": vault.vault_id.hex()}
    try:
        answer = context.send_sealed(build)
    except ApiRequestError as exc:
        return {**decision, "tx": sent[-1].id.hex(), "signed": False,
                "reason": f"{why}: the rotation was refused: {exc.detail}"}  # fmt: skip
    if answer.get("status") == "partial":
        reason = f"{why}: the rotation waits for the patient's other key (`carechain tx cosign`)"
    else:
        reason = f"{why}: rotated to epoch {vault.epoch + 1}, sealed without them"
    return {**decision, "tx": sent[-1].id.hex(), "signed": True, "reason": reason}
