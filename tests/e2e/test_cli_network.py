"""End to end: four real node processes over libp2p on loopback, driven through the `carechain`
command as an operator, a patient and two hospitals would."""

from __future__ import annotations

import gc
import json
import random
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest
from click.testing import CliRunner, Result

from carechain.cli.main import cli
from carechain.cli.nodes import Devnet, spawn, wait_for_api
from carechain.cli.output import EXIT_FAILED, EXIT_INVALID_INPUT
from carechain.config.genesis import load_genesis
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.node.wallet.client import ApiRequestError, Client, api_address
from carechain.node.wallet.keystore import read_key_info
from carechain.storage.blobs.car import read_car
from carechain.storage.chain import ChainStore
from carechain.tests.leaks import LEAKED_SOCKET

PORT = 27300
CAR = "application/vnd.ipld.car"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, f"{' '.join(args)}\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Devnet, str]]:
    folder = tmp_path_factory.mktemp("e2e")
    people = folder / "people"
    for name in ("p1", "p2", "hospital-a", "hospital-b", "trusted", "auditor"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    keys = {p.stem: read_key_info(p).public_key for p in (people / "keys").glob("*.json")}
    institutions = (
        Institution("hospital-a", InstitutionKind.HOSPITAL, keys["hospital-a"]),
        Institution("hospital-b", InstitutionKind.HOSPITAL, keys["hospital-b"]),
        Institution("trusted", InstitutionKind.TRUSTED_PARTY, keys["trusted"]),
    )
    devnet = Devnet(folder / "net", 4, PORT, institutions=institutions, heartbeat_interval_ms=3000)
    auditor = json.loads(ok("keys", "show", "--home", str(people), "auditor", "--json"))
    first = devnet.nodes[0].home
    config = load_node_config(first)
    p2p = config.p2p.model_copy(update={"observers": [auditor["peer_id"]]})
    save_node_config(first, config.model_copy(update={"p2p": p2p}))  # hospital 1 admits it
    clients = devnet.start()
    try:
        yield people, devnet, clients[0].base_url
    finally:
        devnet.stop()


def test_operator_status_and_a_patient_flow_through_the_cli(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    people, devnet, api = network
    status = json.loads(ok("status", "--home", str(devnet.nodes[0].home), "--json"))
    assert status["chain_id"] == "carechain-devnet"
    assert len(status["validators"]) == 4
    deadline = time.monotonic() + 30
    while True:  # the validators link to each other in the first seconds
        validators = json.loads(ok("validators", "--api", api, "--json"))
        if all(v["linked"] for v in validators) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(validators) == 4
    assert all(v["linked"] for v in validators), validators
    peers = json.loads(ok("peers", "--api", api, "--json"))
    assert sum(1 for p in peers if p["validator"]) == 3  # the other three validators
    assert json.loads(ok("status", "--api", api, "--json"))["chain_id"] == "carechain-devnet"
    nowhere = run("status", "--home", str(tmp_path / "nonexistent"))
    assert nowhere.exit_code == EXIT_INVALID_INPUT
    assert "not a carechain home" in nowhere.output
    home = ["--home", str(people), "--api", api]
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}

    ok("patient", "register", *home, "--key1", "p1", "--key2", "p2")
    created = json.loads(
        ok(
            "vault",
            "create",
            *home,
            "--key1",
            "p1",
            "--key2",
            "p2",
            "--type",
            "glucose",
            "--team",
            key["hospital-a"],
            "--json",
        )
    )
    vault = created["vault"]
    reading = tmp_path / "reading.txt"
    reading.write_text("glucose 5.6 mmol/L fasting")
    put = json.loads(
        ok(
            "record",
            "put",
            *home,
            "--vault",
            vault,
            "--file",
            str(reading),
            "--key",
            "p1",
            "--key",
            "p2",
            "--json",
        )
    )
    assert put["status"] == "committed"

    # Hospital A files a record alone: it waits until the patient's agent co-signs by rule.
    report = tmp_path / "report.txt"
    report.write_text("clinic note: HbA1c trending down" * 100)  # large enough to be a blob
    partial = json.loads(
        ok(
            "record",
            "put",
            *home,
            "--vault",
            vault,
            "--file",
            str(report),
            "--key",
            "hospital-a",
            "--json",
        )
    )
    assert partial["status"] == "partial"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[[rule]]\nname = "hospital A files glucose"\ninstitutions = ["{key["hospital-a"]}"]\n'
        'kinds = ["record.put"]\ndata_types = ["glucose"]\n'
    )
    decisions = ok(
        "agent", *home, "--rules", str(rules), "--key", "p1", "--other-key", "p2", "--once"
    )
    assert '"signed": true' in decisions
    shown = json.loads(ok("tx", "show", *home, partial["id"], "--json"))
    for _ in range(100):
        if shown["status"] == "committed":
            break
        shown = json.loads(ok("tx", "show", *home, partial["id"], "--json"))
    assert shown["status"] == "committed"

    # Hospital B is granted access, reads (with a receipt), is revoked, and cannot read again.
    granted = ok(
        "grant",
        "add",
        *home,
        "--vault",
        vault,
        "--grantee",
        key["hospital-b"],
        "--days",
        "30",
        "--key",
        "p1",
        "--key",
        "p2",
    )
    grant_id = re.search(r"grant id ([0-9a-f]{64})", granted).group(1)  # type: ignore[union-attr]
    out = tmp_path / "read.txt"
    got = ok(
        "record",
        "get",
        *home,
        "--vault",
        vault,
        "--record",
        put["record"],
        "--key",
        "hospital-b",
        "--grant",
        grant_id,
        "--out",
        str(out),
    )
    assert out.read_text() == "glucose 5.6 mmol/L fasting"
    assert "read receipt: committed" in got
    blob_out = tmp_path / "report-read.txt"
    ok(
        "record",
        "get",
        *home,
        "--vault",
        vault,
        "--record",
        partial["record"],
        "--key",
        "hospital-b",
        "--grant",
        grant_id,
        "--out",
        str(blob_out),
    )
    assert blob_out.read_text() == report.read_text()
    # IPFS tools read the same blob through the gateway route with a request the CLI signs
    asked = json.loads(
        ok("blob", "request", *home, "--vault", vault, "--record", partial["record"],
           "--key", "hospital-b", "--grant", grant_id, "--json")
    )  # fmt: skip
    assert asked["content_id"] == partial["content_id"]
    assert asked["receipt_committed"]
    car = Client(api).gateway(asked["content_id"], bytes.fromhex(asked["request"]), CAR)
    root, blocks = read_car(car)
    assert root.text == partial["content_id"]
    assert len(blocks) == 1
    assert sum(len(b) for b in blocks.values()) == asked["bytes"]
    inline = run("blob", "request", *home, "--vault", vault, "--record", put["record"],
                 "--key", "hospital-b", "--grant", grant_id)  # fmt: skip
    assert inline.exit_code == EXIT_INVALID_INPUT
    assert "stored inline" in inline.output
    assert out.stat().st_mode & 0o777 == 0o600  # plaintext is the reader's alone
    # without --grant the receipt is refused, so nothing is decrypted and nothing written
    for record_id in (put["record"], partial["record"]):
        refused_out = tmp_path / f"refused-{record_id}.txt"
        refused = run(
            "record", "get", *home, "--vault", vault, "--record", record_id,
            "--key", "hospital-b", "--out", str(refused_out),
        )  # fmt: skip
        assert refused.exit_code == EXIT_INVALID_INPUT, refused.output
        assert "not_authorised" in refused.output
        assert not refused_out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    listed = json.loads(ok("grant", "list", *home, "--vault", vault, "--json"))
    assert [g["grantee"] for g in listed] == [key["hospital-b"]]
    table = ok("grant", "list", *home, "--vault", vault)
    assert "hospital-b" in table, "the human table names the grantee"
    shown = grant_id[:16]
    assert shown in table
    unknown = run("grant", "revoke", *home, "--vault", vault, "--grant", "00" * 8,
                  "--key", "p1", "--key", "p2")  # fmt: skip
    assert unknown.exit_code == EXIT_INVALID_INPUT, unknown.output
    assert "no such id" in unknown.output
    ok(
        "grant",
        "revoke",
        *home,
        "--vault",
        vault,
        "--grant",
        shown,  # the id as the table shows it
        "--key",
        "p1",
        "--key",
        "p2",
    )
    later = tmp_path / "later.txt"
    later.write_text("glucose 6.0 mmol/L")
    newer = json.loads(
        ok(
            "record",
            "put",
            *home,
            "--vault",
            vault,
            "--file",
            str(later),
            "--key",
            "p1",
            "--key",
            "p2",
            "--json",
        )
    )
    refused = run(
        "record",
        "get",
        *home,
        "--vault",
        vault,
        "--record",
        newer["record"],
        "--key",
        "hospital-b",
        "--out",
        str(tmp_path / "nope.txt"),
    )
    assert refused.exit_code == EXIT_INVALID_INPUT
    assert "no key for the record's epoch" in refused.output


def test_a_patient_who_lost_a_key_recovers_it_and_a_cancelled_recovery_changes_nothing(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    people, _, api = network
    home = ["--home", str(people), "--api", api]
    for name in ("q1", "q2", "q3", "q4"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}
    registered = json.loads(ok("patient", "register", *home, "--key1", "q1", "--key2", "q2",
                               "--json"))  # fmt: skip
    patient = ["--patient", registered["address"]]
    vault = json.loads(
        ok("vault", "create", *home, "--key1", "q1", "--key2", "q2", "--type", "glucose",
           "--team", key["hospital-a"], "--json")
    )["vault"]  # fmt: skip
    old = tmp_path / "old.txt"
    old.write_text("glucose 7.2 mmol/L before the loss")
    put = json.loads(ok("record", "put", *home, "--vault", vault, "--file", str(old),
                        "--key", "q1", "--key", "q2", "--json"))  # fmt: skip
    read = ["record", "get", *home, "--vault", vault, "--record", put["record"]]
    start = ["recovery", "start", *home, *patient, "--lost", key["q2"],
             "--replacement", key["q3"], "--key", "q1", "--key", "trusted"]  # fmt: skip

    # started, then cancelled by the very key said to be lost: everything stays as it was
    assert json.loads(ok(*start, "--json"))["status"] == "committed"
    (pending,) = json.loads(ok("recovery", "list", *home, *patient, "--json"))
    assert (pending["lost"], pending["replacement"], pending["path"]) == (
        key["q2"],
        key["q3"],
        "fast",
    )
    route = f"/v1/accounts/{registered['address']}/recovery"
    answer = Client(api).get(route)
    assert answer["recovery"]["replacement"] == key["q3"]
    document = Client(api).get("/openapi.json")["paths"]["/v1/accounts/{address}/recovery"]
    schema = document["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert list(jsonschema_rs.Draft202012Validator(schema).iter_errors(answer)) == []
    ok("recovery", "cancel", *home, *patient, "--key", "q2")
    assert json.loads(ok("recovery", "list", *home, *patient, "--json")) == []
    assert Client(api).get(route) == {"recovery": None}
    ok(*read, "--key", "q2", "--out", str(tmp_path / "still.txt"))
    assert (tmp_path / "still.txt").read_text() == old.read_text()
    refused = run(*read, "--key", "q3", "--out", str(tmp_path / "not-yet.txt"))
    assert refused.exit_code == EXIT_INVALID_INPUT, refused.output

    # recovered: q3 reads the old record; a record written after is q2's no more
    ok(*start)
    finished = json.loads(ok("recovery", "finish", *home, *patient, "--key", "q1",
                             "--key", "trusted", "--json"))  # fmt: skip
    assert finished["status"] == "committed", finished
    ok(*read, "--key", "q3", "--out", str(tmp_path / "recovered.txt"))
    assert (tmp_path / "recovered.txt").read_text() == old.read_text()
    new = tmp_path / "new.txt"
    new.write_text("glucose 5.9 mmol/L after the recovery")
    added = json.loads(ok("record", "put", *home, "--vault", vault, "--file", str(new),
                          "--key", "q1", "--key", "q3", "--json"))  # fmt: skip
    assert added["status"] == "committed", added
    lost_read = run("record", "get", *home, "--vault", vault, "--record", added["record"],
                    "--key", "q2", "--out", str(tmp_path / "lost.txt"))  # fmt: skip
    assert lost_read.exit_code == EXIT_INVALID_INPUT, lost_read.output
    assert "no key for the record's epoch" in lost_read.output
    with_the_lost_key = json.loads(
        ok("record", "put", *home, "--vault", vault, "--file", str(new),
           "--key", "q1", "--key", "q2", "--json")
    )  # fmt: skip
    assert with_the_lost_key["status"] == "partial", "the lost key no longer counts"

    # a planned rotation: the patient holds both keys and replaces key 1 with nobody else
    rotated = json.loads(ok("patient", "rotate-key", *home, *patient, "--key1", "q1",
                            "--key2", "q3", "--old", "q1", "--new", "q4", "--json"))  # fmt: skip
    assert rotated["status"] == "committed", rotated
    ok(*read, "--key", "q4", "--out", str(tmp_path / "rotated.txt"))
    assert (tmp_path / "rotated.txt").read_text() == old.read_text()
    # the account keeps key 1's old address; the wallet finds it from the new key 1
    cgm = json.loads(ok("vault", "create", *home, "--key1", "q4", "--key2", "q3",
                        "--type", "cgm", "--json"))  # fmt: skip
    assert cgm["status"] == "committed", cgm


def test_a_blob_moves_between_homes_as_a_car_and_a_broken_one_is_refused(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    """Exported from one node's store as a CAR, imported into another's, served there under
    the same id; its root node's bytes are not the blob; a damaged CAR stores nothing."""
    people, devnet, api = network
    payload = tmp_path / "scan.bin"
    payload.write_bytes(random.Random(7).randbytes(2_560_000))  # three leaves under a root
    cid = ok("blob", "put", "--home", str(people), "--api", api, str(payload)).strip()
    assert cid.startswith("bafybei")
    first, second = devnet.nodes[0].home, devnet.nodes[1].home
    car = tmp_path / "scan.car"
    ok("blob", "export", "--home", str(first), "--car", str(car), cid)
    again = run("blob", "export", "--home", str(first), "--car", str(car), cid)
    assert again.exit_code == EXIT_INVALID_INPUT, "an existing file is never overwritten"
    broken = tmp_path / "broken.car"
    data = bytearray(car.read_bytes())
    data[-100] ^= 1  # inside the last leaf
    broken.write_bytes(bytes(data))
    refused = run("blob", "import", "--home", str(second), str(broken))
    assert refused.exit_code == EXIT_INVALID_INPUT, refused.output
    assert "does not match its content id" in refused.output
    stored = second / "blobs"
    assert not any(stored.rglob(cid)), "nothing of the blob was stored"
    imported = json.loads(ok("blob", "import", "--home", str(second), str(car), "--json"))
    assert imported == {"content_id": cid, "blocks": 4}
    back = tmp_path / "back.bin"
    second_api = f"http://127.0.0.1:{devnet.nodes[1].api_port}"
    ok("blob", "get", "--home", str(people), "--api", second_api, cid, "--out", str(back))
    assert back.read_bytes() == payload.read_bytes()
    root_node = next((first / "blobs" / "nodes").rglob(cid))
    mismatch = run("blob", "verify", str(root_node), cid)
    assert mismatch.exit_code == EXIT_FAILED, "a tree's node is not the file it describes"


def test_blob_commands_and_clear_errors(network: tuple[Path, Devnet, str], tmp_path: Path) -> None:
    people, _, api = network
    home = ["--home", str(people), "--api", api]
    payload = tmp_path / "cipher.bin"
    payload.write_bytes(b"\x00ciphertext" * 1000)
    cid = ok("blob", "put", *home, str(payload)).strip()
    ok("blob", "verify", str(payload), cid)
    fetched = tmp_path / "back.bin"
    ok("blob", "get", *home, cid, "--out", str(fetched))
    assert fetched.read_bytes() == payload.read_bytes()
    wrong = run(
        "blob",
        "verify",
        str(payload),
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    )
    assert wrong.exit_code == EXIT_FAILED  # a check that failed
    unreachable = run("status", "--home", str(tmp_path))
    assert unreachable.exit_code == EXIT_INVALID_INPUT
    assert "not a carechain home" in unreachable.output
    (tmp_path / "config.toml").write_text("")  # a home whose node is not running
    stopped = run("status", "--home", str(tmp_path))
    assert stopped.exit_code == EXIT_INVALID_INPUT
    assert "no running node" in stopped.output
    bad_vault = run("grant", "list", *home, "--vault", "xyz")
    assert bad_vault.exit_code == EXIT_INVALID_INPUT
    assert "40 hex characters" in bad_vault.output


def test_an_auditor_replays_a_live_node_through_its_api(
    network: tuple[Path, Devnet, str],
) -> None:
    _, devnet, api = network
    genesis = str(devnet.nodes[0].home / "genesis.json")
    audited = json.loads(ok("audit", "replay", "--api", api, "--genesis", genesis, "--json"))
    assert audited["ok"]
    assert audited["blocks"] >= 1
    assert audited["signatures"] >= audited["txs"]
    without_anchor = run("audit", "replay", "--api", api)
    assert without_anchor.exit_code != 0
    assert "your own copy of genesis.json" in without_anchor.output


@pytest.mark.filterwarnings(LEAKED_SOCKET)
def test_an_admitted_auditor_replays_by_syncing_as_an_observer(
    network: tuple[Path, Devnet, str],
) -> None:
    people, devnet, _ = network
    first = devnet.nodes[0].home
    node_id = json.loads(ok("keys", "show", "--home", str(first), "node", "--json"))["peer_id"]
    port = load_node_config(first).p2p.listen.rsplit("/", 1)[1]
    address = f"/ip4/127.0.0.1/tcp/{port}/p2p/{node_id}"
    genesis = str(first / "genesis.json")
    synced = run(
        "audit", "replay", "--peer", address, "--genesis", genesis,
        "--key-file", str(people / "keys" / "auditor.json"), "--json",
    )  # fmt: skip
    assert synced.exit_code == 0, synced.output
    assert "as an observer" in synced.stderr
    audited = json.loads(synced.stdout)
    assert audited["ok"]
    assert audited["blocks"] >= 1
    stranger = run(
        "audit",
        "replay",
        "--peer",
        address,
        "--genesis",
        genesis,
        "--key-file",
        str(people / "keys" / "p1.json"),
    )
    assert stranger.exit_code == EXIT_INVALID_INPUT
    assert "p2p.observers" in stranger.output
    gc.collect()  # reap py-libp2p's leaked sockets here, under this test's filter


@pytest.mark.filterwarnings(LEAKED_SOCKET)
def test_a_clinic_runs_a_full_node_that_follows_over_gossip_and_submits(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    """A non-validator node process (`init` without `--validator`) dials hospital 1, which admits
    its peer id under p2p.observers: blocks reach it over GossipSub, and a patient registered
    through its API commits on the validators."""
    people, devnet, api = network
    clinic = tmp_path / "clinic"
    ok("init", "--home", str(clinic), "--moniker", "clinic", "--insecure-plaintext")
    # hospital 1 admits the auditor key's peer id (see the fixture): the clinic's node runs with it
    shutil.copy(people / "keys" / "auditor.json", clinic / "keys" / "node.json")
    first = devnet.nodes[0].home
    shutil.copy(first / "genesis.json", clinic / "genesis.json")
    node_id = json.loads(ok("keys", "show", "--home", str(first), "node", "--json"))["peer_id"]
    port = load_node_config(first).p2p.listen.rsplit("/", 1)[1]
    config = load_node_config(clinic)
    p2p = config.p2p.model_copy(
        update={
            "listen": f"/ip4/127.0.0.1/tcp/{PORT + 90}",
            "peers": [f"/ip4/127.0.0.1/tcp/{port}/p2p/{node_id}"],
        }
    )
    api_section = config.api.model_copy(update={"listen": "127.0.0.1:0"})
    save_node_config(clinic, config.model_copy(update={"p2p": p2p, "api": api_section}))
    process = spawn(clinic, clinic / "node.log")
    try:
        client = wait_for_api(clinic, process)
        assert client.status()["validator"] is False
        for name in ("p5", "p6"):
            ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
        ok("patient", "register", "--home", str(people), "--api", client.base_url,
           "--key1", "p5", "--key2", "p6")  # fmt: skip
        hospital = Client(api)
        target = hospital.status()["height"]
        deadline = time.monotonic() + 30
        while client.status()["height"] < target:
            assert time.monotonic() < deadline, "the clinic's node did not catch up"
            time.sleep(0.1)
        for name in ("p7", "p8"):  # one more block, registered through a validator
            ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
        ok(
            "patient",
            "register",
            "--home",
            str(people),
            "--api",
            api,
            "--key1",
            "p7",
            "--key2",
            "p8",
        )
        target = hospital.status()["height"]
        while client.status()["height"] < target:
            assert time.monotonic() < deadline + 30, "the clinic's node did not follow"
            time.sleep(0.05)
        status = client.status()
        assert status["peers"] == [node_id]
        assert status["gossip_blocks"] >= 1, (clinic / "node.log").read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    gc.collect()


def test_two_governance_proposals_at_one_nonce_end_with_one_committed_and_one_dropped(
    network: tuple[Path, Devnet, str],
) -> None:
    """Two proposals made in a row take the same nonce: the CLI says so; the one approved
    first commits, and every node drops the other with its reason instead of keeping it as
    "partial" forever."""
    people, devnet, _ = network
    homes = [node.home for node in devnet.nodes[:3]]  # 3 of 4 validators approve a change
    proposed = []
    for name in ("hospital-c", "hospital-d"):
        subject = PrivateKey.generate().public_key.hex()
        output = ok(
            "governance", "propose", "--home", str(homes[0]), "--key", "validator",
            "--action", "institution-register", "--name", name, "--kind", "hospital",
            "--public-key", subject,
        )  # fmt: skip
        output = " ".join(output.split())  # as one line, however the console wrapped it
        found = re.search(r"transaction ([0-9a-f]{64})", output)
        assert found is not None, output
        proposed.append((found.group(1), output))
    (first, _), (second, said) = proposed
    assert f"note: proposal {first} waits for approval at the same nonce" in said
    clients = [Client(api_address(home)) for home in homes]
    deadline = time.monotonic() + 30
    while any(_status(c, second) != "partial" for c in clients):
        assert time.monotonic() < deadline, "the proposal did not reach every validator"
        time.sleep(0.1)
    # what the proposal does is shown before anyone signs, and only to those who can sign it
    validator = read_key_info(homes[1] / "keys" / "validator.json").public_key
    patient = read_key_info(people / "keys" / "p1.json").public_key
    shown = {p["id"]: p for p in clients[1].partials(awaiting=validator)}
    assert shown[second]["body"]["institution"]["name"] == "hospital-d"
    assert validator.hex() in shown[second]["needs"]
    assert second not in {p["id"] for p in clients[1].partials(awaiting=patient)}
    table = " ".join(ok("tx", "pending", "--home", str(homes[1]), "--key", "validator").split())
    assert second[:16] in table  # the prefix shown names it for approval
    api1 = clients[1].base_url
    listed = json.loads(ok("governance", "list", "--api", api1, "--json"))
    assert {first, second} <= {p["id"] for p in listed}
    assert "hospital-d" in ok("governance", "list", "--api", api1)
    for home in homes[1:]:
        approved = ok(
            "governance", "approve", second[:16], "--home", str(home), "--key", "validator"
        )
        assert "name=hospital-d" in approved
    clients[0].wait_committed(bytes.fromhex(second))
    deadline = time.monotonic() + 30
    while any(_status(c, first) != "rejected" for c in clients):
        assert time.monotonic() < deadline, [c.tx_status(bytes.fromhex(first)) for c in clients]
        time.sleep(0.1)
    dropped = [c.tx_status(bytes.fromhex(first)) for c in clients]
    assert {d["reason"] for d in dropped} == {"bad_nonce"}
    assert all("nonce" in d["message"] for d in dropped), dropped  # why, not only a code
    pending = ok("tx", "pending", "--home", str(homes[0]))
    assert first[:16] not in pending
    # the hospital governance registered is on chain: the console offers it for grants
    deadline = time.monotonic() + 30
    while True:
        listed = {i["name"]: i for i in clients[0].get("/v1/institutions")["institutions"]}
        if "hospital-d" in listed or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listed["hospital-d"]["kind"] == "hospital"
    assert listed["hospital-d"]["active"]
    assert "hospital-c" not in listed  # its proposal was dropped


def _govern(homes: list[Path], action: str, name: str, public_key: str) -> None:
    """Validator 1 proposes an institution change, 2 and 3 approve it once it reached them;
    returns when every node's chain holds it in force."""
    proposed = json.loads(ok(
        "governance", "propose", "--home", str(homes[0]), "--key", "validator",
        "--action", action, "--name", name, "--kind", "hospital", "--public-key", public_key,
        "--json",
    ))  # fmt: skip
    clients = [Client(api_address(home)) for home in homes]
    deadline = time.monotonic() + 30
    while any(_status(c, proposed["id"]) != "partial" for c in clients[1:3]):
        assert time.monotonic() < deadline, "the proposal did not reach the validators"
        time.sleep(0.1)
    for home in homes[1:3]:
        ok("governance", "approve", proposed["id"], "--home", str(home), "--key", "validator")
    active = action == "institution-register"
    while True:
        states = [
            {i["name"]: i["active"] for i in c.get("/v1/institutions")["institutions"]}.get(name)
            for c in clients
        ]
        if states == [active] * len(clients):
            return
        assert time.monotonic() < deadline, f"{action} {name} not in force: {states}"
        time.sleep(0.2)


def test_a_revoked_hospital_reads_nothing_new_and_the_agent_guards_the_patient(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    """Governance registers hospital E, the patient grants it a vault, E reads; governance
    revokes E (a stolen key): the patient's agent rotates the vault without E, and E's read of
    the next record is refused. A recovery the patient did not start (the trusted party and a
    team hospital) is cancelled by the agent told to."""
    people, devnet, api = network
    homes = [node.home for node in devnet.nodes]
    home = ["--home", str(people), "--api", api]
    for name in ("r1", "r2", "r3", "hospital-e"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}
    _govern(homes, "institution-register", "hospital-e", key["hospital-e"])
    registered = json.loads(ok("patient", "register", *home, "--key1", "r1", "--key2", "r2",
                               "--json"))  # fmt: skip
    vault = json.loads(
        ok("vault", "create", *home, "--key1", "r1", "--key2", "r2", "--type", "glucose",
           "--team", key["hospital-a"], "--json")
    )["vault"]  # fmt: skip
    granted = ok("grant", "add", *home, "--vault", vault, "--grantee", key["hospital-e"],
                 "--key", "r1", "--key", "r2", "--json")  # fmt: skip
    grant = json.loads(granted)["grant_id"]
    reading = tmp_path / "reading.txt"
    reading.write_text("glucose 6.1 mmol/L")
    put = ["record", "put", *home, "--vault", vault, "--file", str(reading),
           "--key", "r1", "--key", "r2", "--json"]  # fmt: skip
    first = json.loads(ok(*put))["record"]
    get = ["record", "get", *home, "--vault", vault, "--key", "hospital-e", "--grant", grant]
    ok(*get, "--record", first, "--out", str(tmp_path / "e-read.txt"))

    _govern(homes, "institution-revoke", "hospital-e", key["hospital-e"])
    rules = tmp_path / "rules.toml"
    rules.write_text('on_recovery = "cancel"\n')
    agent = ["agent", *home, "--rules", str(rules), "--key", "r1", "--other-key", "r2", "--once"]
    (rotation,) = [json.loads(line) for line in ok(*agent).splitlines()]
    assert (rotation["kind"], rotation["signed"], rotation["vault"]) == (
        "epoch.rotate",
        True,
        vault,
    )
    assert "rotated to epoch 2" in rotation["reason"], rotation
    second = json.loads(ok(*put))["record"]
    refused = run(*get, "--record", second, "--out", str(tmp_path / "e-again.txt"))
    assert refused.exit_code == EXIT_INVALID_INPUT, refused.output
    assert not (tmp_path / "e-again.txt").exists()

    start = json.loads(ok(
        "recovery", "start", *home, "--patient", registered["address"], "--lost", key["r2"],
        "--replacement", key["r3"], "--key", "trusted", "--key", "hospital-a", "--json",
    ))  # fmt: skip
    assert start["status"] == "committed", start
    (cancel,) = [json.loads(line) for line in ok(*agent).splitlines()]
    assert (cancel["alert"], cancel["kind"], cancel["signed"]) == (
        "recovery_pending", "recovery.cancel", True,
    )  # fmt: skip
    listed = ok("recovery", "list", *home, "--patient", registered["address"], "--json")
    assert json.loads(listed) == []


def _status(client: Client, tx_id: str) -> str:
    """A transaction's status at one node ("unknown" before it arrives there)."""
    try:
        return str(client.tx_status(bytes.fromhex(tx_id))["status"])
    except ApiRequestError as exc:
        if exc.status != 404:
            raise
        return "unknown"


def test_a_minors_guardian_acts_for_it_until_the_handover(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    """A parent registers a child's account and acts for it; a carer named as a cosign
    guardian co-signs a hospital's reading the node lists as awaiting it; at the handover the
    child's own keys take over and the guardians read nothing written afterwards."""
    people, _, api = network
    home = ["--home", str(people), "--api", api]
    for name in ("m1", "m2", "parent", "carer"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}
    child = json.loads(ok("patient", "register", *home, "--key1", "m1", "--key2", "m2",
                          "--guardian", "parent", "--json"))["address"]  # fmt: skip
    patient = ["--patient", child]
    vault = json.loads(
        ok("vault", "create", *home, "--key1", "m1", "--key2", "m2", "--type", "glucose",
           "--team", key["hospital-a"], "--signer", "parent", "--json")
    )["vault"]  # fmt: skip
    reading = tmp_path / "reading.txt"
    reading.write_text("glucose 6.8 mmol/L, age 9")
    put = ["record", "put", *home, "--vault", vault, "--file", str(reading), "--json"]
    assert json.loads(ok(*put, "--key", "m1", "--key", "m2"))["status"] == "partial", (
        "a minor's own keys wait for its guardian"
    )
    first = json.loads(ok(*put, "--key", "parent"))
    assert first["status"] == "committed", first
    get = ["record", "get", *home, "--vault", vault]
    ok(*get, "--record", first["record"], "--key", "parent", "--out", str(tmp_path / "p.txt"))
    assert (tmp_path / "p.txt").read_text() == reading.read_text()

    ok("guardian", "add", *home, *patient, "--guardian", key["carer"], "--scope", "cosign",
       "--key", "parent")  # fmt: skip
    listed = json.loads(ok("guardian", "list", *home, *patient, "--json"))
    assert listed["minor"] is True
    assert {(g["key"], g["scope"]) for g in listed["guardians"]} == {
        (key["parent"], "full"), (key["carer"], "cosign")
    }  # fmt: skip
    wards = json.loads(ok("guardian", "list", *home, "--of", key["carer"], "--json"))
    assert wards == [{"patient": child, "scope": "cosign"}]
    filed = json.loads(ok(*put, "--key", "hospital-a"))
    assert filed["status"] == "partial"
    awaiting = Client(api).partials(awaiting=bytes.fromhex(key["carer"]))
    assert filed["id"] in {p["id"] for p in awaiting}, "the node lists it for the carer"
    ok("tx", "cosign", *home, filed["id"], "--key", "carer")
    Client(api).wait_committed(bytes.fromhex(filed["id"]))

    handed = json.loads(ok("guardian", "handover", *home, *patient, "--key", "m1", "--key", "m2",
                           "--key", "parent", "--json"))  # fmt: skip
    assert handed["status"] == "committed", handed
    assert json.loads(ok("guardian", "list", *home, *patient, "--json"))["guardians"] == []
    after = json.loads(ok(*put, "--key", "m1", "--key", "m2"))
    assert after["status"] == "committed", "its own keys act now"
    for guardian in ("parent", "carer"):
        refused = run(*get, "--record", after["record"], "--key", guardian,
                      "--out", str(tmp_path / f"{guardian}.txt"))  # fmt: skip
        assert refused.exit_code == EXIT_INVALID_INPUT, refused.output


def test_a_hospital_rotates_its_key_and_reads_with_the_new_one(
    network: tuple[Path, Devnet, str], tmp_path: Path
) -> None:
    """Hospital B rotates to a new key: every copy it holds is resealed, it reads a record
    written before with the new key (its receipt commits), writes with it as a team hospital,
    and the old key reads for nobody. Runs after every other test that uses hospital B."""
    people, _, api = network
    home = ["--home", str(people), "--api", api]
    for name in ("s1", "s2", "hospital-b-2027"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}
    ok("patient", "register", *home, "--key1", "s1", "--key2", "s2")
    vault = json.loads(
        ok("vault", "create", *home, "--key1", "s1", "--key2", "s2", "--type", "glucose",
           "--team", key["hospital-b"], "--json")
    )["vault"]  # fmt: skip
    reading = tmp_path / "reading.txt"
    reading.write_text("glucose 5.2 mmol/L before the rotation")
    put = ["record", "put", *home, "--vault", vault, "--file", str(reading), "--json"]
    record = json.loads(ok(*put, "--key", "s1", "--key", "s2"))["record"]

    rotated = json.loads(ok("institution", "rotate-key", *home, "--key", "hospital-b",
                            "--new", "hospital-b-2027", "--json"))  # fmt: skip
    assert rotated["rotation"]["status"] == "committed", rotated
    assert rotated["reseal"]["resealed"] >= 1, rotated
    assert rotated["reseal"]["unopened"] == 0, rotated
    again = json.loads(ok("institution", "reseal", *home, "--old", "hospital-b",
                          "--key", "hospital-b-2027", "--json"))  # fmt: skip
    assert again == {"resealed": 0, "transactions": [], "unopened": 0}
    (listed,) = [i for i in json.loads(ok("institution", "list", "--api", api, "--json"))
                 if i["name"] == "hospital-b"]  # fmt: skip
    assert (listed["public_key"], listed["key"]) == (key["hospital-b"], key["hospital-b-2027"])

    get = ["record", "get", *home, "--vault", vault, "--record", record]
    ok(*get, "--key", "hospital-b-2027", "--out", str(tmp_path / "read.txt"))
    assert (tmp_path / "read.txt").read_text() == reading.read_text()
    receipts = Client(api).get(f"/v1/vaults/{vault}/receipts")["receipts"]
    assert [r["reader"] for r in receipts] == [key["hospital-b"]], "named as the hospital"
    old = run(*get, "--key", "hospital-b", "--out", str(tmp_path / "old-key.txt"))
    assert old.exit_code == EXIT_INVALID_INPUT, old.output
    assert "rotated away from" in old.output
    written = json.loads(ok(*put, "--key", "s1", "--key", "hospital-b-2027"))
    assert written["status"] == "committed", "a team write with the hospital's key now"


def test_sigterm_stops_a_node_cleanly(network: tuple[Path, Devnet, str]) -> None:
    _, devnet, _ = network
    last = devnet.nodes[-1]
    assert devnet.terminate(last.name) == 0
    genesis = load_genesis(last.home / "genesis.json")
    store = ChainStore.open(last.home / "data" / "chain", genesis, verify_state=True)
    try:
        assert store.height >= 1
    finally:
        store.close()
    assert not (last.home / "data" / "api.address").exists()
    audited = json.loads(ok("audit", "replay", "--home", str(last.home), "--json"))
    assert audited["ok"]
    assert audited["blocks"] >= 1
    # its own blob store holds none of the blobs put through another hospital's node: they
    # are reported missing, apart from damage, and the replay still passes
    blobs = ["--blobs", str(last.home / "blobs")]
    with_blobs = json.loads(ok("audit", "replay", "--home", str(last.home), *blobs, "--json"))
    assert with_blobs["ok"]
    assert with_blobs["blobs_checked"] + len(with_blobs["blobs_missing"]) >= 1
    assert len(with_blobs["blobs_missing"]) >= 1
