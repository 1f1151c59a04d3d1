"""The patient's access timeline and its FHIR R4 export (validated with fhir.resources)."""

from __future__ import annotations

import dataclasses

from fhir.resources.R4B.bundle import Bundle

from carechain.consensus import crypto
from carechain.consensus.ledger.bodies import EraseRecord
from carechain.consensus.ledger.datatypes import data_type_registry
from carechain.consensus.ledger.records import EmergencyStatus
from carechain.node.audit.access_report import fhir_bundle, timeline
from carechain.node.wallet import builders
from carechain.tests.ledger_world import CHAIN_ID, World

DATA_TYPES = data_type_registry()


def _story() -> World:
    world = World()
    glucose = world.create_vault("glucose")
    cgm = world.create_vault("cgm")
    record = world.put_record(glucose)
    grant_id = world.grant(glucose, "B")
    world.block(world.receipt("B", glucose, record, grant_id))
    opened = builders.open_emergency(
        CHAIN_ID,
        cgm,
        world.nonce(cgm),
        world.expiry(),
        hospital=world.hospital["C"].public_key,
        epoch_key=world.epoch_keys[(cgm, 1)],
        reason="life-threatening",
        duration_ms=3_600_000,
    ).signed(world.hospital["C"], world.trusted)
    world.block(opened)
    erase = builders.TxDraft(
        CHAIN_ID, "record.erase", glucose, world.nonce(glucose), world.expiry(), EraseRecord(record)
    )
    world.block(erase.signed(world.p1, world.p2))
    return world


def test_the_timeline_shows_grants_reads_emergencies_and_erasures() -> None:
    world = _story()
    events = timeline(world.store, world.patient, DATA_TYPES)
    kinds = [e.kind for e in events]
    assert kinds == ["grant", "read", "emergency", "erasure"]
    grant, read, emergency, _ = events
    assert grant.actor == read.actor == world.hospital["B"].public_key
    assert (grant.data_type, read.data_type, emergency.data_type) == ("glucose", "glucose", "cgm")
    assert emergency.detail["status"] == EmergencyStatus.UNREVIEWED.name.lower()
    assert emergency.detail["reason"] == "life-threatening"


def test_other_patients_events_are_not_included() -> None:
    world = _story()
    stranger = crypto.account_id(crypto.PrivateKey(b"\x77" * 32).public_key)
    assert timeline(world.store, stranger, DATA_TYPES) == []


def test_the_fhir_export_is_valid_r4() -> None:
    world = _story()
    bundle = fhir_bundle(timeline(world.store, world.patient, DATA_TYPES), world.patient)
    parsed = Bundle.model_validate(bundle)
    resources = [entry.resource for entry in parsed.entry or [] if entry.resource is not None]
    assert [r.__resource_type__ for r in resources] == ["Consent", "AuditEvent", "AuditEvent"]
    consent, read, emergency = (
        bundle["entry"][0]["resource"],
        bundle["entry"][1]["resource"],
        bundle["entry"][2]["resource"],
    )
    assert consent["provision"]["purpose"][0]["code"] == "TREAT"
    assert read["type"]["code"] == "110110"
    assert (emergency["type"]["code"], emergency["subtype"][0]["code"]) == ("110113", "110127")
    assert emergency["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT"
    assert dataclasses.is_dataclass(timeline(world.store, world.patient, DATA_TYPES)[0])
