"""The ledger's state as of the head: accounts, a patient's vaults and access timeline, vaults
with their records, grants and receipts, emergency accesses, and raw state entries for
auditors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from carechain.consensus.codec import Record, to_json
from carechain.consensus.crypto import encode_address
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.queries import MissingEntry
from carechain.consensus.ledger.records import (
    Account,
    Emergency,
    EmergencyStatus,
    Grant,
    GuardianScope,
    InstitutionState,
    Receipt,
    RecordEntry,
    Recovery,
    Vault,
)
from carechain.consensus.ledger.state import Overlay, StateReader, Table
from carechain.node.api.answers import (
    BOOL,
    HEX_TEXT,
    INT,
    STR,
    array,
    extend,
    nullable,
    obj,
    record,
)
from carechain.node.api.base import (
    ADDRESS,
    HEX_40,
    HEX_64,
    ApiError,
    Route,
    RouteFamily,
    Schema,
    parse_account,
    parse_hex,
    parse_int,
)
from carechain.node.light.lists import list_answer
from carechain.storage import schema
from carechain.storage.state import AnswerTooLarge, HeightNotKept

TABLE: Final[Schema] = {
    "type": "string",
    "enum": [t.label for t in Table],
}
STATE_KEY: Final[Schema] = {"type": "string", "pattern": "^([0-9a-f]{2}){1,128}$"}
INSTITUTION: Final[Schema] = obj(
    name=STR,
    kind=STR,
    public_key=HEX_TEXT,
    key=HEX_TEXT,
    active=BOOL,
    registered_height=INT,
    revoked_height=nullable(INT),
)
ACCESS_EVENT: Final[Schema] = obj(
    height=INT,
    time_ms=nullable(INT),
    kind={"type": "string", "enum": ["grant", "read", "emergency", "erasure", "recovery"]},
    actor=HEX_TEXT,
    data_type=STR,
    detail={"type": "object"},
)


PROOF: Final[Schema] = obj(
    levels=array(obj(bitmap=INT, siblings=array(HEX_TEXT))),
    leaf=nullable(obj(key_hash=HEX_TEXT, value_hash=HEX_TEXT)),
)
# `?proof=true`: the entry's raw value (null: absent) with its proof against the state root of
# `height`'s header, that header's canonical encoding and its commit certificate (both null at
# height 0, whose state is genesis's: a client checks that against its own genesis)
PROVED: Final[Schema] = obj(
    table=STR,
    key=HEX_TEXT,
    height=INT,
    value=nullable(HEX_TEXT),
    proof=PROOF,
    header=nullable(HEX_TEXT),
    certificate=nullable(HEX_TEXT),
)
PROOF_QUERY: Final[dict[str, Schema]] = {
    "proof": {"type": "string", "enum": ["true", "false"]},
    "height": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}


# `?proof=true` on a list route: every entry the answer is read from, each with its proof
# against the state root of `height`'s header. A client runs the same reads
# (`consensus/ledger/queries.py`) over these entries: one it needs and does not find here means
# the answer left something out.
PROVED_SET: Final[Schema] = obj(
    height=INT,
    header=nullable(HEX_TEXT),
    certificate=nullable(HEX_TEXT),
    entries=array(obj(table=STR, key=HEX_TEXT, value=nullable(HEX_TEXT), proof=PROOF)),
)
PAGE_QUERY: Final[dict[str, Schema]] = {
    "first": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    "limit": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}
PROOF_REFUSALS: Final = {
    "410": "the state of that height is no longer kept here",
    "413": "the proved answer would hold too many entries: ask for a page",
}


def proved(answer: Schema) -> Schema:
    """A route's answer, or with `?proof=true` the proved entry behind it."""
    return {"anyOf": [answer, PROVED]}


def proved_set(answer: Schema) -> Schema:
    """A list route's answer, or with `?proof=true` the proved entries it is read from."""
    return {"anyOf": [answer, PROVED_SET]}


class State(RouteFamily):
    def routes(self) -> list[Route]:
        return [
            *self._account_routes(),
            *self._vault_routes(),
            Route(
                "GET",
                "/v1/emergencies",
                self.emergencies,
                "Emergency accesses, unreviewed first",
                answer=obj(emergencies=array(record(Emergency))),
            ),
            Route(
                "GET",
                "/v1/institutions",
                self.institutions,
                "Institutions on chain (genesis and governance): name, kind, key, active",
                answer=obj(institutions=array(INSTITUTION)),
            ),
            Route(
                "GET",
                "/v1/state/{table}",
                self.state_list,
                "Raw state entries of one table (auditors)",
                parameters={"table": TABLE},
                answer=obj(entries=array(array(HEX_TEXT))),
            ),
            Route(
                "GET",
                "/v1/state/{table}/{key}",
                self.state_get,
                "One raw state entry; `?proof=true` proves it, or its absence, at the head "
                "(or at `height`, one of the heights this node keeps)",
                parameters={"table": TABLE, "key": STATE_KEY},
                query=PROOF_QUERY,
                answer=proved(obj(value=HEX_TEXT)),
                refusals={"410": "the state of that height is no longer kept here"},
            ),
        ]

    def _account_routes(self) -> list[Route]:
        address = {"address": ADDRESS}
        return [
            Route(
                "GET",
                "/v1/accounts/{address}",
                self.account,
                "An account by address (cc1...) or hex id",
                parameters=address,
                query=PROOF_QUERY,
                answer=proved(extend(record(Account), id=HEX_TEXT)),
                refusals={"410": "the state of that height is no longer kept here"},
            ),
            Route(
                "GET",
                "/v1/accounts/{address}/vaults",
                self.account_vaults,
                "A patient's vaults, by data type; `?proof=true` proves the list whole",
                parameters=address,
                query=PROOF_QUERY,
                answer=proved_set(obj(vaults=array(record(Vault)))),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/accounts/{address}/timeline",
                self.account_timeline,
                "A patient's access timeline: grants, reads, emergencies, erasures, a pending "
                "key recovery; `?proof=true` proves it whole",
                parameters=address,
                query=PROOF_QUERY,
                answer=proved_set(
                    obj(
                        events=array(ACCESS_EVENT),
                        names={"type": "object", "additionalProperties": STR},
                    )
                ),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/accounts/{address}/recovery",
                self.account_recovery,
                "A patient's pending key-loss recovery (null when none): the lost key, its "
                "replacement, and the block time from which it may finish",
                parameters=address,
                query=PROOF_QUERY,
                answer=proved(obj(recovery=nullable(record(Recovery)))),
                refusals={"410": "the state of that height is no longer kept here"},
            ),
            Route(
                "GET",
                "/v1/guardians/{key}",
                self.wards,
                "Whom a guardian's key acts for: each patient's address and the scope "
                "(a patient's own guardians are in its account, `guardians` and `minor`)",
                parameters={"key": HEX_64},
                answer=obj(wards=array(obj(patient=STR, account=HEX_TEXT, scope=STR))),
            ),
        ]

    def _vault_routes(self) -> list[Route]:
        vault = {"id": HEX_40}
        return [
            Route(
                "GET",
                "/v1/vaults/{id}",
                self.vault,
                "A vault",
                parameters=vault,
                query=PROOF_QUERY,
                answer=proved(record(Vault)),
                refusals={"410": "the state of that height is no longer kept here"},
            ),
            Route(
                "GET",
                "/v1/vaults/{id}/records",
                self.vault_records,
                "Records of a vault (no plaintext) in the order added, from number `first` "
                "(default 0), `limit` of them (default all); `count`: how many the vault has",
                parameters=vault,
                query={**PROOF_QUERY, **PAGE_QUERY},
                answer=proved_set(obj(count=INT, records=array(record(RecordEntry)))),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/vaults/{id}/grants",
                self.vault_grants,
                "Every grant made on a vault, revoked ones too, in the order made",
                parameters=vault,
                query=PROOF_QUERY,
                answer=proved_set(obj(grants=array(record(Grant)))),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/vaults/{id}/receipts",
                self.vault_receipts,
                "Read receipts of a vault in order, from number `first` (default 0), `limit` "
                "of them (default all), only `reader`'s when given; `count`: how many the "
                "vault has",
                parameters=vault,
                query={**PROOF_QUERY, **PAGE_QUERY, "reader": HEX_64},
                answer=proved_set(obj(count=INT, receipts=array(record(Receipt)))),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/vaults/{id}/holders",
                self.vault_holders,
                "Who holds the vault's current epoch key (and so reads what is written now): "
                "its members, each with its sealed copy on chain",
                parameters=vault,
                query=PROOF_QUERY,
                answer=proved_set(obj(epoch=INT, holders=array(HEX_TEXT))),
                refusals=PROOF_REFUSALS,
            ),
            Route(
                "GET",
                "/v1/vaults/{id}/emergencies",
                self.vault_emergencies,
                "Every emergency access opened on a vault, in the order opened",
                parameters=vault,
                query=PROOF_QUERY,
                answer=proved_set(obj(emergencies=array(record(Emergency)))),
                refusals=PROOF_REFUSALS,
            ),
        ]

    def _table(self, name: str) -> Table:
        table = Table.of_label(name)
        if table is None:
            raise ApiError(404, "not_found", f"no state table {name!r}")
        return table

    def _proof_asked(self, request: web.Request) -> bool:
        text = request.query.get("proof", "false")
        if text not in ("true", "false"):
            raise ApiError(400, "bad_field", "proof must be true or false")
        if text == "false" and "height" in request.query:
            raise ApiError(
                400, "bad_field", "height is taken with proof=true only (answers are at the head)"
            )
        return text == "true"

    def _height(self, request: web.Request) -> int:
        store = self.node.store
        text = request.query.get("height")
        height = store.height if text is None else parse_int(text, "height")
        if height > store.height:
            raise ApiError(404, "not_found", f"no state at height {height} (head {store.height})")
        return height

    def _certified(self, height: int) -> dict[str, Any]:
        """The header of `height` and its commit certificate (none at genesis's height 0)."""
        if height == 0:
            return {"header": None, "certificate": None}
        store = self.node.store
        return {
            "header": store.header(height).encode().hex(),
            "certificate": store.certificate_bytes(height).hex(),
        }

    def _proved(self, request: web.Request, table: Table, key: bytes) -> web.Response:
        """The proved-entry answer (`PROVED`) for `(table, key)`."""
        try:
            proof, value, height = self.node.store.state.prove(table, key, self._height(request))
        except HeightNotKept as exc:
            raise ApiError(410, exc.code, str(exc)) from None
        return web.json_response(
            {
                "table": table.label,
                "key": key.hex(),
                "height": height,
                "value": None if value is None else value.hex(),
                "proof": proof.to_json(),
                **self._certified(height),
            }
        )

    def _listed(
        self, request: web.Request, answer: Callable[[StateReader], dict[str, Any]]
    ) -> web.Response:
        """A list route's answer, read by `answer` from the head's state; with `?proof=true`,
        the proved entries (`PROVED_SET`) `answer` read at the asked height instead."""
        try:
            if not self._proof_asked(request):
                return web.json_response(answer(self.node.store))
            height = self._height(request)
            reads = self.node.store.state.prover_at(height)
            answer(reads)
            return web.json_response(
                {"height": height, **self._certified(height), "entries": reads.entries_json()}
            )
        except HeightNotKept as exc:
            raise ApiError(410, exc.code, str(exc)) from None
        except AnswerTooLarge as exc:
            raise ApiError(413, exc.code, f"{exc}; {exc.hint}") from None
        except MissingEntry as exc:
            raise ApiError(
                500, "state_corrupt", f"this node's state is inconsistent: {exc}"
            ) from None

    @functools.cached_property
    def data_types(self) -> Mapping[str, object]:
        return ChainContext.from_genesis(self.node.genesis).data_types

    def _page(self, request: web.Request) -> tuple[int, int | None]:
        first = parse_int(request.query.get("first", "0"), "first")
        limit = request.query.get("limit")
        return first, None if limit is None else parse_int(limit, "limit")

    async def state_get(self, request: web.Request) -> web.Response:
        table = self._table(request.match_info["table"])
        key = parse_hex(request.match_info["key"], "key")
        if self._proof_asked(request):
            return self._proved(request, table, key)
        value = self.node.store.get(table, key)
        if value is None:
            raise ApiError(404, "not_found", "no such entry")
        return web.json_response({"value": value.hex()})

    async def state_list(self, request: web.Request) -> web.Response:
        """Entries in key order, `limit` at most (10,000); `after` (a key of the table): only
        those after it, for the next page."""
        table = self._table(request.match_info["table"])
        prefix = parse_hex(request.query.get("prefix", ""), "prefix")
        after = parse_hex(request.query["after"], "after") if "after" in request.query else None
        limit = min(parse_int(request.query.get("limit", "1000"), "limit"), 10_000)
        entries = []
        for raw_key, value in self.node.store.kv.iterate(schema.state_key(table, prefix)):
            key = schema.parse_state_key(raw_key)[1]
            if after is not None and key <= after:
                continue
            entries.append([key.hex(), value.hex()])
            if len(entries) >= limit:
                break
        return web.json_response({"entries": entries})

    async def account_vaults(self, request: web.Request) -> web.Response:
        patient = parse_account(request.match_info["address"])
        return self._listed(request, list_answer("vaults", patient, self.data_types))

    async def account_timeline(self, request: web.Request) -> web.Response:
        patient = parse_account(request.match_info["address"])
        return self._listed(request, list_answer("timeline", patient, self.data_types))

    async def account_recovery(self, request: web.Request) -> web.Response:
        patient = parse_account(request.match_info["address"])
        if self._proof_asked(request):
            return self._proved(request, Table.RECOVERY, patient)
        found = Overlay(self.node.store).load(Table.RECOVERY, patient, Recovery)
        return web.json_response({"recovery": None if found is None else to_json(found)})

    async def wards(self, request: web.Request) -> web.Response:
        key = parse_hex(request.match_info["key"], "key")
        wards = [
            {
                "patient": encode_address(entry[32:]),
                "account": entry[32:].hex(),
                "scope": GuardianScope(value[0]).name.lower(),
            }
            for entry, value in self.node.store.table_entries(Table.GUARDIAN_OF, key)
        ]
        return web.json_response({"wards": wards})

    async def account(self, request: web.Request) -> web.Response:
        account_id = parse_account(request.match_info["address"])
        if self._proof_asked(request):
            return self._proved(request, Table.ACCOUNT, account_id)
        account = Overlay(self.node.store).load(Table.ACCOUNT, account_id, Account)
        if account is None:
            raise ApiError(404, "not_found", "no such account")
        return web.json_response({"id": account_id.hex(), **to_json(account)})

    async def vault(self, request: web.Request) -> web.Response:
        vault_id = parse_hex(request.match_info["id"], "id")
        if self._proof_asked(request):
            return self._proved(request, Table.VAULT, vault_id)
        vault = Overlay(self.node.store).load(Table.VAULT, vault_id, Vault)
        if vault is None:
            raise ApiError(404, "not_found", "no such vault")
        return web.json_response(to_json(vault))

    def _decoded(self, table: Table, prefix: bytes, kind: type[Record]) -> list[Any]:
        return [
            kind.decode(value)
            for _, value in self.node.store.kv.iterate(schema.state_key(table, prefix))
        ]

    def _vault_list(self, request: web.Request, kind: str, **page: Any) -> web.Response:
        vault_id = parse_hex(request.match_info["id"], "id")
        return self._listed(request, list_answer(kind, vault_id, self.data_types, **page))

    async def vault_records(self, request: web.Request) -> web.Response:
        first, limit = self._page(request)
        return self._vault_list(request, "records", first=first, limit=limit)

    async def vault_grants(self, request: web.Request) -> web.Response:
        return self._vault_list(request, "grants")

    async def vault_receipts(self, request: web.Request) -> web.Response:
        first, limit = self._page(request)
        reader = request.query.get("reader")
        reader_key = None if reader is None else parse_hex(reader, "reader")
        if reader_key is not None and len(reader_key) != 32:
            raise ApiError(400, "bad_field", "reader must be a public key: 64 hex characters")
        return self._vault_list(request, "receipts", first=first, limit=limit, reader=reader_key)

    async def vault_holders(self, request: web.Request) -> web.Response:
        return self._vault_list(request, "holders")

    async def vault_emergencies(self, request: web.Request) -> web.Response:
        return self._vault_list(request, "emergencies")

    async def institutions(self, request: web.Request) -> web.Response:
        found = self._decoded(Table.INSTITUTION, b"", InstitutionState)
        found.sort(key=lambda i: (not i.active, i.institution.name))
        return web.json_response(
            {
                "institutions": [
                    {
                        "name": i.institution.name,
                        "kind": i.kind.name.lower(),
                        "public_key": i.institution.public_key.hex(),
                        "key": i.current_key.hex(),  # the key it signs with now
                        "active": i.active,
                        "registered_height": i.registered_height,
                        "revoked_height": i.revoked_height,
                    }
                    for i in found
                ]
            }
        )

    async def emergencies(self, request: web.Request) -> web.Response:
        found = self._decoded(Table.EMERGENCY, b"", Emergency)
        found.sort(key=lambda e: (e.status is not EmergencyStatus.UNREVIEWED, e.opened_height))
        return web.json_response({"emergencies": [to_json(e) for e in found]})
