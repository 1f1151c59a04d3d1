"""A vault's index (VAULT_INDEX, VAULT_RECORD) lists exactly what its tables hold, and a query
run over proved entries needs every one of them: leave one out and the answer is refused."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.consensus.ledger import queries
from carechain.consensus.ledger.bodies import EraseRecord
from carechain.consensus.ledger.context import required_members
from carechain.consensus.ledger.datatypes import data_type_registry
from carechain.consensus.ledger.records import (
    Emergency,
    EmergencyStatus,
    Grant,
    RecordEntry,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.consensus.ledger.state_proof import verify
from carechain.node.audit.access_report import timeline
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World

DATA_TYPES = data_type_registry()
STEPS = st.lists(
    st.sampled_from(["record", "grant", "revoke", "emergency", "review", "receipt", "erase"]),
    min_size=1,
    max_size=14,
)


def _history(world: World, steps: list[str]) -> list[bytes]:
    """Two vaults (so one's entries must never show in the other's lists) and a run of steps
    on the first; each step that cannot apply yet is skipped."""
    glucose = world.create_vault("glucose", team=("A",))
    cgm = world.create_vault("cgm", team=("A",))
    world.put_record(cgm)
    world.grant(cgm, "C")
    records: list[bytes] = []
    grants: list[bytes] = []
    emergencies: list[bytes] = []
    for step in steps:
        vault = world.vault(glucose)
        if step == "record":
            records.append(world.put_record(glucose))
        elif step == "grant":
            grants.append(world.grant(glucose, "B"))
        elif step == "revoke" and grants:
            members = set(required_members(Overlay(world.store), vault, world.time_ms + 1000))
            revoked = grants.pop(0)
            if not grants:  # B holds no other grant
                members.discard(world.hospital["B"].public_key)
            draft, key = builders.revoke(
                CHAIN_ID, glucose, world.nonce(glucose), world.expiry(),
                grant_id=revoked, new_epoch=vault.epoch + 1, remaining_members=members,
            )  # fmt: skip
            world.block(draft.signed(world.p1, world.p2))
            world.epoch_keys[(glucose, vault.epoch + 1)] = key
        elif step == "emergency":
            opened = builders.open_emergency(
                CHAIN_ID, glucose, world.nonce(glucose), world.expiry(),
                hospital=world.hospital["C"].public_key,
                epoch_key=world.epoch_keys[(glucose, vault.epoch)],
                reason="unconscious", duration_ms=60_000,
            ).signed(world.hospital["C"], world.trusted)  # fmt: skip
            world.block(opened)
            emergencies.append(opened.id)
        elif step == "review" and emergencies:
            review = builders.review_emergency(
                CHAIN_ID, glucose, world.nonce(glucose), world.expiry(),
                emergency_id=emergencies.pop(0), verdict=EmergencyStatus.APPROPRIATE,
            )  # fmt: skip
            world.block(review.signed(world.trusted))
        elif step == "receipt" and records:
            world.block(world.receipt("A", glucose, records[-1]))
        elif step == "erase" and records:
            erase = builders.TxDraft(
                CHAIN_ID, "record.erase", glucose, world.nonce(glucose), world.expiry(),
                EraseRecord(records.pop(0)),
            )  # fmt: skip
            world.block(erase.signed(world.p1, world.p2))
    return [glucose, cgm]


def _scanned(world: World, vault_id: bytes) -> dict[str, list[bytes]]:
    """What a full scan of the tables finds for the vault: the oracle the index must match."""
    grants = [Grant.decode(v) for _, v in world.store.table_entries(Table.GRANT)]
    emergencies = [Emergency.decode(v) for _, v in world.store.table_entries(Table.EMERGENCY)]
    records = [RecordEntry.decode(v) for _, v in world.store.table_entries(Table.RECORD, vault_id)]
    mine = sorted((g for g in grants if g.vault == vault_id), key=lambda g: g.granted_height)
    return {
        "grants": [g.grant_id for g in mine],
        "emergencies": [
            e.emergency_id
            for e in sorted(emergencies, key=lambda e: e.opened_height)
            if e.vault == vault_id
        ],
        "records": sorted(r.record_id for r in records),
        "erased": sorted(r.record_id for r in records if r.erased_height is not None),
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_the_index_lists_exactly_what_the_tables_hold(steps: list[str]) -> None:
    world = World()
    for vault_id in _history(world, steps):
        scanned = _scanned(world, vault_id)
        vault = world.vault(vault_id)
        assert [g.grant_id for g in queries.vault_grants(world.store, vault_id)] == (
            scanned["grants"]
        ), steps
        assert [e.emergency_id for e in queries.vault_emergencies(world.store, vault_id)] == (
            scanned["emergencies"]
        )
        records = queries.vault_records(world.store, vault)
        assert sorted(r.record_id for r in records) == scanned["records"]
        assert [r.added_height for r in records] == sorted(r.added_height for r in records)
        erased = queries.vault_erased(world.store, vault_id)
        assert sorted(r.record_id for r in erased) == scanned["erased"]
        receipts = queries.vault_receipts(world.store, vault)
        assert len(receipts) == vault.receipt_count
        assert all(r.vault == vault_id for r in receipts)
        by_b = queries.vault_receipts(world.store, vault, reader=world.hospital["B"].public_key)
        assert by_b == [r for r in receipts if r.reader == world.hospital["B"].public_key]
        assert queries.key_holders(world.store, vault_id) == list(vault.members)
    vaults = queries.patient_vaults(world.store, world.patient, DATA_TYPES)
    assert sorted(v.data_type for v in vaults.values()) == ["cgm", "glucose"]


def test_pages_of_records_and_receipts_cover_the_counts() -> None:
    world = World()
    vault_id = world.create_vault("glucose", team=("A",))
    for _ in range(5):
        record = world.put_record(vault_id)
        world.block(world.receipt("A", vault_id, record))
    vault = world.vault(vault_id)
    pages = [queries.vault_records(world.store, vault, first, 2) for first in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [r.record_id for p in pages for r in p] == [
        r.record_id for r in queries.vault_records(world.store, vault)
    ]
    assert len(queries.vault_receipts(world.store, vault, 3)) == 2


class _Proved:
    """A client's view: only the entries it was given, each checked against the root."""

    def __init__(self, root: bytes, entries: dict[tuple[Table, bytes], bytes | None]) -> None:
        self.root = root
        self.entries = entries

    def get(self, table: Table, key: bytes) -> bytes | None:
        if (table, key) not in self.entries:
            raise queries.MissingEntry(table, key, "not in the answer")
        return self.entries[table, key]


def _vault(state: StateReader, vault_id: bytes) -> Vault:
    found = queries.vault(state, vault_id)
    assert found is not None
    return found


QUERIES: dict[str, Callable[[StateReader, World, bytes], Any]] = {
    "grants": lambda state, world, v: queries.vault_grants(state, v),
    "emergencies": lambda state, world, v: queries.vault_emergencies(state, v),
    "records": lambda state, world, v: queries.vault_records(state, _vault(state, v)),
    "receipts": lambda state, world, v: queries.vault_receipts(state, _vault(state, v)),
    "timeline": lambda state, world, v: timeline(state, world.patient, DATA_TYPES),
    "holders": lambda state, world, v: queries.key_holders(state, v),
    "receipts by reader": lambda state, world, v: queries.vault_receipts(
        state, _vault(state, v), reader=world.hospital["A"].public_key
    ),
}


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_a_query_over_proved_entries_needs_every_one_of_them(name: str) -> None:
    seed = 1811
    rng = random.Random(seed)
    world = World()
    vault_id, _ = _history(
        world,
        ["record", "grant", "receipt", "emergency", "record", "erase", "grant", "revoke"],
    )
    query = QUERIES[name]
    reads = world.store.prover_at(world.height)
    expected = query(reads, world, vault_id)
    assert expected, name
    root = world.store.root
    entries = {}
    for (table, key), (proof, value) in reads.proved.items():
        verify(root, table, key, value, proof)
        entries[table, key] = value
    assert query(_Proved(root, entries), world, vault_id) == expected
    assert query(world.store, world, vault_id) == expected
    left_out = rng.choice(sorted(entries))
    del entries[left_out]
    with pytest.raises(queries.MissingEntry) as refused:
        query(_Proved(root, entries), world, vault_id)
    assert refused.value.table == left_out[0], f"seed {seed}"
