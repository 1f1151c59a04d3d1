"""What the ledger keeps in state, one record type per table (see `state.Table`).

No protected health information is ever stored here: records carry only the content id,
size, clinical date and sealed keys of ciphertext kept off chain.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Final

from carechain.consensus.codec import Record, Size
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.policy import PolicySet, Template
from carechain.consensus.types import AccountId, Hash, MaybeHash, Name, PublicKey, Validator

RecordId = Annotated[bytes, Size(16, 16)]
DataTypeName = Annotated[str, Size(1, 32)]
ContentId = Annotated[str, Size(1, 128)]
SealedBytes = Annotated[bytes, Size(1, 256)]
Note = Annotated[str, Size(0, 512)]
Purpose = Annotated[str, Size(1, 32)]
MembersTuple = Annotated[tuple[PublicKey, ...], Size(0, 256)]
INLINE_CIPHERTEXT_BYTES_MAX: Final = 16 * 1024


class AccountKind(enum.IntEnum):
    PATIENT = 1
    INSTITUTION = 2
    VAULT = 3
    GOVERNANCE = 4


class GuardianScope(enum.IntEnum):
    """What a guardian does for a patient (see `ledger.guardians`)."""

    COSIGN = 1  # stands for one patient key (co-signs a hospital's partial), and reads
    FULL = 2  # stands for the patient, and reads; never changes who controls the account


@dataclasses.dataclass(frozen=True, slots=True)
class Guardian(Record):
    key: PublicKey
    scope: GuardianScope
    added_height: int


GUARDIANS_MAX: Final = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Account(Record):
    kind: AccountKind
    nonce: int
    policies: PolicySet
    keys: Annotated[tuple[PublicKey, ...], Size(0, 2)]  # patient: 2 keys; institution: 1
    created_height: int
    # a patient's guardians, by key; a minor's own keys act only once a handover made it adult
    guardians: Annotated[tuple[Guardian, ...], Size(0, GUARDIANS_MAX)] = ()
    minor: bool = False

    @property
    def guardian_keys(self) -> frozenset[bytes]:
        return frozenset(guardian.key for guardian in self.guardians)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyChanges(Record):
    """How many institutions governance revoked and how many institution keys were rotated:
    while both are 0, every signature stands for its own key and no lookup is made. The keys
    themselves are one state entry each (INSTITUTION, INSTITUTION_KEY), never a list."""

    revocations: int = 0
    rotations: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery(Record):
    """A pending key-loss recovery of a patient account (see `ledger.recovery`)."""

    lost: PublicKey
    replacement: PublicKey
    started_height: int
    started_ms: int
    ready_ms: int  # the block time from which it may finish
    fast: bool  # started with a remaining patient key: no waiting window


@dataclasses.dataclass(frozen=True, slots=True)
class InstitutionState(Record):
    """An institution, named everywhere (teams, grants, policies, sealed keys) by its first
    key, `institution.public_key`; `key` is the key it signs and reads with now, when it
    rotated away from that one (`institution.rotate_key`)."""

    institution: Institution
    active: bool
    registered_height: int
    revoked_height: int | None = None
    key: PublicKey | None = None

    @property
    def kind(self) -> InstitutionKind:
        return self.institution.kind

    @property
    def current_key(self) -> bytes:
        return self.key if self.key is not None else self.institution.public_key


@dataclasses.dataclass(frozen=True, slots=True)
class Vault(Record):
    vault_id: AccountId
    owner: AccountId
    data_type: DataTypeName
    template: Template
    team: MembersTuple  # hospitals that co-sign writes and read by right
    epoch: int
    members: MembersTuple  # sorted: who holds the current epoch key
    record_count: int
    receipt_count: int
    created_height: int


@dataclasses.dataclass(frozen=True, slots=True)
class RecordEntry(Record):
    record_id: RecordId
    data_type: DataTypeName
    content_id: ContentId  # CIDv1 of the ciphertext in the blob store ("inline" when inline)
    size_bytes: int
    epoch: int
    sealed_data_key: SealedBytes  # data key under the epoch key (secretbox)
    inline_ciphertext: Annotated[bytes, Size(0, INLINE_CIPHERTEXT_BYTES_MAX)]
    record_time_ms: int  # the clinical date of the data
    author: PublicKey
    added_height: int
    added_time_ms: int
    erased_height: int | None = None


class Access(enum.IntEnum):
    READ = 1
    READ_WRITE = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Grant(Record):
    grant_id: Hash
    vault: AccountId
    grantee: PublicKey
    access: Access
    valid_from_ms: int
    valid_until_ms: int
    record_from_ms: int | None
    record_until_ms: int | None
    purpose: Purpose
    granted_height: int
    revoked_height: int | None = None
    emergency_id: MaybeHash = b""

    def active_at(self, time_ms: int) -> bool:
        return self.revoked_height is None and self.valid_from_ms <= time_ms < self.valid_until_ms

    def covers_record_time(self, record_time_ms: int) -> bool:
        if self.record_from_ms is not None and record_time_ms < self.record_from_ms:
            return False
        return self.record_until_ms is None or record_time_ms < self.record_until_ms


@dataclasses.dataclass(frozen=True, slots=True)
class GrantIds(Record):
    ids: Annotated[tuple[Hash, ...], Size(0, 64)]


GRANTS_PER_VAULT_MAX: Final = 4096  # grants a patient makes on one vault
# emergency accesses are listed with the grants but never refused for the patient's many
# grants: break-glass must work on any vault, up to this many listed in all
GRANTS_LISTED_MAX: Final = GRANTS_PER_VAULT_MAX + 1024
ERASURES_PER_VAULT_MAX: Final = 16_384


@dataclasses.dataclass(frozen=True, slots=True)
class VaultIndex(Record):
    """Every grant ever made on a vault, every emergency ever opened on it and every record
    erased from it, in chain order (VAULT_INDEX). One proof of this entry shows each whole
    list, so a light client knows an answer leaves nothing out; an absent entry proves there
    are none. Records and receipts are counted in the vault and numbered (VAULT_RECORD,
    RECEIPT) instead: they are many."""

    grants: Annotated[tuple[Hash, ...], Size(0, GRANTS_LISTED_MAX)] = ()
    emergencies: Annotated[tuple[Hash, ...], Size(0, GRANTS_LISTED_MAX)] = ()
    erased: Annotated[tuple[RecordId, ...], Size(0, ERASURES_PER_VAULT_MAX)] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt(Record):
    vault: AccountId
    record_id: RecordId
    reader: PublicKey
    grant_id: MaybeHash  # empty when the reader reads by right (patient, team hospital)
    height: int
    time_ms: int


class EmergencyStatus(enum.IntEnum):
    UNREVIEWED = 1
    APPROPRIATE = 2
    INAPPROPRIATE = 3


EMERGENCY_REASONS: Final = {
    "unconscious": "patient unconscious or unable to consent",
    "life-threatening": "life-threatening condition needing immediate history",
    "patient-unreachable": "patient and representatives cannot be reached in time",
    "mass-casualty": "mass-casualty incident",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Emergency(Record):
    emergency_id: Hash
    vault: AccountId
    hospital: PublicKey
    trusted_party: PublicKey
    reason: Annotated[str, Size(1, 32)]
    note: Note
    opened_height: int
    opened_time_ms: int
    until_ms: int
    grant_id: Hash
    status: EmergencyStatus = EmergencyStatus.UNREVIEWED
    reviewer: Annotated[bytes, Size(0, 32)] = b""
    review_note: Note = ""
    reviewed_height: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Attestation(Record):
    height: int
    time_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class KeyList(Record):
    keys: Annotated[tuple[PublicKey, ...], Size(0, 4096)]


class ValidatorAction(enum.IntEnum):
    ADD = 1
    REMOVE = 2
    SET_POWER = 3


class InstitutionAction(enum.IntEnum):
    REGISTER = 1
    REVOKE = 2


@dataclasses.dataclass(frozen=True, slots=True)
class ValidatorChange(Record):
    action: ValidatorAction
    validator: Validator


@dataclasses.dataclass(frozen=True, slots=True)
class InstitutionChange(Record):
    action: InstitutionAction
    institution: Institution


@dataclasses.dataclass(frozen=True, slots=True)
class PendingChanges(Record):
    """Governance changes decided at height H, applied at the start of height H + 2."""

    validators: Annotated[tuple[ValidatorChange, ...], Size(0, 128)] = ()
    institutions: Annotated[tuple[InstitutionChange, ...], Size(0, 1024)] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence(Record):
    """A validator signed two different votes for one height, round and type."""

    validator: PublicKey
    height: int
    round: int
    vote_type: int
    first_hash: MaybeHash
    second_hash: MaybeHash
    reported_height: int


@dataclasses.dataclass(frozen=True, slots=True)
class GovernanceState(Record):
    threshold: int
    name: Name = "governance"
