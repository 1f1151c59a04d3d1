"""Why a transaction is rejected: one stable, documented reason code per rule.

The codes are part of the API: the node returns them, the CLI prints them, tests assert them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from carechain.consensus.errors import InvalidInput

if TYPE_CHECKING:
    from carechain.consensus.ledger.policy import Policy

REASONS: Final[dict[str, str]] = {
    # envelope
    "wrong_chain": "the transaction names another chain id",
    "oversize": "the transaction is larger than the chain's max_tx_bytes",
    "expired": "the block time is past the transaction's expiry",
    "expiry_too_far": "the expiry is further ahead than the chain's tx_expiry_ms_max",
    "non_canonical_signatures": "signatures are not sorted by key or a key signs twice",
    "bad_signature": "a signature does not verify for this transaction",
    "unknown_kind": "the transaction kind does not exist",
    "bad_body": "the body is not the canonical encoding of the kind's body",
    "unknown_account": "the acting account does not exist",
    "bad_nonce": "the nonce is not the account's next nonce (a replay or a gap)",
    "policy_not_satisfied": "the signatures do not satisfy the account's policy for this kind",
    "no_standing": "a partial carries no signature by a key its policy names or an institution",
    "not_authorised": "the signer has no right to do this (no grant, wrong role)",
    # accounts and policies
    "account_exists": "an account with this id exists already",
    "bad_account": "the account's keys or kind do not fit this transaction",
    "bad_policy": "the policy is malformed, unsatisfiable or too large",
    # vaults and records
    "unknown_vault": "no vault with this id",
    "vault_exists": "the patient already has a vault with this id",
    "unknown_data_type": "the data type is not registered",
    "data_type_mismatch": "the record's data type differs from its vault's",
    "bad_content_id": "the content id is not a lower-case base32 CIDv1 (raw or dag-pb, sha2-256)",
    "stale_epoch": "the record or rotation uses an epoch that is not the vault's current one",
    "bad_members": "sealed keys do not go to exactly the members who must read the vault",
    "duplicate_record": "a record with this id exists in the vault already",
    "unknown_record": "no record with this id in the vault",
    "record_erased": "the record was erased",
    "record_not_erased": "an erasure is attested only for a record that was erased",
    "already_attested": "this institution attested this erasure already",
    # grants and emergencies
    "unknown_grant": "no grant with this id for the vault",
    "grant_revoked": "the grant was revoked",
    "grant_expired": "the grant's validity ended at or before this block time",
    "grant_not_yet_valid": "the grant's validity starts after this block time",
    "bad_grant": "the grant's period, window or purpose is invalid",
    "outside_record_window": "the record's date is outside the grant's record window",
    "bad_reason": "an emergency needs one of the coded reasons",
    "emergency_too_long": "the emergency duration exceeds the chain's cap",
    "unknown_emergency": "no emergency access with this id",
    "already_reviewed": "the emergency access was reviewed already",
    # key-loss recovery
    "bad_recovery": "the lost key is not the account's, or the replacement is a key in use",
    "recovery_pending": "a recovery of the account is pending already",
    "no_recovery": "no such recovery of the account is pending",
    "recovery_too_early": "the recovery's waiting window has not ended",
    "recovery_incomplete": "a finish leaves out one of the patient's vaults or epochs",
    "state_limit": "the change would make a state entry outgrow its bound",
    # guardians
    "bad_guardian": "a guardian change names a key in use, no guardian, or not every vault",
    # an institution's key rotation
    "key_in_use": "the key is, or was, an institution's or a patient's key",
    "unknown_epoch_key": "the institution holds no copy of that epoch key to reseal",
    # governance
    "unknown_institution": "the key is not a registered, active institution",
    "institution_exists": "the institution is registered already",
    "bad_governance": "the governance change is invalid for the current validator set",
    # evidence
    "bad_evidence": "the two votes are not a validator's conflicting signatures",
    "duplicate_evidence": "this equivocation is recorded already",
}


class TxRejected(InvalidInput):
    """A transaction breaks a ledger rule; `code` is one of `REASONS`."""

    def __init__(self, code: str, message: str) -> None:
        assert code in REASONS, f"undocumented rejection code {code!r}"
        super().__init__(f"{code}: {message}", code=code)
        self.detail = message


class PolicyNotSatisfied(TxRejected):
    """The signatures so far do not satisfy the policy named: a partial transaction. `policy`
    (a consensus.ledger.policy.Policy) says whose signatures could still complete it."""

    def __init__(self, message: str, policy: Policy) -> None:
        super().__init__("policy_not_satisfied", message)
        self.policy = policy


class BlockRejected(InvalidInput):
    """A block cannot be applied: which transaction failed, and why."""

    code = "block_rejected"

    def __init__(self, height: int, index: int, reason: TxRejected) -> None:
        super().__init__(f"height {height}: transaction {index} rejected: {reason}")
        self.height = height
        self.index = index
        self.reason = reason
