"""The whole lists a light client reads (`carechain light get vaults|timeline|grants|...`):
for each, the node's list route and the query run over the entries it proves, the same query
the node answers with (`consensus/ledger/queries.py`), so an entry left out is caught."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from carechain.consensus.codec import to_json
from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger import queries
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.state import StateReader
from carechain.node.audit.access_report import timeline

# whole lists, each read by the same query the node answers with (consensus/ledger/queries.py)
# from entries the node proves: of a patient (an address) or of a vault (its id)
PATIENT_LISTS = ("vaults", "timeline")
VAULT_LISTS = ("holders", "grants", "emergencies", "records", "receipts")


def list_query(
    kind: str,
    entry: bytes,
    genesis: Genesis,
    first: int = 0,
    limit: int | None = None,
    reader: bytes | None = None,
) -> tuple[str, Callable[[StateReader], Any]]:
    """The list route a light client asks for `kind` of `entry` (a patient's account id or a
    vault id), and the query it runs over the proved entries: JSON, as the route answers.
    `first`, `limit`: a page of records or receipts; `reader`: only its receipts."""
    data_types = ChainContext.from_genesis(genesis).data_types
    page = f"?first={first}" + ("" if limit is None else f"&limit={limit}")
    if reader is not None:
        page += f"&reader={reader.hex()}"

    def vaults(state: StateReader) -> Any:
        found = queries.patient_vaults(state, entry, data_types)
        return [{"vault_id": i.hex(), **to_json(v)} for i, v in found.items()]

    def timeline_of(state: StateReader) -> Any:
        events = timeline(state, entry, data_types)
        names = queries.institution_names(state, (e.actor for e in events))
        return {
            "timeline": [{**dataclasses.asdict(e), "actor": e.actor.hex()} for e in events],
            "names": {key.hex(): name for key, name in names.items()},
        }

    def numbered(state: StateReader) -> Any:
        vault = queries.vault(state, entry)
        if vault is None:
            return {"count": 0, kind: []}
        if kind == "records":
            return {
                "count": vault.record_count,
                kind: [to_json(r) for r in queries.vault_records(state, vault, first, limit)],
            }
        receipts = queries.vault_receipts(state, vault, first, limit, reader)
        return {"count": vault.receipt_count, kind: [to_json(r) for r in receipts]}

    def holders(state: StateReader) -> Any:
        found = queries.vault(state, entry)
        keys = queries.key_holders(state, entry)
        return {
            "epoch": 0 if found is None else found.epoch,
            kind: [key.hex() for key in keys],
        }

    reads: dict[str, tuple[str, Callable[[StateReader], Any]]] = {
        "vaults": (f"/v1/accounts/{entry.hex()}/vaults", vaults),
        "holders": (f"/v1/vaults/{entry.hex()}/holders", holders),
        "timeline": (f"/v1/accounts/{entry.hex()}/timeline", timeline_of),
        "grants": (
            f"/v1/vaults/{entry.hex()}/grants",
            lambda state: [to_json(g) for g in queries.vault_grants(state, entry)],
        ),
        "emergencies": (
            f"/v1/vaults/{entry.hex()}/emergencies",
            lambda state: [to_json(e) for e in queries.vault_emergencies(state, entry)],
        ),
        "records": (f"/v1/vaults/{entry.hex()}/records{page}", numbered),
        "receipts": (f"/v1/vaults/{entry.hex()}/receipts{page}", numbered),
    }
    return reads[kind]
