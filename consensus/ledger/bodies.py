"""The body of each transaction kind, and the table of kinds.

`Tx.kind` names the kind; `Tx.body` is the canonical encoding of the kind's body record.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Final

from carechain.consensus.codec import IntRange, Record, Size
from carechain.consensus.ledger.policy import OperationClass, Policy, Template
from carechain.consensus.ledger.records import (
    INLINE_CIPHERTEXT_BYTES_MAX,
    Access,
    ContentId,
    DataTypeName,
    EmergencyStatus,
    GuardianScope,
    InstitutionChange,
    Note,
    Purpose,
    RecordId,
    SealedBytes,
    ValidatorChange,
)
from carechain.consensus.types import AccountId, Hash, MaybeHash, PublicKey, Vote


@dataclasses.dataclass(frozen=True, slots=True)
class SealedKey(Record):
    member: PublicKey
    sealed: SealedBytes


SealedKeys = Annotated[tuple[SealedKey, ...], Size(0, 256)]


@dataclasses.dataclass(frozen=True, slots=True)
class RegisterPatient(Record):
    patient_keys: Annotated[tuple[PublicKey, ...], Size(2, 2)]
    guardian: PublicKey | None = None  # a minor's: controls the account until its handover


@dataclasses.dataclass(frozen=True, slots=True)
class SetPolicy(Record):
    operation: OperationClass
    policy: Policy


@dataclasses.dataclass(frozen=True, slots=True)
class CreateVault(Record):
    data_type: DataTypeName
    template: Template
    team: Annotated[tuple[PublicKey, ...], Size(0, 16)]
    sealed_epoch_keys: SealedKeys


@dataclasses.dataclass(frozen=True, slots=True)
class PutRecord(Record):
    record_id: RecordId
    data_type: DataTypeName
    content_id: ContentId
    size_bytes: int
    epoch: Annotated[int, IntRange(1, 2**63)]
    sealed_data_key: SealedBytes
    inline_ciphertext: Annotated[bytes, Size(0, INLINE_CIPHERTEXT_BYTES_MAX)]
    record_time_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class RotateEpoch(Record):
    new_epoch: Annotated[int, IntRange(2, 2**63)]
    sealed_epoch_keys: SealedKeys


@dataclasses.dataclass(frozen=True, slots=True)
class GrantAccess(Record):
    grantee: PublicKey
    access: Access
    valid_from_ms: int
    valid_until_ms: int
    record_from_ms: int | None
    record_until_ms: int | None
    purpose: Purpose
    sealed_epoch_key: SealedBytes  # the vault's current epoch key, sealed to the grantee


@dataclasses.dataclass(frozen=True, slots=True)
class RevokeAccess(Record):
    grant_id: Hash
    new_epoch: Annotated[int, IntRange(2, 2**63)]
    sealed_epoch_keys: SealedKeys  # the new epoch key, for every remaining member


@dataclasses.dataclass(frozen=True, slots=True)
class OpenEmergency(Record):
    hospital: PublicKey
    reason: Annotated[str, Size(1, 32)]
    duration_ms: Annotated[int, IntRange(1, 2**63)]
    sealed_epoch_key: SealedBytes  # sealed to the hospital by the trusted party (key escrow)
    note: Note


@dataclasses.dataclass(frozen=True, slots=True)
class ReviewEmergency(Record):
    emergency_id: Hash
    verdict: EmergencyStatus
    note: Note


@dataclasses.dataclass(frozen=True, slots=True)
class RecordReceipt(Record):
    vault: AccountId
    record_id: RecordId
    grant_id: MaybeHash


@dataclasses.dataclass(frozen=True, slots=True)
class EraseRecord(Record):
    record_id: RecordId


@dataclasses.dataclass(frozen=True, slots=True)
class AttestErasure(Record):
    vault: AccountId
    record_id: RecordId


@dataclasses.dataclass(frozen=True, slots=True)
class StartRecovery(Record):
    lost: PublicKey
    replacement: PublicKey


@dataclasses.dataclass(frozen=True, slots=True)
class CancelRecovery(Record):
    replacement: PublicKey  # names the pending recovery it cancels


@dataclasses.dataclass(frozen=True, slots=True)
class VaultHandover(Record):
    """One vault's part of a recovery: every past epoch's key sealed to the replacement (in
    epoch order, from 1), and the new epoch's key sealed to who reads the vault now."""

    vault: AccountId
    # empty: deferred to `epoch.share` transactions after the finish (a finish too large)
    old_epochs: Annotated[tuple[SealedBytes, ...], Size(0, 1024)]
    new_epoch: Annotated[int, IntRange(2, 2**63)]
    sealed_epoch_keys: SealedKeys


@dataclasses.dataclass(frozen=True, slots=True)
class FinishRecovery(Record):
    vaults: Annotated[tuple[VaultHandover, ...], Size(0, 264)]  # every vault, by vault id


@dataclasses.dataclass(frozen=True, slots=True)
class ShareEpochKeys(Record):
    """Past epoch keys of a vault (epochs first_epoch, first_epoch + 1, ...) sealed to one of
    its patient's own keys: what a recovery's finish too large for one transaction defers."""

    member: PublicKey
    first_epoch: Annotated[int, IntRange(1, 2**63)]
    sealed: Annotated[tuple[SealedBytes, ...], Size(1, 4096)]


@dataclasses.dataclass(frozen=True, slots=True)
class EpochKeys(Record):
    """Every epoch key of one vault (epochs 1..E, in order) sealed to one new reader."""

    vault: AccountId
    epochs: Annotated[tuple[SealedBytes, ...], Size(1, 1024)]


@dataclasses.dataclass(frozen=True, slots=True)
class AddGuardian(Record):
    key: PublicKey
    scope: GuardianScope
    vaults: Annotated[tuple[EpochKeys, ...], Size(0, 264)]  # every vault of the patient, by id


@dataclasses.dataclass(frozen=True, slots=True)
class NewEpoch(Record):
    """One vault's next epoch, its key sealed to who reads it once the change applies."""

    vault: AccountId
    new_epoch: Annotated[int, IntRange(2, 2**63)]
    sealed_epoch_keys: SealedKeys


@dataclasses.dataclass(frozen=True, slots=True)
class RemoveGuardians(Record):
    """`guardian.remove` names one guardian; `guardian.handover` none (all of them go). Each
    vault of the patient moves to a new epoch the removed guardians do not hold."""

    key: PublicKey | None
    vaults: Annotated[tuple[NewEpoch, ...], Size(0, 264)]  # every vault of the patient, by id


@dataclasses.dataclass(frozen=True, slots=True)
class RotateInstitutionKey(Record):
    new_key: PublicKey


@dataclasses.dataclass(frozen=True, slots=True)
class ResealedKey(Record):
    """An institution's own copy of one epoch's key, sealed again to its key now."""

    vault: AccountId
    epoch: Annotated[int, IntRange(1, 2**63)]
    sealed: SealedBytes


@dataclasses.dataclass(frozen=True, slots=True)
class ResealEpochKeys(Record):
    keys: Annotated[tuple[ResealedKey, ...], Size(1, 4096)]  # by vault, then epoch


@dataclasses.dataclass(frozen=True, slots=True)
class ReportEquivocation(Record):
    first: Vote
    second: Vote


BODY_TYPES: Final[dict[str, type[Record]]] = {
    "account.register": RegisterPatient,
    "policy.set": SetPolicy,
    "vault.create": CreateVault,
    "record.put": PutRecord,
    "epoch.rotate": RotateEpoch,
    "access.grant": GrantAccess,
    "access.revoke": RevokeAccess,
    "emergency.open": OpenEmergency,
    "emergency.review": ReviewEmergency,
    "access.receipt": RecordReceipt,
    "record.erase": EraseRecord,
    "erasure.attest": AttestErasure,
    # A governance body is the change itself, kept as such until it applies at H + 2.
    "governance.validator": ValidatorChange,
    "governance.institution": InstitutionChange,
    "evidence.equivocation": ReportEquivocation,
    "recovery.start": StartRecovery,
    "recovery.cancel": CancelRecovery,
    "recovery.finish": FinishRecovery,
    "epoch.share": ShareEpochKeys,
    "guardian.add": AddGuardian,
    "guardian.remove": RemoveGuardians,
    "guardian.handover": RemoveGuardians,
    "institution.rotate_key": RotateInstitutionKey,
    "institution.reseal": ResealEpochKeys,
}
