"""Whole answers about a patient's vaults, read entry by entry from any `StateReader`.

Each query reads only through `get(table, key)` and reads every entry its answer depends on:
a patient's vaults by data type (a data type without a vault is read as absent), a vault's
grants and emergencies through its index entry (VAULT_INDEX), its records and receipts by
number up to the counts in the vault entry. So the same function answers on a node, from its
state, and in a light client, from the entries a node proved: there, an entry the node left out
is a read that finds no proved entry, and the answer is refused rather than shown short.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from carechain.consensus.codec import Record
from carechain.consensus.ledger.context import epoch_key_key, numbered_key, patient_vault_ids
from carechain.consensus.ledger.records import (
    Emergency,
    Grant,
    InstitutionState,
    Receipt,
    RecordEntry,
    Vault,
    VaultIndex,
)
from carechain.consensus.ledger.state import StateReader, Table

R = TypeVar("R", bound=Record)


class MissingEntry(LookupError):
    """The state a query reads refers to an entry it does not hold (a node's corrupt state, or
    a node's answer that leaves the entry out)."""

    def __init__(self, table: Table, key: bytes, why: str) -> None:
        super().__init__(f"{table.label} {key.hex()} ({why}) is missing")
        self.table = table
        self.key = key


def _load(state: StateReader, table: Table, key: bytes, kind: type[R]) -> R | None:
    raw = state.get(table, key)
    return None if raw is None else kind.decode(raw)


def _must(state: StateReader, table: Table, key: bytes, kind: type[R], why: str) -> R:
    found = _load(state, table, key, kind)
    if found is None:
        raise MissingEntry(table, key, why)
    return found


def institution_names(state: StateReader, keys: Iterable[bytes]) -> dict[bytes, str]:
    """The names of the institutions among `keys` (each by the key that names it); a key that
    names none (the patient's own, an empty actor) has no entry."""
    names = {}
    for key in sorted(set(keys)):
        found = _load(state, Table.INSTITUTION, key, InstitutionState) if key else None
        if found is not None:
            names[key] = found.institution.name
    return names


def vault(state: StateReader, vault_id: bytes) -> Vault | None:
    return _load(state, Table.VAULT, vault_id, Vault)


def patient_vaults(
    state: StateReader, patient: bytes, data_types: Iterable[str]
) -> dict[bytes, Vault]:
    """The patient's vaults by id, looking up every data type the chain knows."""
    return {
        vault_id: _must(state, Table.VAULT, vault_id, Vault, f"the {name} vault")
        for name, vault_id in patient_vault_ids(state, patient, data_types)
    }


def _index(state: StateReader, vault_id: bytes) -> VaultIndex:
    return _load(state, Table.VAULT_INDEX, vault_id, VaultIndex) or VaultIndex()


def vault_grants(state: StateReader, vault_id: bytes) -> list[Grant]:
    """Every grant made on the vault, revoked ones too, in the order they were made."""
    return [
        _must(state, Table.GRANT, grant_id, Grant, "a grant the vault lists")
        for grant_id in _index(state, vault_id).grants
    ]


def vault_emergencies(state: StateReader, vault_id: bytes) -> list[Emergency]:
    """Every emergency access opened on the vault, in the order they were opened."""
    return [
        _must(state, Table.EMERGENCY, emergency_id, Emergency, "an emergency the vault lists")
        for emergency_id in _index(state, vault_id).emergencies
    ]


def vault_erased(state: StateReader, vault_id: bytes) -> list[RecordEntry]:
    """Every record erased from the vault, in the order they were erased."""
    return [
        _must(state, Table.RECORD, vault_id + record_id, RecordEntry, "an erased record")
        for record_id in _index(state, vault_id).erased
    ]


def key_holders(state: StateReader, vault_id: bytes) -> list[bytes]:
    """Who holds the vault's current epoch key, and so can read what is written there now:
    its members, each with the sealed copy of that key the ledger keeps (EPOCH_KEY)."""
    found = vault(state, vault_id)
    if found is None:
        return []
    for member in found.members:
        key = epoch_key_key(vault_id, found.epoch, member)
        if state.get(Table.EPOCH_KEY, key) is None:
            raise MissingEntry(Table.EPOCH_KEY, key, "a member's sealed epoch key")
    return list(found.members)


def _page(count: int, first: int, limit: int | None) -> range:
    """Numbers `first` to `first + limit` (all from `first` when `limit` is None), below
    `count`."""
    first = max(first, 0)
    end = count if limit is None else min(count, first + max(limit, 0))
    return range(first, end)


def vault_receipts(
    state: StateReader,
    found: Vault,
    first: int = 0,
    limit: int | None = None,
    reader: bytes | None = None,
) -> list[Receipt]:
    """The vault's read receipts numbered `first` on (`limit` of them, or all): the vault
    entry counts them, so a page is whole. With `reader`, only that reader's receipts of the
    page: each receipt of the page is still read, so a filtered answer is whole too. (No index
    by reader: it would cost every read receipt two more tree writes, for a list a patient
    asks for now and then.)"""
    receipts = [
        _must(state, Table.RECEIPT, numbered_key(found.vault_id, n), Receipt, f"receipt {n}")
        for n in _page(found.receipt_count, first, limit)
    ]
    return receipts if reader is None else [r for r in receipts if r.reader == reader]


def vault_records(
    state: StateReader, found: Vault, first: int = 0, limit: int | None = None
) -> list[RecordEntry]:
    """The vault's records numbered `first` on, in the order they were added (erased ones
    too, marked so)."""
    records = []
    for n in _page(found.record_count, first, limit):
        key = numbered_key(found.vault_id, n)
        record_id = state.get(Table.VAULT_RECORD, key)
        if record_id is None:
            raise MissingEntry(Table.VAULT_RECORD, key, f"record number {n}")
        records.append(
            _must(state, Table.RECORD, found.vault_id + record_id, RecordEntry, f"record {n}")
        )
    return records
