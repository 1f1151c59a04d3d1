"""The light client against a real 4-validator network, directly and through a lying proxy.

Directly, `carechain light get` shows a patient's account verified by more than 2/3 of the
validators' power, and proves an unknown account absent. Through a proxy that rewrites the
node's answers (a changed value, a present entry claimed absent, a proof of another height, a
header whose state root was changed, an older header served for a newer height, another
validator set), every read is refused with the reason and nothing is shown as verified; the
same proxy left honest changes nothing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from carechain.cli.demo.verified import Lie, LyingProxy
from carechain.cli.main import cli
from carechain.cli.nodes import Devnet
from carechain.config.genesis import load_genesis
from carechain.consensus import crypto
from carechain.consensus.crypto import decode_address
from carechain.consensus.types import BlockHeader, ValidatorSet
from carechain.node.light.client import LightClient, NodeSource
from carechain.node.wallet.agent_service import PatientAgent
from carechain.node.wallet.client import Client
from carechain.node.wallet.context import FlowContext
from carechain.tests.leaks import LEAKED_SOCKET

pytestmark = pytest.mark.filterwarnings(LEAKED_SOCKET)
PORT = 29600


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], Path, str]]:
    folder = tmp_path_factory.mktemp("light")
    devnet = Devnet(folder / "net", 4, PORT, heartbeat_interval_ms=3000)
    clients = devnet.start()
    people = folder / "people"
    try:
        for name in ("p1", "p2", "p3", "p4"):
            code, out = run("keys", "new", "--home", str(people), "--name", name,
                            "--insecure-plaintext")  # fmt: skip
            assert code == 0, out
        code, out = run("patient", "register", "--home", str(people), "--api",
                        clients[0].base_url, "--key1", "p1", "--key2", "p2", "--json")  # fmt: skip
        assert code == 0, out
        address = json.loads(out)["address"]
        code, out = run("patient", "register", "--home", str(people), "--api",
                        clients[0].base_url, "--key1", "p3", "--key2", "p4")  # fmt: skip
        assert code == 0, out  # a second block: the head is above 1
        yield [c.base_url for c in clients], devnet.nodes[0].home / "genesis.json", address
    finally:
        devnet.stop()


def light_get(apis: list[str], genesis: Path, home: Path, *entry: str) -> tuple[int, str]:
    options = [option for api in apis for option in ("--api", api)]
    return run("light", "get", *entry, *options, "--genesis", str(genesis), "--home", str(home),
               "--json")  # fmt: skip


def test_a_patient_reads_its_account_verified(
    network: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    apis, genesis, address = network
    code, out = light_get(apis[:2], genesis, tmp_path, "account", address)
    assert code == 0, out
    answer = json.loads(out)
    assert answer["value"] is not None
    assert answer["height"] >= 1
    assert 3 * answer["signed_power"] > 2 * answer["total_power"]
    code, out = light_get(apis[:1], genesis, tmp_path, "account", "00" * 20)
    assert code == 0, out
    assert json.loads(out)["value"] is None
    code, out = run("light", "sync", "--api", apis[2], "--genesis", str(genesis),
                    "--home", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "verified at height" in out


def _on_proof(change: Callable[[dict[str, Any]], None]) -> Lie:
    def lie(path: str, answer: Any) -> tuple[str, Any]:
        if answer is not None and "proof=true" in path:
            change(answer)
        return path, answer

    return lie


def _changed_value(answer: dict[str, Any]) -> None:
    answer["value"] = answer["value"][:-2] + ("00" if answer["value"][-2:] != "00" else "01")


def _absent(answer: dict[str, Any]) -> None:
    answer["value"] = None


def _another_height(path: str, answer: Any) -> tuple[str, Any]:
    if "proof=true" in path and answer is None:
        at = path.rindex("height=") + len("height=")
        return path[:at] + str(int(path[at:]) - 1), None
    return path, answer


def _changed_root(path: str, answer: Any) -> tuple[str, Any]:
    if answer is not None and path.endswith("/light"):
        header = BlockHeader.decode(bytes.fromhex(answer["header"]))
        forged = dataclasses.replace(header, state_root=b"\x07" * 32)
        answer["header"] = forged.encode().hex()
    return path, answer


def _older_header(path: str, answer: Any) -> tuple[str, Any]:
    if answer is None and path.endswith("/light") and path != "/v1/blocks/1/light":
        height = int(path.split("/")[3])
        return f"/v1/blocks/{height - 1}/light", None
    return path, answer


def _foreign_set(path: str, answer: Any) -> tuple[str, Any]:
    """The validator set without its last member: well formed, not the one that signed."""
    if answer is not None and path.endswith("/light"):
        served = ValidatorSet.decode(bytes.fromhex(answer["validators"]))
        answer["validators"] = ValidatorSet(served.validators[:-1]).encode().hex()
    return path, answer


LIES: list[tuple[str, Lie, str]] = [
    ("a changed value", _on_proof(_changed_value), "value differs"),
    ("a present entry claimed absent", _on_proof(_absent), "entry present"),
    ("a proof of another height", _another_height, "answered for height"),
    ("a header with another state root", _changed_root, "certificate"),
    ("an older header for a newer height", _older_header, "asked for height"),
    ("another validator set", _foreign_set, "validator set"),
]


@pytest.mark.parametrize(("case", "lie", "says"), LIES, ids=[lie[0] for lie in LIES])
def test_a_lying_node_is_caught(
    network: tuple[list[str], Path, str], tmp_path: Path, case: str, lie: Lie, says: str
) -> None:
    apis, genesis, address = network
    with LyingProxy(apis[0], lie) as proxy:
        code, out = light_get([proxy.url], genesis, tmp_path, "account", address)
    assert code == 1, f"{case}: {out}"
    assert says in out, f"{case}: {out}"
    assert '"value"' not in out, "nothing unverified is shown"


def test_an_honest_proxy_changes_nothing(
    network: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    apis, genesis, address = network
    with LyingProxy(apis[0], lambda path, answer: (path, answer)) as proxy:
        code, out = light_get([proxy.url], genesis, tmp_path, "account", address)
    assert code == 0, out
    assert json.loads(out)["value"] is not None


def _left_out(path: str, answer: Any) -> tuple[str, Any]:
    """Leaves the first proved entry out of a list's answer."""
    if answer is not None and "proof=true" in path and "entries" in answer:
        del answer["entries"][0]
    return path, answer


@pytest.mark.parametrize("kind", ["vaults", "timeline"])
def test_a_list_is_proved_whole_and_one_left_short_is_refused(
    network: tuple[list[str], Path, str], tmp_path: Path, kind: str
) -> None:
    apis, genesis, address = network
    code, out = light_get(apis[:2], genesis, tmp_path, kind, address)
    assert code == 0, out
    answer = json.loads(out)
    assert answer[kind] == [], answer
    assert answer["entries_proved"] >= 8, answer
    with LyingProxy(apis[0], _left_out) as proxy:
        code, out = light_get([proxy.url], genesis, tmp_path, kind, address)
    assert code == 1, out
    assert "left out" in out, out
    assert f'"{kind}"' not in out, "nothing unverified is shown"


def test_an_auditor_samples_a_patient_without_a_replay(
    network: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    apis, genesis, address = network
    options = ["--genesis", str(genesis), "--home", str(tmp_path)]
    fhir = tmp_path / "timeline.json"
    code, out = run("audit", "sample", "--patient", address, "--api", apis[0], "--api", apis[1],
                    *options, "--fhir", str(fhir), "--json")  # fmt: skip
    assert code == 0, out
    answer = json.loads(out)
    assert answer["events"] == []
    assert answer["vaults"] == []
    assert answer["entries_proved"] >= 9  # every data type's vault and the recovery, absent
    assert json.loads(fhir.read_text())["resourceType"] == "Bundle"
    with LyingProxy(apis[0], _left_out) as proxy:
        code, out = run("audit", "sample", "--patient", address, "--api", proxy.url, *options)
    assert code == 1, out
    assert "left out" in out, out


def _agent_once(people: Path, api: str, genesis: Path, rules: Path) -> tuple[int, str]:
    return run("agent", "--home", str(people), "--api", api, "--key", "p1", "--other-key", "p2",
               "--rules", str(rules), "--genesis", str(genesis), "--once")  # fmt: skip


def test_the_patients_agent_acts_only_on_what_verifies(
    network: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    apis, genesis, _ = network
    # the patients' keys, made by the fixture beside the network's folder
    people = next(p / "people" for p in genesis.parents if (p / "people").is_dir())
    rules = tmp_path / "rules.toml"
    rules.write_text("rotate_after_revocation = true\n")
    code, out = _agent_once(people, apis[0], genesis, rules)
    assert code == 0, out
    assert "not_verified" not in out, out
    with LyingProxy(apis[0], _on_proof(_absent)) as proxy:
        code, out = _agent_once(people, proxy.url, genesis, rules)
    assert code == 0, out
    alert = json.loads(out.splitlines()[0])
    assert alert["alert"] == "not_verified", out
    assert alert["signed"] is False
    assert "entry present" in alert["reason"]


@pytest.mark.asyncio
async def test_the_console_gets_lists_from_the_agent_verified_or_refused(
    network: tuple[list[str], Path, str], tmp_path: Path
) -> None:
    apis, genesis_path, address = network
    account = decode_address(address).hex()
    keys = [crypto.PrivateKey(b"\x81" * 32)]

    def agent_of(api: str) -> PatientAgent:
        context = FlowContext(tmp_path, Client(api), None)
        context.light = LightClient(
            load_genesis(genesis_path), tmp_path / "light", NodeSource(Client(api))
        )
        return PatientAgent(context, keys, tmp_path / "rules.toml", api)

    async with TestClient(TestServer(agent_of(apis[0]).app())) as http:
        identity = await (await http.get("/agent/v1/identity")).json()
        assert identity["verifying"] is True
        answer = await http.get(f"/agent/v1/verified/timeline/{account}")
        assert answer.status == 200, await answer.text()
        proved = await answer.json()
        assert proved["value"]["events"] == []
        assert 3 * proved["signed_power"] > 2 * proved["total_power"]
        unknown = await http.get(f"/agent/v1/verified/nothing/{account}")
        assert unknown.status == 404
    with LyingProxy(apis[0], _left_out) as proxy:
        async with TestClient(TestServer(agent_of(proxy.url).app())) as http:
            answer = await http.get(f"/agent/v1/verified/vaults/{account}")
            assert answer.status == 502
            assert (await answer.json())["error"] == "answer_incomplete"
