"""The patient agent's HTTP service refuses what it must without a node: another origin than
the console's, malformed requests, and a partial that does not await the patient (the node is
unreachable here, so that one is a typed refusal too). The happy paths run in a browser
against a real network in tests/e2e/test_console.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from carechain.consensus import crypto
from carechain.node.wallet.agent_duties import agent_pass
from carechain.node.wallet.agent_service import PatientAgent
from carechain.node.wallet.client import Client
from carechain.node.wallet.context import FlowContext
from carechain.tests.ledger_world import World
from carechain.tests.world_node import WorldNode

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


def test_a_partial_the_patient_refused_is_never_signed_by_a_rule(tmp_path: Path) -> None:
    world = World()
    vault = world.create_vault()
    node = WorldNode(world)
    hospital = world.hospital["A"]
    held = [world.record_draft(vault, f"reading {i}".encode()).signed(hospital) for i in (1, 2)]
    for tx in held:
        assert node.submit(tx)["status"] == "partial"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[[rule]]\nname = "all"\ninstitutions = ["{hospital.public_key.hex()}"]\n'
        'kinds = ["record.put"]\n'
    )
    context = FlowContext(tmp_path, node, None)
    decisions = agent_pass(context, [world.p1], rules, refused=frozenset({held[0].id.hex()}))
    assert node.committed == {held[1].id}, "the refused one is left alone"
    assert [d["tx"] for d in decisions] == [held[1].id.hex()]
