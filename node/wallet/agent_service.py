"""The patient's local agent as a small HTTP service for the web console.

The console is served by a node and reads the chain from the node's API; everything that needs
the patient's keys goes to this agent, which runs on the patient's side (`carechain agent
--serve 127.0.0.1:26690 ...`) and holds the keys in memory: granting (the vault's epoch key
is unsealed and resealed to the grantee here), revoking with the epoch rotation, approving or
refusing a partial transaction, editing the automatic co-signing rules, and downloading a
record decrypted. No private key, epoch key or plaintext ever reaches a node. Every answer is
JSON except a record's plaintext; every refusal is `{"error", "message"}` with a 4xx status.

Only the console's origin may call it (CORS), and it binds to loopback unless told otherwise.
While it runs, the co-signing rules are applied to new partials every `interval` seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pydantic
import tomli_w
from aiohttp import web

from carechain.config.loading import write_atomic
from carechain.consensus import crypto
from carechain.consensus.errors import CarechainError
from carechain.consensus.light.verifier import VerificationError
from carechain.consensus.types import Tx
from carechain.node.light.lists import PATIENT_LISTS, VAULT_LISTS, list_query
from carechain.node.wallet.agent_duties import decision_id, verified_pass
from carechain.node.wallet.agent_rules import Rule, RuleFile, load_rule_file, load_rules
from carechain.node.wallet.client import ApiRequestError, NodeUnreachable
from carechain.node.wallet.context import FlowContext, hex_bytes
from carechain.node.wallet.patient_actions import (
    cosignature,
    grant_access,
    read_record,
    revoke_grant,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GrantBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    vault: str = pydantic.Field(pattern=r"^[0-9a-f]{40}$")
    grantee: str = pydantic.Field(pattern=r"^[0-9a-f]{64}$")
    days: int = pydantic.Field(ge=1, le=3650)
    purpose: str = pydantic.Field(pattern=r"^[A-Z]{2,16}$")
    write: bool = False


class RevokeBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    vault: str = pydantic.Field(pattern=r"^[0-9a-f]{40}$")


class RulesBody(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    rules: list[Rule]


class AgentError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class PatientAgent:
    def __init__(
        self,
        context: FlowContext,
        keys: list[crypto.PrivateKey],
        rules_path: Path,
        console_origin: str,
    ) -> None:
        self.context = context
        self.keys = keys  # the patient's keys: the first co-signs partials
        self.rules_path = rules_path
        self.console_origin = console_origin.rstrip("/")
        self.refused: set[str] = set()
        self.decisions: list[dict[str, object]] = []
        self._reported: set[str] = set()  # what the automatic passes reported already

    @property
    def patient_keys(self) -> frozenset[bytes]:
        return frozenset(k.public_key for k in self.keys)

    def app(self) -> web.Application:
        application = web.Application(middlewares=[self._cors_and_errors])
        routes = [
            ("GET", "/agent/v1/identity", self.identity),
            ("POST", "/agent/v1/grants", self.grant),
            ("POST", "/agent/v1/grants/{id}/revoke", self.revoke),
            ("POST", "/agent/v1/partials/{id}/approve", self.approve),
            ("POST", "/agent/v1/partials/{id}/refuse", self.refuse),
            ("GET", "/agent/v1/partials/refused", self.list_refused),
            ("GET", "/agent/v1/rules", self.get_rules),
            ("PUT", "/agent/v1/rules", self.put_rules),
            ("GET", "/agent/v1/decisions", self.list_decisions),
            ("GET", "/agent/v1/records/{vault}/{record}", self.record),
            ("GET", "/agent/v1/verified/{kind}/{id}", self.verified),
        ]
        for method, path, handler in routes:
            application.router.add_route(method, path, handler)
        for path in dict.fromkeys(path for _, path, _ in routes):
            application.router.add_route("OPTIONS", path, self._preflight)
        return application

    @web.middleware
    async def _cors_and_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") != self.console_origin:
            return web.json_response(
                {"error": "forbidden_origin", "message": f"{origin} may not call this agent"},
                status=403,
            )
        try:
            response = await handler(request)
        except AgentError as exc:
            response = web.json_response(
                {"error": exc.code, "message": exc.message}, status=exc.status
            )
        except (ApiRequestError, NodeUnreachable, CarechainError) as exc:
            code = getattr(exc, "code", "refused")
            response = web.json_response({"error": code, "message": str(exc)}, status=400)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = self.console_origin
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            headers={
                "Access-Control-Allow-Methods": "GET, POST, PUT",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )

    async def _body(self, request: web.Request, model: type[pydantic.BaseModel]) -> Any:
        try:
            return model.model_validate(json.loads(await request.read()))
        except (ValueError, pydantic.ValidationError) as exc:
            raise AgentError(400, "bad_request", str(exc).splitlines()[0]) from None

    async def _run(self, work: Callable[[], Any]) -> Any:
        """The flows block on the node's API: run them off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, work)

    # -- routes ---------------------------------------------------------------------------------
    async def identity(self, request: web.Request) -> web.Response:
        try:  # the chain's index follows a replaced key 1
            account = await self._run(lambda: self.context.account_of(self.keys[0]))
        except (ApiRequestError, NodeUnreachable):  # who the patient is needs no node: the
            account = crypto.account_id(self.keys[0].public_key)  # address of key 1 then
        return web.json_response(
            {
                "account": account.hex(),
                "address": crypto.encode_address(account),
                "keys": [k.public_key.hex() for k in self.keys],
                "verifying": self.context.light is not None,  # reads proved (--genesis)
            }
        )

    async def verified(self, request: web.Request) -> web.Response:
        """A whole list (`node/light/lists.py`: a patient's vaults or timeline, a vault's
        grants, emergencies, records or receipts) read by the agent's light client: every entry
        proved against a header trusted from the patient's own genesis, the list proved whole.
        502 with the reason when the node's answer does not verify."""
        light = self.context.light
        if light is None:
            raise AgentError(
                409, "not_verifying", "this agent reads without proofs: start it with --genesis"
            )
        kind = request.match_info["kind"]
        if kind not in PATIENT_LISTS and kind not in VAULT_LISTS:
            raise AgentError(
                404, "not_found", f"no list {kind!r}; one of {[*PATIENT_LISTS, *VAULT_LISTS]}"
            )
        entry = hex_bytes(request.match_info["id"], 20, "the account or vault id")
        path, read = list_query(kind, entry, light.genesis)
        try:
            found = await self._run(lambda: light.query(path, read))
        except VerificationError as exc:
            raise AgentError(502, exc.code, str(exc)) from None
        trusted = found.trusted
        return web.json_response(
            {
                "value": found.value,
                "height": trusted.height,
                "signed_power": trusted.signed_power,
                "total_power": trusted.total_power,
                "entries": found.entries,
            }
        )

    async def grant(self, request: web.Request) -> web.Response:
        body = await self._body(request, GrantBody)

        def work() -> dict[str, object]:
            tx = grant_access(
                self.context,
                self.keys,
                bytes.fromhex(body.vault),
                bytes.fromhex(body.grantee),
                days=body.days,
                purpose=body.purpose,
                write=body.write,
            )
            return {"grant": tx.id.hex(), **self.context.send(tx)}

        return web.json_response(await self._run(work))

    async def revoke(self, request: web.Request) -> web.Response:
        body = await self._body(request, RevokeBody)
        grant_id = hex_bytes(request.match_info["id"], 32, "the grant id")

        def work() -> dict[str, object]:
            vault_id = bytes.fromhex(body.vault)

            def build() -> Tx:
                return revoke_grant(self.context, self.keys, vault_id, grant_id)

            return dict(self.context.send_sealed(build))

        return web.json_response(await self._run(work))

    async def approve(self, request: web.Request) -> web.Response:
        tx_id = request.match_info["id"]

        def work() -> dict[str, object]:
            tx = self._awaiting(tx_id)
            answer = self.context.client.cosign(tx.id, cosignature(self.keys[0], tx))
            self.decisions.append({"tx": tx_id, "kind": tx.kind, "signed": True,
                                   "reason": "approved in the console"})  # fmt: skip
            return dict(answer)

        return web.json_response(await self._run(work))

    async def refuse(self, request: web.Request) -> web.Response:
        tx_id = request.match_info["id"]
        tx = await self._run(lambda: self._awaiting(tx_id))
        self.refused.add(tx_id)
        self.decisions.append({"tx": tx_id, "kind": tx.kind, "signed": False,
                               "reason": "refused in the console"})  # fmt: skip
        return web.json_response({"id": tx_id, "status": "refused"})

    def _awaiting(self, tx_id: str) -> Tx:
        for partial in self.context.client.partials(awaiting=self.keys[0].public_key):
            if partial["id"] == tx_id:
                return Tx.decode(bytes.fromhex(partial["tx"]))
        raise AgentError(404, "not_found", f"no partial {tx_id} awaits this patient")

    async def list_refused(self, request: web.Request) -> web.Response:
        return web.json_response({"refused": sorted(self.refused)})

    async def list_decisions(self, request: web.Request) -> web.Response:
        return web.json_response({"decisions": self.decisions[-200:]})

    async def get_rules(self, request: web.Request) -> web.Response:
        rules = load_rules(self.rules_path) if self.rules_path.exists() else []
        return web.json_response({"rules": [r.model_dump() for r in rules]})

    async def put_rules(self, request: web.Request) -> web.Response:
        """Replace the co-signing rules; the file's other settings stay as they are."""
        body = await self._body(request, RulesBody)
        settings = load_rule_file(self.rules_path) if self.rules_path.exists() else None
        updated = settings.model_copy(update={"rule": body.rules}) if settings else None
        document = (updated or RuleFile(rule=body.rules)).model_dump(exclude_none=True)
        write_atomic(self.rules_path, tomli_w.dumps(document))
        return web.json_response({"rules": [r.model_dump() for r in load_rules(self.rules_path)]})

    async def record(self, request: web.Request) -> web.Response:
        vault_id = hex_bytes(request.match_info["vault"], 20, "the vault id")
        record_id = hex_bytes(request.match_info["record"], 16, "the record id")
        plaintext = await self._run(
            lambda: read_record(self.context, self.keys[0], vault_id, record_id)
        )
        return web.Response(
            body=plaintext,
            content_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{record_id.hex()}.bin"'},
        )

    # -- the automatic passes -------------------------------------------------------------------
    async def cosign_loop(self, interval_s: float) -> None:
        """Every `interval_s`: the agent's duties (`agent_duties.agent_pass`). What it signed
        and what it alerts of go to the decisions list once; a partial it left alone is not
        logged again at every pass."""
        while True:
            if self.rules_path.exists():
                with contextlib.suppress(ApiRequestError, NodeUnreachable, CarechainError, OSError):
                    passed = await self._run(
                        lambda: verified_pass(
                            self.context, self.keys, self.rules_path, frozenset(self.refused)
                        )
                    )
                    for decision in passed:
                        key = decision_id(decision)
                        worth = decision["signed"] or "alert" in decision
                        if worth and key not in self._reported:
                            self._reported.add(key)
                            self.decisions.append(decision)
            await asyncio.sleep(interval_s)


async def serve_agent(agent: PatientAgent, host: str, port: int, interval_s: float) -> None:
    runner = web.AppRunner(agent.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await agent.cosign_loop(interval_s)
    finally:
        await runner.cleanup()
