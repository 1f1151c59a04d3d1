"""Client-side construction of ledger transactions: the part that holds keys and randomness.

The ledger only checks; someone has to generate epoch keys, seal them to exactly the right
members, encrypt data keys under the epoch key, and sign. The CLI, the patient agent, the demo
and the tests all build transactions here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from carechain.consensus import crypto
from carechain.consensus.codec import Record
from carechain.consensus.genesis import Institution
from carechain.consensus.ledger.bodies import (
    AddGuardian,
    CancelRecovery,
    CreateVault,
    EpochKeys,
    FinishRecovery,
    GrantAccess,
    NewEpoch,
    OpenEmergency,
    PutRecord,
    RecordReceipt,
    RegisterPatient,
    RemoveGuardians,
    ReportEquivocation,
    ResealedKey,
    ResealEpochKeys,
    ReviewEmergency,
    RevokeAccess,
    RotateEpoch,
    RotateInstitutionKey,
    SealedKey,
    ShareEpochKeys,
    StartRecovery,
    VaultHandover,
)
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import (
    Access,
    EmergencyStatus,
    GuardianScope,
    InstitutionAction,
    InstitutionChange,
    ValidatorAction,
    ValidatorChange,
)
from carechain.consensus.types import Tx, Validator, Vote

DAY_MS: Final = 86_400_000


@dataclasses.dataclass(frozen=True, slots=True)
class TxDraft:
    """Everything of a transaction but its signatures."""

    chain_id: str
    kind: str
    account: bytes
    nonce: int
    expiry_ms: int
    body: Record

    def unsigned(self) -> Tx:
        return Tx(
            self.chain_id, self.kind, self.account, self.nonce, self.expiry_ms, self.body.encode()
        )

    def signed(self, *keys: crypto.PrivateKey) -> Tx:
        tx = self.unsigned()
        for key in keys:
            tx = tx.signed_by(key)
        return tx


Members = Iterable[bytes] | Mapping[bytes, bytes]


def seal_epoch_key(epoch_key: bytes, members: Members) -> tuple[SealedKey, ...]:
    """The epoch key sealed to each member: a member's key names it in the vault; a mapping
    (from `FlowContext.sealing_keys`) says to which key each member reads with now (an
    institution that rotated its key reads with its new one)."""
    to = dict(members) if isinstance(members, Mapping) else {m: m for m in members}
    return tuple(SealedKey(member, crypto.seal(epoch_key, to[member])) for member in sorted(to))


def register_patient(chain_id: str, keys: tuple[bytes, bytes], expiry_ms: int) -> TxDraft:
    return TxDraft(
        chain_id,
        "account.register",
        crypto.account_id(keys[0]),
        1,
        expiry_ms,
        RegisterPatient(keys),
    )


def create_vault(
    chain_id: str,
    patient: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    data_type: str,
    template: Template,
    team: Iterable[bytes],
    members: Members,
) -> tuple[TxDraft, bytes]:
    """A vault.create draft and the vault's first epoch key (kept by the patient)."""
    epoch_key = crypto.new_data_key()
    body = CreateVault(data_type, template, tuple(sorted(team)), seal_epoch_key(epoch_key, members))
    return TxDraft(chain_id, "vault.create", patient, nonce, expiry_ms, body), epoch_key


@dataclasses.dataclass(frozen=True, slots=True)
class EncryptedRecord:
    body: PutRecord
    data_key: bytes
    ciphertext: bytes  # the blob to store off chain (empty when inline)


def encrypt_record(
    plaintext: bytes,
    *,
    record_id: bytes,
    data_type: str,
    epoch: int,
    epoch_key: bytes,
    record_time_ms: int,
    inline_bytes_max: int = 1024,
    content_id: str | None = None,
) -> EncryptedRecord:
    """Encrypt a record with a fresh data key sealed under the vault's epoch key. Small records
    travel inline in the transaction; larger ones become a blob named by `content_id`."""
    data_key = crypto.new_data_key()
    sealed_data_key = crypto.encrypt_small(epoch_key, data_key)
    if len(plaintext) <= inline_bytes_max and content_id is None:
        inline = crypto.encrypt_small(data_key, plaintext)
        body = PutRecord(
            record_id,
            data_type,
            "inline",
            len(plaintext),
            epoch,
            sealed_data_key,
            inline,
            record_time_ms,
        )
        return EncryptedRecord(body, data_key, b"")
    ciphertext = b"".join(crypto.encrypt_stream(data_key, [plaintext]))
    if content_id is None:
        raise ValueError("a blob record needs the content id its blob store gave it")
    body = PutRecord(
        record_id,
        data_type,
        content_id,
        len(plaintext),
        epoch,
        sealed_data_key,
        b"",
        record_time_ms,
    )
    return EncryptedRecord(body, data_key, ciphertext)


def open_inline_record(
    body_inline: bytes, sealed_data_key: bytes, sealed_epoch_key: bytes, reader: crypto.PrivateKey
) -> bytes:
    """What a reader does: open its sealed epoch key, then the data key, then the record."""
    epoch_key = crypto.unseal(sealed_epoch_key, reader)
    data_key = crypto.decrypt_small(epoch_key, sealed_data_key)
    return crypto.decrypt_small(data_key, body_inline)


def grant(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    grantee: bytes,
    epoch_key: bytes,
    valid_from_ms: int,
    valid_until_ms: int,
    access: Access = Access.READ,
    purpose: str = "TREAT",
    record_from_ms: int | None = None,
    record_until_ms: int | None = None,
    sealing_key: bytes | None = None,
) -> TxDraft:
    """`sealing_key`: the key the grantee reads with now, when it rotated away from `grantee`."""
    body = GrantAccess(
        grantee,
        access,
        valid_from_ms,
        valid_until_ms,
        record_from_ms,
        record_until_ms,
        purpose,
        crypto.seal(epoch_key, sealing_key or grantee),
    )
    return TxDraft(chain_id, "access.grant", vault, nonce, expiry_ms, body)


def revoke(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    grant_id: bytes,
    new_epoch: int,
    remaining_members: Members,
) -> tuple[TxDraft, bytes]:
    """Revocation with the epoch rotation it requires; returns the new epoch key."""
    epoch_key = crypto.new_data_key()
    body = RevokeAccess(grant_id, new_epoch, seal_epoch_key(epoch_key, remaining_members))
    return TxDraft(chain_id, "access.revoke", vault, nonce, expiry_ms, body), epoch_key


def rotate_epoch(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    new_epoch: int,
    members: Members,
) -> tuple[TxDraft, bytes]:
    epoch_key = crypto.new_data_key()
    body = RotateEpoch(new_epoch, seal_epoch_key(epoch_key, members))
    return TxDraft(chain_id, "epoch.rotate", vault, nonce, expiry_ms, body), epoch_key


def open_emergency(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    hospital: bytes,
    epoch_key: bytes,
    reason: str,
    duration_ms: int,
    note: str = "",
    sealing_key: bytes | None = None,
) -> TxDraft:
    sealed = crypto.seal(epoch_key, sealing_key or hospital)
    body = OpenEmergency(hospital, reason, duration_ms, sealed, note)
    return TxDraft(chain_id, "emergency.open", vault, nonce, expiry_ms, body)


def review_emergency(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    emergency_id: bytes,
    verdict: EmergencyStatus,
    note: str = "",
) -> TxDraft:
    body = ReviewEmergency(emergency_id, verdict, note)
    return TxDraft(chain_id, "emergency.review", vault, nonce, expiry_ms, body)


def receipt(
    chain_id: str,
    reader: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    vault: bytes,
    record_id: bytes,
    grant_id: bytes = b"",
) -> TxDraft:
    body = RecordReceipt(vault, record_id, grant_id)
    return TxDraft(chain_id, "access.receipt", crypto.account_id(reader), nonce, expiry_ms, body)


def change_validator(
    chain_id: str, nonce: int, expiry_ms: int, action: ValidatorAction, validator: Validator
) -> TxDraft:
    body = ValidatorChange(action, validator)
    return TxDraft(chain_id, "governance.validator", GOVERNANCE_ACCOUNT, nonce, expiry_ms, body)


def report_equivocation(chain_id: str, expiry_ms: int, first: Vote, second: Vote) -> Tx:
    """Evidence needs no signature: the two votes prove the equivocation themselves."""
    body = ReportEquivocation(first, second)
    return Tx(chain_id, "evidence.equivocation", bytes(20), 0, expiry_ms, body.encode())


def change_institution(
    chain_id: str, nonce: int, expiry_ms: int, action: InstitutionAction, institution: Institution
) -> TxDraft:
    body = InstitutionChange(action, institution)
    return TxDraft(chain_id, "governance.institution", GOVERNANCE_ACCOUNT, nonce, expiry_ms, body)


def start_recovery(
    chain_id: str, patient: bytes, nonce: int, expiry_ms: int, *, lost: bytes, replacement: bytes
) -> TxDraft:
    body = StartRecovery(lost, replacement)
    return TxDraft(chain_id, "recovery.start", patient, nonce, expiry_ms, body)


def cancel_recovery(
    chain_id: str, patient: bytes, nonce: int, expiry_ms: int, *, replacement: bytes
) -> TxDraft:
    body = CancelRecovery(replacement)
    return TxDraft(chain_id, "recovery.cancel", patient, nonce, expiry_ms, body)


def vault_handover(
    vault: bytes,
    epoch_keys: Sequence[bytes],
    replacement: bytes,
    members: Members,
    *,
    defer_old: bool = False,
) -> tuple[VaultHandover, bytes]:
    """One vault's part of a recovery's finish: its epoch keys 1..E (in order, as the signer
    unsealed them) sealed to `replacement` (none with `defer_old`: `epoch.share` sends them
    after), and a new epoch E + 1 sealed to `members` (who read the vault once the
    replacement holds the lost key's place); returns the new key."""
    epoch_key = crypto.new_data_key()
    old = () if defer_old else tuple(crypto.seal(key, replacement) for key in epoch_keys)
    handover = VaultHandover(vault, old, len(epoch_keys) + 1, seal_epoch_key(epoch_key, members))
    return handover, epoch_key


def finish_recovery(
    chain_id: str, patient: bytes, nonce: int, expiry_ms: int, handovers: Iterable[VaultHandover]
) -> TxDraft:
    body = FinishRecovery(tuple(sorted(handovers, key=lambda h: h.vault)))
    return TxDraft(chain_id, "recovery.finish", patient, nonce, expiry_ms, body)


def rotate_institution_key(
    chain_id: str, institution: bytes, nonce: int, expiry_ms: int, new_key: bytes
) -> TxDraft:
    """`institution`: its account (the address of its first key); signed by its key now and
    `new_key`."""
    body = RotateInstitutionKey(new_key)
    return TxDraft(chain_id, "institution.rotate_key", institution, nonce, expiry_ms, body)


def reseal(
    chain_id: str, institution: bytes, nonce: int, expiry_ms: int, keys: Iterable[ResealedKey]
) -> TxDraft:
    body = ResealEpochKeys(tuple(sorted(keys, key=lambda k: (k.vault, k.epoch))))
    return TxDraft(chain_id, "institution.reseal", institution, nonce, expiry_ms, body)


def register_minor(
    chain_id: str, keys: tuple[bytes, bytes], guardian: bytes, expiry_ms: int
) -> TxDraft:
    """A minor's registration: signed by its two keys and its guardian."""
    body = RegisterPatient(keys, guardian)
    return TxDraft(chain_id, "account.register", crypto.account_id(keys[0]), 1, expiry_ms, body)


def add_guardian(
    chain_id: str,
    patient: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    guardian: bytes,
    scope: GuardianScope,
    epoch_keys: Mapping[bytes, Sequence[bytes]],
) -> TxDraft:
    """`epoch_keys`: each vault's epoch keys 1..E (as the signer unsealed them), by vault id;
    they are sealed to the guardian here."""
    vaults = tuple(
        EpochKeys(vault, tuple(crypto.seal(key, guardian) for key in keys))
        for vault, keys in sorted(epoch_keys.items())
    )
    body = AddGuardian(guardian, scope, vaults)
    return TxDraft(chain_id, "guardian.add", patient, nonce, expiry_ms, body)


def remove_guardians(
    chain_id: str,
    patient: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    guardian: bytes | None,
    new_epochs: Mapping[bytes, tuple[int, Members]],
) -> tuple[TxDraft, dict[bytes, bytes]]:
    """`guardian.remove` of `guardian`, or `guardian.handover` (None: all of them go), with each
    vault's next epoch (by vault id: its number and who reads it then); returns the draft and
    the new epoch keys by vault."""
    changes, new_keys = [], {}
    for vault, (epoch, members) in sorted(new_epochs.items()):
        new_keys[vault] = crypto.new_data_key()
        changes.append(NewEpoch(vault, epoch, seal_epoch_key(new_keys[vault], members)))
    kind = "guardian.handover" if guardian is None else "guardian.remove"
    body = RemoveGuardians(guardian, tuple(changes))
    return TxDraft(chain_id, kind, patient, nonce, expiry_ms, body), new_keys


def share_epochs(
    chain_id: str,
    vault: bytes,
    nonce: int,
    expiry_ms: int,
    *,
    member: bytes,
    first_epoch: int,
    epoch_keys: Sequence[bytes],
) -> TxDraft:
    """Past epoch keys `first_epoch`, `first_epoch + 1`, ... sealed to `member`, one of the
    vault's patient's keys."""
    sealed = tuple(crypto.seal(key, member) for key in epoch_keys)
    body = ShareEpochKeys(member, first_epoch, sealed)
    return TxDraft(chain_id, "epoch.share", vault, nonce, expiry_ms, body)
