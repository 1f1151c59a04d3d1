"""The whole lists of a patient or a vault, each one answer function over a `StateReader`:
the node answers its list route with it (from its state, or over `ProvedReads` for
`?proof=true`) and a light client runs the very same function over the entries the node
proved (`carechain light get vaults|timeline|grants|...`), so an entry left out is caught."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from carechain.consensus.codec import to_json
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger import queries
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.state import StateReader
from carechain.node.audit.access_report import timeline

# of a patient (an address) or of a vault (its id)
PATIENT_LISTS = ("vaults", "timeline")
VAULT_LISTS = ("holders", "grants", "emergencies", "records", "receipts")
# the key of each answer that holds the list itself
ITEMS = {
    "vaults": "vaults",
    "timeline": "events",
    "holders": "holders",
    "grants": "grants",
    "emergencies": "emergencies",
    "records": "records",
    "receipts": "receipts",
}
Answer = Callable[[StateReader], dict[str, Any]]


def list_answer(
    kind: str,
    entry: bytes,
    data_types: Iterable[str],
    first: int = 0,
    limit: int | None = None,
    reader: bytes | None = None,
) -> Answer:
    """The JSON answer of list `kind` of `entry` (a patient's account id or a vault id), as a
    function of the state it reads. `first`, `limit`: a page of records or receipts;
    `reader`: only its receipts."""

    def vaults(state: StateReader) -> dict[str, Any]:
        found = queries.patient_vaults(state, entry, data_types)  # by data type
        return {"vaults": [{"vault_id": i.hex(), **to_json(v)} for i, v in found.items()]}

    def timeline_of(state: StateReader) -> dict[str, Any]:
        events = timeline(state, entry, data_types)
        names = queries.institution_names(state, (e.actor for e in events))
        return {
            "events": [{**dataclasses.asdict(e), "actor": e.actor.hex()} for e in events],
            "names": {key.hex(): name for key, name in names.items()},  # the actors'
        }

    def numbered(state: StateReader) -> dict[str, Any]:
        vault = queries.vault(state, entry)
        if vault is None:
            return {"count": 0, kind: []}
        if kind == "records":
            records = queries.vault_records(state, vault, first, limit)
            return {"count": vault.record_count, kind: [to_json(r) for r in records]}
        receipts = queries.vault_receipts(state, vault, first, limit, reader)
        return {"count": vault.receipt_count, kind: [to_json(r) for r in receipts]}

    def holders(state: StateReader) -> dict[str, Any]:
        found = queries.vault(state, entry)
        keys = queries.key_holders(state, entry)
        return {"epoch": 0 if found is None else found.epoch, kind: [key.hex() for key in keys]}

    answers: dict[str, Answer] = {
        "vaults": vaults,
        "timeline": timeline_of,
        "holders": holders,
        "grants": lambda state: {kind: [to_json(g) for g in queries.vault_grants(state, entry)]},
        "emergencies": lambda state: {
            kind: [to_json(e) for e in queries.vault_emergencies(state, entry)]
        },
        "records": numbered,
        "receipts": numbered,
    }
    return answers[kind]


def list_query(
    kind: str,
    entry: bytes,
    genesis: Genesis,
    first: int = 0,
    limit: int | None = None,
    reader: bytes | None = None,
) -> tuple[str, Answer]:
    """What a light client asks for list `kind` of `entry`: the node's list route, and the
    answer function it runs over the entries the node proves there."""
    data_types = ChainContext.from_genesis(genesis).data_types
    owner = "accounts" if kind in PATIENT_LISTS else "vaults"
    path = f"/v1/{owner}/{entry.hex()}/{kind}"
    if kind in ("records", "receipts"):
        path += f"?first={first}" + ("" if limit is None else f"&limit={limit}")
        if reader is not None:
            path += f"&reader={reader.hex()}"
    return path, list_answer(kind, entry, data_types, first, limit, reader)
