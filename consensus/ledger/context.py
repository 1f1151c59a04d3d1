"""What a transaction is applied against (chain, block, signers) and the lookups every kind
shares: load-or-reject helpers that turn a missing entry into the right reason code."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Final

from carechain.consensus.crypto import account_id
from carechain.consensus.genesis import ConsensusParams, DataType, Genesis, InstitutionKind
from carechain.consensus.ledger.bodies import SealedKey
from carechain.consensus.ledger.datatypes import data_type_registry
from carechain.consensus.ledger.errors import PolicyNotSatisfied, TxRejected
from carechain.consensus.ledger.policy import OperationClass, Policy
from carechain.consensus.ledger.records import (
    Account,
    AccountKind,
    Grant,
    GrantIds,
    InstitutionState,
    KeyChanges,
    KeyList,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.consensus.types import Tx

TRUSTED_PARTIES_KEY = b"trusted_parties"
KEY_CHANGES_KEY = b"key_changes"
VALIDATORS_KEY = b"validators"
GOVERNANCE_KEY = b"governance"


def pending_key(height: int) -> bytes:
    return b"pending/" + struct.pack(">Q", height)


@dataclasses.dataclass(frozen=True, slots=True)
class ChainContext:
    chain_id: str
    params: ConsensusParams
    data_types: Mapping[str, DataType]

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> ChainContext:
        return cls(genesis.chain_id, genesis.params, data_type_registry(genesis.extra_data_types))


@dataclasses.dataclass(frozen=True, slots=True)
class BlockContext:
    chain: ChainContext
    height: int
    time_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class TxContext:
    block: BlockContext
    tx: Tx
    signers: frozenset[bytes]

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def time_ms(self) -> int:
        return self.block.time_ms


def first_signer(ctx: TxContext) -> bytes:
    """The first (by key) of the keys that both signed the transaction and count: not a key a
    guardian's signature only stood for, nor a retired or revoked one (any that counts when
    none did both: an institution's rotated key counts as its first key)."""
    signed = ctx.signers & frozenset(s.public_key for s in ctx.tx.signatures)
    return sorted(signed or ctx.signers)[0]


def load_account(state: Overlay, account_id: bytes) -> Account:
    account = state.load(Table.ACCOUNT, account_id, Account)
    if account is None:
        raise TxRejected("unknown_account", f"account {account_id.hex()} does not exist")
    return account


def load_patient(state: Overlay, ctx: TxContext, what: str) -> Account:
    """The transaction's account, which must be a patient's (`what`: which kinds need one)."""
    account = load_account(state, ctx.tx.account)
    if account.kind is not AccountKind.PATIENT:
        raise TxRejected("bad_account", f"only a patient account {what}")
    return account


def load_vault(state: Overlay, vault_id: bytes) -> Vault:
    vault = state.load(Table.VAULT, vault_id, Vault)
    if vault is None:
        raise TxRejected("unknown_vault", f"vault {vault_id.hex()} does not exist")
    return vault


def require_policy(
    account: Account, operation: OperationClass, signers: Collection[bytes], what: str
) -> None:
    policy = account.policies.for_class(operation)
    if not policy.satisfied_by(signers):
        raise PolicyNotSatisfied(
            f"{what} needs the account's {operation.name.lower()} policy "
            f"({describe(policy)}); {len(signers)} valid signature(s) do not satisfy it",
            policy,
        )


def describe(policy: Policy) -> str:
    parts = [key.hex()[:8] for key in policy.keys] + [describe(p) for p in policy.policies]
    return f"{policy.threshold} of [{', '.join(parts)}]"


def active_institution(
    state: Overlay, key: bytes, kinds: Collection[InstitutionKind] | None = None
) -> InstitutionState:
    found = state.load(Table.INSTITUTION, key, InstitutionState)
    if found is None or not found.active:
        raise TxRejected("unknown_institution", f"{key.hex()[:16]} is not an active institution")
    if kinds is not None and found.kind not in kinds:
        names = "/".join(k.name.lower() for k in kinds)
        raise TxRejected(
            "not_authorised",
            f"{found.institution.name} is a {found.kind.name.lower()}, not {names}",
        )
    return found


def trusted_parties(state: Overlay) -> frozenset[bytes]:
    listed = state.load(Table.META, TRUSTED_PARTIES_KEY, KeyList)
    return frozenset(listed.keys) if listed else frozenset()


def grants_of(state: Overlay, vault_id: bytes, grantee: bytes) -> list[Grant]:
    index = state.load(Table.GRANT_INDEX, vault_id + grantee, GrantIds)
    grants = []
    for grant_id in index.ids if index else ():
        grant = state.load(Table.GRANT, grant_id, Grant)
        assert grant is not None, "grant index points at a missing grant"
        grants.append(grant)
    return grants


def has_active_grant(state: Overlay, vault_id: bytes, grantee: bytes, time_ms: int) -> bool:
    return any(g.active_at(time_ms) for g in grants_of(state, vault_id, grantee))


def key_taken(state: Overlay, key: bytes) -> bool:
    """Whether `key` serves some party already, or did: an institution (its first key, its key
    now, one it rotated away from) or a patient (a key or the address of an account)."""
    return (
        institution_key_in_use(state, key)
        or state.get(Table.PATIENT_KEY, key) is not None
        or state.get(Table.ACCOUNT, account_id(key)) is not None
    )


def patient_vault_ids(
    state: StateReader, patient: bytes, data_types: Iterable[str]
) -> Iterator[tuple[str, bytes]]:
    """The ids of `patient`'s vaults with their data types, in data type order: one lookup
    per type the chain knows (so a light client's reads of them prove the list whole)."""
    for name in sorted(data_types):
        vault_id = state.get(Table.PATIENT_VAULT, patient + name.encode())
        if vault_id is not None:
            yield name, vault_id


def patient_vaults(state: Overlay, patient: bytes, ctx: TxContext) -> Iterator[Vault]:
    """Every vault of `patient`, in data type order (at most one per registered type)."""
    for _, vault_id in patient_vault_ids(state, patient, ctx.block.chain.data_types):
        vault = state.load(Table.VAULT, vault_id, Vault)
        assert vault is not None, "the patient's vault index points at a missing vault"
        yield vault


def every_patient_vault(
    state: Overlay, given: list[bytes], ctx: TxContext, code: str, what: str
) -> list[Vault]:
    """The vaults of the transaction's patient, by vault id, which `given` (vault ids, in
    order) must name exactly: a change that touches every vault touches all or none."""
    vaults = sorted(patient_vaults(state, ctx.tx.account, ctx), key=lambda v: v.vault_id)
    if given != [vault.vault_id for vault in vaults]:
        raise TxRejected(
            code,
            f"{what} exactly the patient's {len(vaults)} vault(s), by vault id: "
            f"{[vault.vault_id.hex() for vault in vaults]}",
        )
    return vaults


def key_changes(state: Overlay) -> KeyChanges:
    return state.load(Table.META, KEY_CHANGES_KEY, KeyChanges) or KeyChanges()


# The INSTITUTION_KEY value of a key an institution rotated away from.
RETIRED: Final = b""


def is_revoked(state: Overlay, key: bytes) -> bool:
    """Whether `key` names an institution governance revoked: its signatures count for no
    policy but governance's, it reads by no right and holds no grant that counts, so the next
    epoch of each vault it could read is sealed without it."""
    found = state.load(Table.INSTITUTION, key, InstitutionState)
    return found is not None and not found.active


def acting_keys(state: Overlay, signers: frozenset[bytes]) -> frozenset[bytes]:
    """Whom a transaction's signatures act for: an institution's key now stands for its first
    key (which names it in teams, grants and policies); a key it rotated away from and a
    revoked institution's keys stand for nobody; any other key for itself."""
    changes = key_changes(state)
    if not changes.revocations and not changes.rotations:
        return signers
    acting = set()
    for signer in signers:
        first = state.get(Table.INSTITUTION_KEY, signer) if changes.rotations else None
        if first == RETIRED:
            continue
        stands_for = signer if first is None else first
        if not (changes.revocations and is_revoked(state, stands_for)):
            acting.add(stands_for)
    return frozenset(acting)


def institution_key_in_use(state: Overlay, key: bytes) -> bool:
    """Whether `key` names or names no more an institution: its first key, its key now, or
    one it rotated away from (a key serves one party, once)."""
    return (
        state.get(Table.INSTITUTION, key) is not None
        or state.get(Table.INSTITUTION_KEY, key) is not None
    )


def _not_revoked(state: Overlay, keys: Iterable[bytes]) -> frozenset[bytes]:
    if not key_changes(state).revocations:
        return frozenset(keys)
    return frozenset(key for key in keys if not is_revoked(state, key))


def readers_by_right(state: Overlay, vault: Vault) -> frozenset[bytes]:
    """Keys that read a vault without a grant: the patient and its guardians, its team (but a
    revoked member) and trusted parties."""
    owner = load_account(state, vault.owner)
    team = _not_revoked(state, vault.team)
    return frozenset(owner.keys) | owner.guardian_keys | team | trusted_parties(state)


def required_members(state: Overlay, vault: Vault, time_ms: int) -> frozenset[bytes]:
    """Who must hold the vault's epoch key now: readers by right and active grantees (a
    revoked institution's grants count no more)."""
    members = set(readers_by_right(state, vault))
    grantees = _not_revoked(state, [key for key in vault.members if key not in members])
    for key in grantees:
        if has_active_grant(state, vault.vault_id, key, time_ms):
            members.add(key)
    return frozenset(members)


def check_sealed_members(
    sealed: tuple[SealedKey, ...], required: frozenset[bytes], what: str
) -> None:
    given = [s.member for s in sealed]
    if len(set(given)) != len(given):
        raise TxRejected("bad_members", f"{what} seals the epoch key to one member twice")
    missing, extra = required - set(given), set(given) - required
    if missing or extra:
        raise TxRejected(
            "bad_members",
            f"{what} must seal the epoch key to exactly the {len(required)} member(s) who read "
            f"the vault: missing {sorted(k.hex()[:8] for k in missing)}, "
            f"not allowed {sorted(k.hex()[:8] for k in extra)}",
        )


def save_epoch_keys(
    state: Overlay, vault_id: bytes, epoch: int, sealed: tuple[SealedKey, ...]
) -> None:
    for entry in sealed:
        state.put(Table.EPOCH_KEY, epoch_key_key(vault_id, epoch, entry.member), entry.sealed)


def epoch_key_key(vault_id: bytes, epoch: int, member: bytes) -> bytes:
    return vault_id + struct.pack(">Q", epoch) + member


def numbered_key(vault_id: bytes, sequence: int) -> bytes:
    """The key of a vault's `sequence`-th receipt (RECEIPT) or record (VAULT_RECORD)."""
    return vault_id + struct.pack(">Q", sequence)
