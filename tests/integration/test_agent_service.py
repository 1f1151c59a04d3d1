"""The patient agent's HTTP service refuses what it must without a node: another origin than
the console's, malformed requests, and a partial that does not await the patient (the node is
unreachable here, so that one is a typed refusal too). The happy paths run in a browser
against a real network in tests/e2e/test_console.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from carechain.consensus import crypto
from carechain.consensus.types import Tx, TxSignature
from carechain.node.wallet import builders
from carechain.node.wallet.agent_service import PatientAgent
from carechain.node.wallet.client import Client
from carechain.node.wallet.context import FlowContext
from carechain.node.wallet.patient_actions import agent_pass

CONSOLE = "http://127.0.0.1:26601"


def _agent(tmp_path: Path) -> PatientAgent:
    context = FlowContext(tmp_path, Client("http://127.0.0.1:9", timeout_s=1), None)
    keys = [crypto.PrivateKey(b"\x81" * 32), crypto.PrivateKey(b"\x82" * 32)]
    return PatientAgent(context, keys, tmp_path / "rules.toml", CONSOLE + "/")


@pytest.mark.asyncio
async def test_the_agent_answers_only_the_console_and_refuses_bad_requests(
    tmp_path: Path,
) -> None:
    agent = _agent(tmp_path)
    async with TestClient(TestServer(agent.app())) as http:
        ok = await http.get("/agent/v1/identity", headers={"Origin": CONSOLE})
        assert ok.status == 200
        assert ok.headers["Access-Control-Allow-Origin"] == CONSOLE
        assert (await ok.json())["address"].startswith("cc1")
        other = await http.get("/agent/v1/identity", headers={"Origin": "http://evil.example"})
        assert (other.status, (await other.json())["error"]) == (403, "forbidden_origin")
        preflight = await http.options("/agent/v1/rules", headers={"Origin": CONSOLE})
        assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
        bad = await http.post("/agent/v1/grants", json={"vault": "zz"})
        assert (bad.status, (await bad.json())["error"]) == (400, "bad_request")
        record = await http.get(f"/agent/v1/records/{'00' * 20}/short")
        assert (record.status, (await record.json())["error"]) == (400, "invalid_input")
        rules = await http.put("/agent/v1/rules", json={"rules": [{"name": "x"}]})
        assert rules.status == 400, "a rule missing its fields is refused"
        good_rule = {
            "name": "hospital files glucose",
            "institutions": ["ab" * 32],
            "kinds": ["record.put"],
            "data_types": ["glucose"],
            "decision": "sign",
        }
        saved = await http.put("/agent/v1/rules", json={"rules": [good_rule]})
        assert saved.status == 200
        assert (await (await http.get("/agent/v1/rules")).json())["rules"][0]["name"] == (
            "hospital files glucose"
        )
        unreachable = await http.post(f"/agent/v1/partials/{'00' * 32}/approve")
        assert unreachable.status == 400
        assert (await unreachable.json())["error"]


class _PartialsOnly(Client):
    """A node that holds two partials from hospital A awaiting the patient."""

    def __init__(self, partials: list[Tx]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.held = partials
        self.cosigned: list[bytes] = []

    def partials(self, awaiting: bytes | None = None) -> list[dict[str, Any]]:
        return [{"id": tx.id.hex(), "tx": tx.encode().hex()} for tx in self.held]

    def cosign(self, tx_id: bytes, signature: TxSignature) -> dict[str, Any]:
        self.cosigned.append(tx_id)
        return {"id": tx_id.hex(), "status": "pending"}


def test_a_partial_the_patient_refused_is_never_signed_by_a_rule(tmp_path: Path) -> None:
    hospital = crypto.PrivateKey(b"\x83" * 32)
    patient = crypto.PrivateKey(b"\x81" * 32)
    drafts = [
        builders.register_patient("carechain-test", (patient.public_key, bytes([i]) * 32), 10**13)
        for i in (1, 2)
    ]
    held = [draft.signed(hospital) for draft in drafts]
    node = _PartialsOnly(held)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[[rule]]\nname = "all"\ninstitutions = ["{hospital.public_key.hex()}"]\n'
        'kinds = ["account.register"]\n'
    )
    context = FlowContext(tmp_path, node, None)
    keys = frozenset({patient.public_key})
    decisions = agent_pass(context, patient, rules, keys, refused=frozenset({held[0].id.hex()}))
    assert node.cosigned == [held[1].id]
    assert [d["tx"] for d in decisions] == [held[1].id.hex()]
