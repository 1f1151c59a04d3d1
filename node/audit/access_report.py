"""A patient's access timeline from committed state, and its FHIR R4 export.

Who was granted what, when and for how long (and when it was revoked); who actually read which
record (read receipts); emergency accesses with their reasons and review; erasures. As FHIR:
a `Consent` per grant, an `AuditEvent` per read (DICOM 110110 Patient Record) and per
break-glass (DICOM 110113 Security Alert, subtype 110127 Emergency Override Started, purpose
ETREAT), in one collection `Bundle`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any, Protocol

from carechain.consensus.crypto import encode_address
from carechain.consensus.ledger import queries
from carechain.consensus.ledger.records import (
    Emergency,
    Grant,
    InstitutionState,
    Recovery,
    Vault,
)
from carechain.consensus.ledger.state import StateReader, Table

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


class TableReader(Protocol):
    def table_entries(self, table: Table, prefix: bytes = b"") -> list[tuple[bytes, bytes]]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class AccessEvent:
    height: int
    time_ms: int | None
    kind: str  # grant, read, emergency, erasure, recovery (a pending one)
    actor: bytes  # the institution's key (empty for the patient)
    data_type: str
    detail: dict[str, Any]


def _iso(time_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def revoked_keys(reader: TableReader) -> frozenset[bytes]:
    """The institutions governance revoked, by the first key that names each."""
    return frozenset(
        key
        for key, raw in reader.table_entries(Table.INSTITUTION)
        if not InstitutionState.decode(raw).active
    )


def readable_by_revoked(reader: TableReader) -> list[dict[str, Any]]:
    """Vaults whose current epoch key an institution governance revoked still holds: it could
    decrypt what is written there now, until the patient rotates the epoch (the patient's
    agent does on seeing the revocation)."""
    revoked = revoked_keys(reader)
    found = []
    for _, raw in reader.table_entries(Table.VAULT) if revoked else ():
        vault = Vault.decode(raw)
        holders = sorted(set(vault.members) & revoked)
        if holders:
            found.append(
                {
                    "vault": vault.vault_id.hex(),
                    "patient": encode_address(vault.owner),
                    "data_type": vault.data_type,
                    "epoch": vault.epoch,
                    "revoked_keys": [key.hex() for key in holders],
                }
            )
    return found


def timeline(state: StateReader, patient: bytes, data_types: Iterable[str]) -> list[AccessEvent]:
    """Every access event of the patient's vaults, in chain order. It reads each entry it
    depends on through `state.get` (`consensus/ledger/queries.py`), so a light client runs it
    over the entries a node proved and refuses an answer that leaves one out."""
    vaults = queries.patient_vaults(state, patient, data_types)
    events: list[AccessEvent] = []
    for vault_id, vault in vaults.items():
        for grant in queries.vault_grants(state, vault_id):
            if not grant.emergency_id:
                events.append(_grant_event(grant, vault))
        for emergency in queries.vault_emergencies(state, vault_id):
            events.append(_emergency_event(emergency, vault))
        for receipt in queries.vault_receipts(state, vault):
            events.append(
                AccessEvent(
                    receipt.height,
                    receipt.time_ms,
                    "read",
                    receipt.reader,
                    vault.data_type,
                    {"record": receipt.record_id.hex(), "grant": receipt.grant_id.hex()},
                )
            )
        for record in queries.vault_erased(state, vault_id):
            events.append(
                AccessEvent(
                    record.erased_height or 0,
                    None,
                    "erasure",
                    b"",
                    vault.data_type,
                    {"record": record.record_id.hex()},
                )
            )
    raw = state.get(Table.RECOVERY, patient)
    if raw is not None:
        pending = Recovery.decode(raw)  # the patient's keys can still cancel it
        events.append(
            AccessEvent(
                pending.started_height,
                pending.started_ms,
                "recovery",
                b"",
                "",
                {
                    "status": "pending",
                    "lost": pending.lost.hex(),
                    "replacement": pending.replacement.hex(),
                    "ready_ms": pending.ready_ms,
                },
            )
        )
    return sorted(events, key=lambda e: (e.height, e.kind))


def _grant_event(grant: Grant, vault: Vault) -> AccessEvent:
    return AccessEvent(
        grant.granted_height,
        None,
        "grant",
        grant.grantee,
        vault.data_type,
        {
            "grant": grant.grant_id.hex(),
            "access": grant.access.name.lower(),
            "valid_from_ms": grant.valid_from_ms,
            "valid_until_ms": grant.valid_until_ms,
            "purpose": grant.purpose,
            "revoked_height": grant.revoked_height,
        },
    )


def _emergency_event(emergency: Emergency, vault: Vault) -> AccessEvent:
    return AccessEvent(
        emergency.opened_height,
        emergency.opened_time_ms,
        "emergency",
        emergency.hospital,
        vault.data_type,
        {
            "emergency": emergency.emergency_id.hex(),
            "reason": emergency.reason,
            "until_ms": emergency.until_ms,
            "trusted_party": emergency.trusted_party.hex(),
            "status": emergency.status.name.lower(),
            "reviewed_height": emergency.reviewed_height,
        },
    )


def _institution(key: bytes) -> dict[str, Any]:
    return {"identifier": {"system": "urn:carechain:key", "value": key.hex()}}


def _consent(event: AccessEvent, patient: str) -> dict[str, Any]:
    detail = event.detail
    return {
        "resourceType": "Consent",
        "id": detail["grant"][:64],
        "status": "inactive" if detail["revoked_height"] is not None else "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {"system": "http://loinc.org", "code": "59284-0", "display": "Consent Document"}
                ]
            }
        ],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {
                "start": _iso(detail["valid_from_ms"]),
                "end": _iso(detail["valid_until_ms"]),
            },
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": _institution(event.actor),
                }
            ],
            "purpose": [{"system": ACT_REASON, "code": detail["purpose"]}],
            "data": [],
            "class": [{"code": event.data_type}],
        },
    }


def _audit_event(event: AccessEvent, patient: str, emergency: bool) -> dict[str, Any]:
    if emergency:
        kind = {"system": DCM, "code": "110113", "display": "Security Alert"}
        subtype = [{"system": DCM, "code": "110127", "display": "Emergency Override Started"}]
        purpose = [
            {"coding": [{"system": ACT_REASON, "code": "ETREAT"}], "text": event.detail["reason"]}
        ]
    else:
        kind = {"system": DCM, "code": "110110", "display": "Patient Record"}
        subtype = [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}]
        purpose = []
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": kind,
        "subtype": subtype,
        "action": "R" if not emergency else "E",
        "recorded": _iso(event.time_ms or 0),
        "outcome": "0",
        "agent": [{"who": _institution(event.actor), "requestor": True}],
        "source": {"observer": {"display": f"carechain block {event.height}"}},
        "entity": [{"what": {"reference": f"Patient/{patient}"}, "name": event.data_type}],
    }
    if purpose:
        resource["purposeOfEvent"] = purpose
    return resource


def fhir_bundle(events: list[AccessEvent], patient: bytes) -> dict[str, Any]:
    address = encode_address(patient)
    entries = []
    for event in events:
        if event.kind == "grant":
            entries.append(_consent(event, address))
        elif event.kind in ("read", "emergency"):
            entries.append(_audit_event(event, address, emergency=event.kind == "emergency"))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in entries],
    }
