"""Kinds that create vaults and change what they hold: records, epochs, erasure."""

from __future__ import annotations

import dataclasses

from carechain.consensus.cid import BadContentId, parse_cid
from carechain.consensus.crypto import derived_account_id
from carechain.consensus.genesis import InstitutionKind
from carechain.consensus.ledger.bodies import (
    AttestErasure,
    CreateVault,
    EraseRecord,
    PutRecord,
    RotateEpoch,
    SealedKey,
)
from carechain.consensus.ledger.context import (
    TxContext,
    active_institution,
    check_sealed_members,
    first_signer,
    grants_of,
    load_account,
    load_vault,
    numbered_key,
    readers_by_right,
    require_policy,
    required_members,
    save_epoch_keys,
    trusted_parties,
)
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.policy import OperationClass, vault_policies
from carechain.consensus.ledger.records import (
    ERASURES_PER_VAULT_MAX,
    Access,
    Account,
    AccountKind,
    Attestation,
    RecordEntry,
    Vault,
    VaultIndex,
)
from carechain.consensus.ledger.state import Overlay, Table

CARE_PROVIDERS = (InstitutionKind.HOSPITAL, InstitutionKind.CLINIC, InstitutionKind.LAB)
INLINE = "inline"


def vault_id_of(patient: bytes, data_type: str) -> bytes:
    return derived_account_id("vault", patient, data_type.encode())


def process_create_vault(state: Overlay, body: CreateVault, ctx: TxContext) -> None:
    patient = load_account(state, ctx.tx.account)
    if patient.kind is not AccountKind.PATIENT:
        raise TxRejected("bad_account", "only a patient account creates vaults")
    require_policy(patient, OperationClass.ADMIN, ctx.signers, "creating a vault")
    if body.data_type not in ctx.block.chain.data_types:
        raise TxRejected("unknown_data_type", f"data type {body.data_type!r} is not registered")
    vault_id = vault_id_of(ctx.tx.account, body.data_type)
    if state.get(Table.VAULT, vault_id) is not None:
        raise TxRejected("vault_exists", f"the patient has a {body.data_type} vault already")
    if len(set(body.team)) != len(body.team):
        raise TxRejected("bad_members", "the team lists a hospital twice")
    for member in body.team:
        active_institution(state, member, CARE_PROVIDERS)
    trusted = sorted(trusted_parties(state))
    patient_keys = (patient.keys[0], patient.keys[1])
    vault = Vault(
        vault_id=vault_id,
        owner=ctx.tx.account,
        data_type=body.data_type,
        template=body.template,
        team=tuple(sorted(body.team)),
        epoch=1,
        members=(),
        record_count=0,
        receipt_count=0,
        created_height=ctx.height,
    )
    members = readers_by_right(state, vault)  # the patient, its guardians, team, trusted parties
    check_sealed_members(body.sealed_epoch_keys, members, "vault.create")
    policies = vault_policies(body.template, patient_keys, body.team, trusted)
    state.save(Table.ACCOUNT, vault_id, Account(AccountKind.VAULT, 0, policies, (), ctx.height))
    state.save(Table.VAULT, vault_id, dataclasses.replace(vault, members=tuple(sorted(members))))
    state.put(Table.PATIENT_VAULT, ctx.tx.account + body.data_type.encode(), vault_id)
    save_epoch_keys(state, vault_id, 1, body.sealed_epoch_keys)


def _write_grantee(state: Overlay, vault: Vault, ctx: TxContext) -> bool:
    """Does a signer hold an active read-write grant on this vault?"""
    return any(
        grant.access is Access.READ_WRITE and grant.active_at(ctx.time_ms)
        for signer in sorted(ctx.signers)
        for grant in grants_of(state, vault.vault_id, signer)
    )


def _author(patient: Account, ctx: TxContext) -> bytes:
    """The institution that signed (first by key), else who signed for the patient: one of its
    keys or a guardian, never a key a guardian's signature only stood for."""
    others = sorted(ctx.signers - set(patient.keys) - patient.guardian_keys)
    if others:
        return others[0]
    return first_signer(ctx)


def process_put_record(state: Overlay, body: PutRecord, ctx: TxContext) -> None:
    vault = load_vault(state, ctx.tx.account)
    account = load_account(state, ctx.tx.account)
    if not account.policies.write.satisfied_by(ctx.signers) and not _write_grantee(
        state, vault, ctx
    ):
        require_policy(account, OperationClass.WRITE, ctx.signers, "adding a record")
    if body.data_type != vault.data_type:
        raise TxRejected(
            "data_type_mismatch", f"a {body.data_type} record in a {vault.data_type} vault"
        )
    if body.epoch != vault.epoch:
        raise TxRejected(
            "stale_epoch", f"record under epoch {body.epoch}; the vault is at epoch {vault.epoch}"
        )
    if (body.content_id == INLINE) != bool(body.inline_ciphertext):
        raise TxRejected(
            "bad_body", f"content_id is {INLINE!r} exactly when the ciphertext is inline"
        )
    if body.content_id != INLINE:
        try:  # one text per id: a record never names its blob in a second spelling
            parse_cid(body.content_id)
        except BadContentId as exc:
            raise TxRejected("bad_content_id", exc.message) from None
    key = vault.vault_id + body.record_id
    if state.get(Table.RECORD, key) is not None:
        raise TxRejected("duplicate_record", f"record {body.record_id.hex()} exists already")
    patient = load_account(state, vault.owner)
    entry = RecordEntry(
        record_id=body.record_id,
        data_type=body.data_type,
        content_id=body.content_id,
        size_bytes=body.size_bytes,
        epoch=body.epoch,
        sealed_data_key=body.sealed_data_key,
        inline_ciphertext=body.inline_ciphertext,
        record_time_ms=body.record_time_ms,
        author=_author(patient, ctx),
        added_height=ctx.height,
        added_time_ms=ctx.time_ms,
    )
    state.save(Table.RECORD, key, entry)
    state.put(Table.VAULT_RECORD, numbered_key(vault.vault_id, vault.record_count), body.record_id)
    state.save(
        Table.VAULT, vault.vault_id, dataclasses.replace(vault, record_count=vault.record_count + 1)
    )


def rotate(
    state: Overlay, vault: Vault, new_epoch: int, sealed: tuple[SealedKey, ...], ctx: TxContext
) -> None:
    """Move a vault to `new_epoch`, sealed to exactly the members who must read it now."""
    if new_epoch != vault.epoch + 1:
        raise TxRejected("stale_epoch", f"the next epoch is {vault.epoch + 1}, not {new_epoch}")
    members = required_members(state, vault, ctx.time_ms)
    check_sealed_members(sealed, members, f"epoch {new_epoch}")
    save_epoch_keys(state, vault.vault_id, new_epoch, sealed)
    updated = dataclasses.replace(vault, epoch=new_epoch, members=tuple(sorted(members)))
    state.save(Table.VAULT, vault.vault_id, updated)


def process_rotate_epoch(state: Overlay, body: RotateEpoch, ctx: TxContext) -> None:
    vault = load_vault(state, ctx.tx.account)
    require_policy(
        load_account(state, vault.vault_id), OperationClass.ADMIN, ctx.signers, "rotating"
    )
    rotate(state, vault, body.new_epoch, body.sealed_epoch_keys, ctx)


def process_erase_record(state: Overlay, body: EraseRecord, ctx: TxContext) -> None:
    vault = load_vault(state, ctx.tx.account)
    require_policy(
        load_account(state, vault.vault_id), OperationClass.ADMIN, ctx.signers, "erasing"
    )
    entry = _load_record(state, vault.vault_id, body.record_id)
    listed = state.load(Table.VAULT_INDEX, vault.vault_id, VaultIndex) or VaultIndex()
    if len(listed.erased) >= ERASURES_PER_VAULT_MAX:
        raise TxRejected(
            "vault_erasures_full",
            f"the vault has {ERASURES_PER_VAULT_MAX} erasures on record, the most one vault keeps",
        )
    erased = (*listed.erased, body.record_id)
    state.save(Table.VAULT_INDEX, vault.vault_id, dataclasses.replace(listed, erased=erased))
    state.save(
        Table.RECORD,
        vault.vault_id + body.record_id,
        dataclasses.replace(entry, erased_height=ctx.height),
    )


def _load_record(state: Overlay, vault_id: bytes, record_id: bytes) -> RecordEntry:
    entry = state.load(Table.RECORD, vault_id + record_id, RecordEntry)
    if entry is None:
        raise TxRejected("unknown_record", f"no record {record_id.hex()} in the vault")
    if entry.erased_height is not None:
        raise TxRejected("record_erased", f"record {record_id.hex()} was erased")
    return entry


def process_attest_erasure(state: Overlay, body: AttestErasure, ctx: TxContext) -> None:
    institution = load_account(state, ctx.tx.account)
    if institution.kind is not AccountKind.INSTITUTION:
        raise TxRejected("bad_account", "erasure is attested by an institution's node")
    require_policy(institution, OperationClass.ADMIN, ctx.signers, "attesting an erasure")
    entry = state.load(Table.RECORD, body.vault + body.record_id, RecordEntry)
    if entry is None:
        raise TxRejected("unknown_record", f"no record {body.record_id.hex()} in the vault")
    if entry.erased_height is None:
        raise TxRejected("record_not_erased", f"record {body.record_id.hex()} is not erased")
    key = body.vault + body.record_id + institution.keys[0]
    if state.get(Table.ERASURE, key) is not None:
        raise TxRejected("already_attested", "this institution attested this erasure already")
    state.save(Table.ERASURE, key, Attestation(ctx.height, ctx.time_ms))
