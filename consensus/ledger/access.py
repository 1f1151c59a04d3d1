"""Kinds that decide who reads a vault: grants, revocation, emergency access, read receipts.

Time is always the block's time, never a clock: a grant valid until T stops at the first block
whose time is T or later.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from carechain.consensus.ledger.bodies import (
    GrantAccess,
    OpenEmergency,
    RecordReceipt,
    ReviewEmergency,
    RevokeAccess,
)
from carechain.consensus.ledger.context import (
    TxContext,
    active_institution,
    epoch_key_key,
    first_signer,
    load_account,
    load_vault,
    numbered_key,
    readers_by_right,
    require_policy,
    trusted_parties,
)
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.ledger.policy import OperationClass
from carechain.consensus.ledger.records import (
    EMERGENCY_REASONS,
    GRANTS_LISTED_MAX,
    GRANTS_PER_VAULT_MAX,
    Access,
    AccountKind,
    Emergency,
    EmergencyStatus,
    Grant,
    GrantIds,
    Receipt,
    RecordEntry,
    Vault,
    VaultIndex,
)
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.vaults import CARE_PROVIDERS, rotate

# HL7 v3 PurposeOfUse codes a grant may name.
PURPOSES: Final = frozenset(
    {"TREAT", "ETREAT", "CAREMGT", "HPAYMT", "HOPERAT", "HRESCH", "PATRQT", "PUBHLTH", "HDIRECT"}
)
GRANTS_PER_GRANTEE_MAX: Final = 64


def _add_grant(state: Overlay, vault: Vault, grant: Grant, sealed_key: bytes) -> None:
    index_key = vault.vault_id + grant.grantee
    index = state.load(Table.GRANT_INDEX, index_key, GrantIds) or GrantIds(())
    if len(index.ids) >= GRANTS_PER_GRANTEE_MAX:
        raise TxRejected("bad_grant", f"the grantee holds {GRANTS_PER_GRANTEE_MAX} grants already")
    listed = state.load(Table.VAULT_INDEX, vault.vault_id, VaultIndex) or VaultIndex()
    most = GRANTS_LISTED_MAX if grant.emergency_id else GRANTS_PER_VAULT_MAX
    if len(listed.grants) >= most:
        raise TxRejected(
            "vault_grants_full",
            f"the vault has {len(listed.grants)} grants on record, the most one vault keeps "
            f"({GRANTS_PER_VAULT_MAX}, and {GRANTS_LISTED_MAX} with emergency accesses)",
        )
    emergencies = listed.emergencies
    if grant.emergency_id:
        emergencies = (*emergencies, grant.emergency_id)
    listed = dataclasses.replace(
        listed, grants=(*listed.grants, grant.grant_id), emergencies=emergencies
    )
    state.save(Table.VAULT_INDEX, vault.vault_id, listed)
    state.save(Table.GRANT, grant.grant_id, grant)
    state.save(Table.GRANT_INDEX, index_key, GrantIds((*index.ids, grant.grant_id)))
    state.put(
        Table.EPOCH_KEY, epoch_key_key(vault.vault_id, vault.epoch, grant.grantee), sealed_key
    )
    if grant.grantee not in vault.members:
        members = tuple(sorted((*vault.members, grant.grantee)))
        state.save(Table.VAULT, vault.vault_id, dataclasses.replace(vault, members=members))


def _check_period(body: GrantAccess, ctx: TxContext) -> None:
    if body.valid_until_ms <= body.valid_from_ms:
        raise TxRejected("bad_grant", "valid_until must be after valid_from")
    if body.valid_until_ms <= ctx.time_ms:
        raise TxRejected("bad_grant", "the grant would end before this block")
    start, end = body.record_from_ms, body.record_until_ms
    if start is not None and end is not None and end <= start:
        raise TxRejected("bad_grant", "record_until must be after record_from")
    if body.purpose not in PURPOSES:
        raise TxRejected("bad_grant", f"purpose {body.purpose!r} is not one of {sorted(PURPOSES)}")


def process_grant(state: Overlay, body: GrantAccess, ctx: TxContext) -> None:
    vault = load_vault(state, ctx.tx.account)
    require_policy(
        load_account(state, vault.vault_id), OperationClass.ADMIN, ctx.signers, "granting"
    )
    active_institution(state, body.grantee)
    _check_period(body, ctx)
    grant = Grant(
        grant_id=ctx.tx.id,
        vault=vault.vault_id,
        grantee=body.grantee,
        access=body.access,
        valid_from_ms=body.valid_from_ms,
        valid_until_ms=body.valid_until_ms,
        record_from_ms=body.record_from_ms,
        record_until_ms=body.record_until_ms,
        purpose=body.purpose,
        granted_height=ctx.height,
    )
    _add_grant(state, vault, grant, body.sealed_epoch_key)


def _load_grant(state: Overlay, vault_id: bytes, grant_id: bytes) -> Grant:
    grant = state.load(Table.GRANT, grant_id, Grant)
    if grant is None or grant.vault != vault_id:
        raise TxRejected("unknown_grant", f"no grant {grant_id.hex()[:16]} on this vault")
    if grant.revoked_height is not None:
        raise TxRejected("grant_revoked", f"grant {grant_id.hex()[:16]} was revoked")
    return grant


def process_revoke(state: Overlay, body: RevokeAccess, ctx: TxContext) -> None:
    """Revoke a grant and rotate the epoch in the same transaction, so the grantee never
    receives a key to anything written afterwards."""
    vault = load_vault(state, ctx.tx.account)
    require_policy(
        load_account(state, vault.vault_id), OperationClass.ADMIN, ctx.signers, "revoking"
    )
    grant = _load_grant(state, vault.vault_id, body.grant_id)
    state.save(Table.GRANT, grant.grant_id, dataclasses.replace(grant, revoked_height=ctx.height))
    rotate(state, vault, body.new_epoch, body.sealed_epoch_keys, ctx)


def process_open_emergency(state: Overlay, body: OpenEmergency, ctx: TxContext) -> None:
    """Break-glass: a hospital and a trusted party together open a time-capped read grant."""
    vault = load_vault(state, ctx.tx.account)
    account = load_account(state, vault.vault_id)
    require_policy(account, OperationClass.EMERGENCY, ctx.signers, "emergency access")
    if body.hospital not in ctx.signers:
        raise TxRejected("not_authorised", "the requesting hospital must sign its emergency")
    active_institution(state, body.hospital, CARE_PROVIDERS)
    trusted_signers = sorted(ctx.signers & trusted_parties(state))
    if not trusted_signers:
        raise TxRejected("not_authorised", "emergency access needs a trusted party's signature")
    if body.reason not in EMERGENCY_REASONS:
        raise TxRejected(
            "bad_reason", f"reason {body.reason!r}; use one of {sorted(EMERGENCY_REASONS)}"
        )
    cap = ctx.block.chain.params.emergency_duration_ms_max
    if body.duration_ms > cap:
        raise TxRejected("emergency_too_long", f"{body.duration_ms} ms exceeds the cap {cap} ms")
    until = ctx.time_ms + body.duration_ms
    grant = Grant(
        grant_id=ctx.tx.id,
        vault=vault.vault_id,
        grantee=body.hospital,
        access=Access.READ,
        valid_from_ms=ctx.time_ms,
        valid_until_ms=until,
        record_from_ms=None,
        record_until_ms=None,
        purpose="ETREAT",
        granted_height=ctx.height,
        emergency_id=ctx.tx.id,
    )
    _add_grant(state, vault, grant, body.sealed_epoch_key)
    emergency = Emergency(
        emergency_id=ctx.tx.id,
        vault=vault.vault_id,
        hospital=body.hospital,
        trusted_party=trusted_signers[0],
        reason=body.reason,
        note=body.note,
        opened_height=ctx.height,
        opened_time_ms=ctx.time_ms,
        until_ms=until,
        grant_id=ctx.tx.id,
    )
    state.save(Table.EMERGENCY, ctx.tx.id, emergency)


def process_review_emergency(state: Overlay, body: ReviewEmergency, ctx: TxContext) -> None:
    """The patient (vault admin) or a trusted party reviews a break-glass access. An access
    found inappropriate ends at once."""
    vault = load_vault(state, ctx.tx.account)
    account = load_account(state, vault.vault_id)
    trusted_signers = sorted(ctx.signers & trusted_parties(state))
    if not trusted_signers:
        require_policy(account, OperationClass.ADMIN, ctx.signers, "reviewing an emergency")
    emergency = state.load(Table.EMERGENCY, body.emergency_id, Emergency)
    if emergency is None or emergency.vault != vault.vault_id:
        raise TxRejected("unknown_emergency", f"no emergency {body.emergency_id.hex()[:16]} here")
    if emergency.status is not EmergencyStatus.UNREVIEWED:
        raise TxRejected("already_reviewed", f"reviewed at height {emergency.reviewed_height}")
    if body.verdict is EmergencyStatus.UNREVIEWED:
        raise TxRejected("bad_body", "a review's verdict is appropriate or inappropriate")
    reviewer = trusted_signers[0] if trusted_signers else first_signer(ctx)
    reviewed = dataclasses.replace(
        emergency,
        status=body.verdict,
        reviewer=reviewer,
        review_note=body.note,
        reviewed_height=ctx.height,
    )
    state.save(Table.EMERGENCY, emergency.emergency_id, reviewed)
    grant = state.load(Table.GRANT, emergency.grant_id, Grant)
    assert grant is not None, "an emergency's grant is missing"
    if body.verdict is EmergencyStatus.INAPPROPRIATE and grant.revoked_height is None:
        state.save(
            Table.GRANT, grant.grant_id, dataclasses.replace(grant, revoked_height=ctx.height)
        )


def _check_reader_grant(
    state: Overlay, body: RecordReceipt, reader: bytes, entry: RecordEntry, ctx: TxContext
) -> None:
    if not body.grant_id:
        raise TxRejected("not_authorised", "the reader holds no right to this vault; name a grant")
    grant = _load_grant(state, body.vault, body.grant_id)
    if grant.grantee != reader:
        raise TxRejected("not_authorised", "the grant belongs to another institution")
    if ctx.time_ms < grant.valid_from_ms:
        raise TxRejected("grant_not_yet_valid", f"the grant starts at {grant.valid_from_ms}")
    if ctx.time_ms >= grant.valid_until_ms:
        raise TxRejected("grant_expired", f"the grant ended at {grant.valid_until_ms}")
    if not grant.covers_record_time(entry.record_time_ms):
        raise TxRejected("outside_record_window", "the record's date is outside the grant")


def process_receipt(state: Overlay, body: RecordReceipt, ctx: TxContext) -> None:
    """A reader's signed proof that it fetched a record, checked against its right to read."""
    reader_account = load_account(state, ctx.tx.account)
    if reader_account.kind is not AccountKind.INSTITUTION:
        raise TxRejected("bad_account", "receipts are signed by the reading institution")
    reader = reader_account.keys[0]
    active_institution(state, reader)  # a revoked institution reads nothing more
    require_policy(reader_account, OperationClass.ADMIN, ctx.signers, "a read receipt")
    vault = load_vault(state, body.vault)
    entry = state.load(Table.RECORD, body.vault + body.record_id, RecordEntry)
    if entry is None:
        raise TxRejected("unknown_record", f"no record {body.record_id.hex()} in the vault")
    if entry.erased_height is not None:
        raise TxRejected("record_erased", "the record was erased; nobody may read it")
    if reader not in readers_by_right(state, vault) or body.grant_id:
        _check_reader_grant(state, body, reader, entry, ctx)
    receipt = Receipt(body.vault, body.record_id, reader, body.grant_id, ctx.height, ctx.time_ms)
    state.save(Table.RECEIPT, numbered_key(body.vault, vault.receipt_count), receipt)
    state.save(
        Table.VAULT,
        vault.vault_id,
        dataclasses.replace(vault, receipt_count=vault.receipt_count + 1),
    )
