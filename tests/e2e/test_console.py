"""The web console in headless Chromium (Debian's package, driven by Playwright) against a real
local network: 4 validator processes with the console on, a patient with records and a
partial transaction from hospital A waiting for the patient, and the patient's local agent
(`carechain agent --serve`) holding the patient's keys. A patient grants, sees the grant,
revokes it (after saying yes to a question that names who loses what), approves the pending
co-signature, adds an automatic co-signing rule and switches the labels to Chinese; a hospital
that governance registered after genesis can be granted; at a phone's width (390 px) nothing
runs off the screen; a console whose agent is down says so and how to start it; an operator
sees a killed validator marked as missing. Screenshots of every view go to build/screenshots/
(kept out of git)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from playwright.sync_api import Dialog, Page, ViewportSize, expect, sync_playwright

from carechain.cli.demo.ledger import Ledger, put_reading, reading
from carechain.cli.demo.verified import LyingProxy
from carechain.cli.nodes import Devnet
from carechain.config.genesis import load_genesis
from carechain.consensus import crypto
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.governance import GOVERNANCE_ACCOUNT
from carechain.consensus.ledger.policy import Template
from carechain.consensus.ledger.records import GuardianScope, InstitutionAction
from carechain.consensus.ledger.vaults import vault_id_of
from carechain.node.wallet import builders
from carechain.node.wallet.client import Client
from carechain.node.wallet.keystore import load_key, save_key

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
PORT = 29800
AGENT_PORT = 29890
BROWSER_LOG: list[str] = []
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
P1, P2 = crypto.PrivateKey(b"\x71" * 32), crypto.PrivateKey(b"\x72" * 32)
HOSPITAL_A, HOSPITAL_B = crypto.PrivateKey(b"\x73" * 32), crypto.PrivateKey(b"\x74" * 32)
TRUSTED = crypto.PrivateKey(b"\x75" * 32)
HOSPITAL_C = crypto.PrivateKey(b"\x76" * 32)  # registered by governance, not in genesis
CARER = crypto.PrivateKey(b"\x77" * 32)  # the patient's cosign guardian
PHONE: ViewportSize = {"width": 390, "height": 844}


class World:
    def __init__(
        self, devnet: Devnet, clients: list[Client], agent: subprocess.Popen[bytes], home: Path
    ) -> None:
        self.devnet, self.clients, self.agent, self.home = devnet, clients, agent, home

    @property
    def genesis(self) -> Path:
        return self.devnet.nodes[0].home / "genesis.json"

    @property
    def console(self) -> str:
        return f"{self.clients[0].base_url}/console/?agent=http://127.0.0.1:{AGENT_PORT}"


def _patient_chain(ledger: Ledger) -> bytes:
    """A registered patient with glucose and cgm vaults (hospital A on the team), two readings,
    and a third from hospital A waiting for the patient's signature; the partial's id."""
    keys = (P1.public_key, P2.public_key)
    account = crypto.account_id(P1.public_key)
    ledger.commit(builders.register_patient(ledger.chain_id, keys, ledger.expiry()).signed(P1, P2))
    team = [HOSPITAL_A.public_key]
    for data_type in ("glucose", "cgm"):
        draft, epoch_key = builders.create_vault(
            ledger.chain_id, account, ledger.nonce(account), ledger.expiry(),
            data_type=data_type, template=Template.PATIENT_CONTROLLED, team=team,
            members={*keys, *team, TRUSTED.public_key},
        )  # fmt: skip
        ledger.commit(draft.signed(P1, P2))
        ledger.epoch_keys[(vault_id_of(account, data_type), 1)] = epoch_key
    glucose = vault_id_of(account, "glucose")
    for index in range(2):
        tx, record_id = put_reading(ledger, glucose, reading("glucose", index))
        ledger.commit(tx.signed_by(P1).signed_by(P2))
    reader = crypto.account_id(HOSPITAL_A.public_key)  # hospital A reads by team right: a receipt
    receipt = builders.receipt(
        ledger.chain_id,
        HOSPITAL_A.public_key,
        ledger.nonce(reader),
        ledger.expiry(),
        vault=glucose,
        record_id=record_id,
        grant_id=b"",
    )
    ledger.commit(receipt.signed(HOSPITAL_A))  # fmt: skip
    cgm = vault_id_of(account, "cgm")
    emergency = builders.open_emergency(
        ledger.chain_id, cgm, ledger.nonce(cgm), ledger.expiry(), hospital=HOSPITAL_A.public_key,
        epoch_key=ledger.epoch_keys[(cgm, 1)], reason="unconscious", duration_ms=3_600_000,
    )  # fmt: skip
    ledger.commit(emergency.signed(HOSPITAL_A, TRUSTED))
    epoch_keys = {vault: [ledger.epoch_keys[(vault, 1)]] for vault in (glucose, cgm)}
    guardian = builders.add_guardian(
        ledger.chain_id, account, ledger.nonce(account), ledger.expiry(),
        guardian=CARER.public_key, scope=GuardianScope.COSIGN, epoch_keys=epoch_keys,
    )  # fmt: skip
    ledger.commit(guardian.signed(P1, P2))
    refused, _ = put_reading(ledger, glucose, reading("glucose", 9))  # one the patient refuses
    assert ledger.client.submit(refused.signed_by(HOSPITAL_A))["status"] == "partial"
    # (on the cgm vault: the glucose vault's epoch rotates when the test revokes its grant, and
    # a record sealed to the old epoch can no longer be added there)
    pending, _ = put_reading(ledger, vault_id_of(account, "cgm"), reading("glucose", 7))
    partial = pending.signed_by(HOSPITAL_A)
    assert ledger.client.submit(partial)["status"] == "partial"
    return partial.id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it when it can)")
    folder = tmp_path_factory.mktemp("console")
    institutions = (
        Institution("hospital-a", InstitutionKind.HOSPITAL, HOSPITAL_A.public_key),
        Institution("hospital-b", InstitutionKind.HOSPITAL, HOSPITAL_B.public_key),
        Institution("trusted-party", InstitutionKind.TRUSTED_PARTY, TRUSTED.public_key),
    )
    devnet = Devnet(folder / "net", 4, PORT, institutions=institutions,
                    heartbeat_interval_ms=2000, console=True)  # fmt: skip
    clients = devnet.start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        genesis = load_genesis(devnet.nodes[0].home / "genesis.json")
        ledger = Ledger(genesis, clients[0])
        _patient_chain(ledger)
        _register_by_governance(
            ledger,
            devnet,
            Institution("hospital-c", InstitutionKind.HOSPITAL, HOSPITAL_C.public_key),
        )
        home = folder / "patient"
        for name, key in (("patient-1", P1), ("patient-2", P2)):
            save_key(home / "keys" / f"{name}.json", key, name=name, purpose="account",
                     passphrase=None)  # fmt: skip
        (home / "rules.toml").write_text("")
        genesis_path = devnet.nodes[0].home / "genesis.json"
        agent = _start_agent(home, clients[0].base_url, genesis_path, AGENT_PORT, folder)
        yield World(devnet, clients, agent, home)
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(30)
        devnet.stop()


def _register_by_governance(ledger: Ledger, devnet: Devnet, institution: Institution) -> None:
    """Three of the four validators sign the registration (the devnet's governance threshold)."""
    keys = [load_key(node.home / "keys" / "validator.json", None) for node in devnet.nodes[:3]]
    draft = builders.change_institution(
        ledger.chain_id, ledger.nonce(GOVERNANCE_ACCOUNT), ledger.expiry(),
        InstitutionAction.REGISTER, institution,
    )  # fmt: skip
    ledger.commit(draft.signed(*keys))
    deadline = time.monotonic() + 30  # a governance change takes effect from the next block
    while institution.name not in {
        i["name"] for i in ledger.client.get("/v1/institutions")["institutions"]
    }:
        assert time.monotonic() < deadline, "the registered institution never took effect"
        time.sleep(0.2)


def _start_agent(
    home: Path, api: str, genesis: Path, port: int, folder: Path, origin: str = ""
) -> subprocess.Popen[bytes]:
    """The patient's agent serving the console on `port`, verifying the node at `api`."""
    log_path = folder / f"agent-{port}.log"
    with log_path.open("wb") as log:  # the child keeps its own copy
        agent = subprocess.Popen(
            [sys.executable, "-m", "carechain.cli", "agent", "--home", str(home),
             "--api", api, "--rules", str(home / "rules.toml"), "--genesis", str(genesis),
             "--key", "patient-1", "--other-key", "patient-2", "--interval", "1",
             "--serve", f"127.0.0.1:{port}", *(["--console-origin", origin] if origin else [])],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for_agent(agent, log_path, port)
    except AssertionError:
        agent.kill()
        agent.wait(30)
        raise
    return agent


def _wait_for_agent(agent: subprocess.Popen[bytes], log: Path, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise AssertionError(f"the agent exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/agent/v1/identity"):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the agent did not answer: {log.read_text()}")


@pytest.fixture
def page(world: World) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.set_default_timeout(30_000)
        BROWSER_LOG.clear()
        page.on("console", lambda message: BROWSER_LOG.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: BROWSER_LOG.append(f"page error: {error}"))
        try:
            yield page
        finally:
            print("\n".join(["the browser said:", *BROWSER_LOG, page.inner_text("#message")]))
            browser.close()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_patient_grants_sees_revokes_and_approves_a_co_signature(
    world: World, page: Page
) -> None:
    p = page
    p.goto(f"{world.console}#/patient")
    p.wait_for_selector("body[data-loaded=patient]")
    p.wait_for_selector("#vaults summary")
    assert "glucose (2" in p.inner_text("#vaults")
    for panel in ("vaults", "grants", "timeline"):  # the agent proved every list it shows
        expect(p.locator(f"#proof-{panel}.verified")).to_contain_text("Verified at height")
    assert "hospital-a" in p.inner_text("#pending")
    expect(p.locator("#acts-for")).to_contain_text(
        f"Your guardians: {CARER.public_key.hex()[:12]}… (co-signs and reads)"
    )
    _shot(p, "patient")
    # refuse hospital A's glucose reading
    assert p.locator("#pending li[data-partial]").count() == 2
    glucose_item = p.locator("#pending li[data-partial]", has_text="glucose record")
    glucose_item.locator("button", has_text="Refuse").click()
    expect(p.locator("#pending li[data-partial]")).to_have_count(1)
    # hospital A's emergency access shows in words, not as its code (ETREAT)
    emergency = p.locator("#grants tbody tr[data-grant]", has_text="cgm")
    assert emergency.inner_text().split("\t")[3] == "Emergency treatment"
    # grant hospital C, which governance registered after genesis, access to glucose for 14 days
    p.check(f"input[name=grant-type][value='{_vault('glucose')}']")
    p.select_option("#grant-institution", HOSPITAL_C.public_key.hex())
    p.fill("#grant-days", "14")
    p.click("#grant-form button[type=submit]")
    row = p.locator("#grants tbody tr[data-grant]", has_text="glucose")
    row.wait_for()
    assert row.inner_text().split("\t")[:2] == ["hospital-c", "glucose"]
    _shot(p, "patient-granted")
    # revoke it: first the question names who loses what; saying no leaves the grant
    questions: list[str] = []

    def say_no(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    p.once("dialog", say_no)
    row.locator("button").click()
    for _ in range(100):  # the handler runs as the page's events are pumped
        if questions:
            break
        p.wait_for_timeout(50)
    assert "hospital-c" in questions[0], questions
    assert "glucose" in questions[0], questions
    assert row.count() == 1, "a revocation the patient did not confirm was carried out"
    # saying yes revokes it: the chain rotates the vault's epoch, the row goes
    p.once("dialog", lambda dialog: dialog.accept())
    row.locator("button").click()
    p.wait_for_selector("#grants tbody tr[data-grant]:has-text('glucose')", state="detached")
    vault = world.clients[1].get(f"/v1/vaults/{_vault('glucose')}")
    assert vault["epoch"] == 2, "the revocation rotated the epoch"
    # the refused glucose reading was sealed for epoch 1: every node dropped it
    assert [p for p in world.clients[1].partials() if p["account"] == _vault("glucose")] == []
    # approve its cgm reading
    p.reload()
    p.wait_for_selector("body[data-loaded=patient]")
    expect(p.locator("#pending li[data-partial]")).to_have_count(1)
    p.click("#pending li[data-partial] button:first-of-type")
    p.wait_for_selector("#pending li[data-partial]", state="detached")
    _committed_records(world, "cgm", 1)
    # an automatic co-signing rule for hospital A's cgm reports
    p.fill("#rule-name", "hospital A files CGM reports")
    p.select_option("#rule-institution", HOSPITAL_A.public_key.hex())
    p.fill("#rule-types", "cgm")
    p.click("#rule-form button[type=submit]")
    p.wait_for_selector("#rules tbody td:has-text('hospital A files CGM reports')")
    p.reload()
    p.wait_for_selector("body[data-loaded=patient]")
    assert "cgm (1" in p.inner_text("#vaults")
    with p.expect_download() as download:  # a record decrypted by the agent
        p.locator("#vaults details", has_text="glucose").locator("button").first.click()
    assert Path(download.value.path()).read_bytes() == reading("glucose", 0)
    assert p.locator("#reads-chart rect").count() == 1, "one day with one read"
    p.wait_for_selector("#timeline tbody td:has-text('grant')")
    _shot(p, "patient-after")
    p.select_option("#language", "zh")
    p.wait_for_selector("h2:has-text('当前谁可以读取您的数据')")
    _shot(p, "patient-zh")


def test_at_a_phones_width_nothing_runs_off_the_screen(world: World, page: Page) -> None:
    p = page
    p.set_viewport_size(PHONE)
    for view in ("patient", "operator"):
        p.goto(f"{world.console}#/{view}")
        p.wait_for_selector(f"body[data-loaded={view}]")
        if view == "patient":
            p.wait_for_selector("#timeline tbody td")
            # a row is a card: each value says which column it is
            label = (
                p.locator("#timeline tbody tr")
                .first.locator("td")
                .first.get_attribute("data-label")
            )
            assert label == "Height"
            records = p.locator("#vaults details", has_text="glucose").locator("tbody tr")
            expect(records).to_have_count(2)
            assert records.first.is_visible(), "the records' rows are hidden at phone width"
        else:
            p.wait_for_selector("#validators tbody tr[data-validator]")
            emergencies = p.inner_text("#emergencies")
            assert "patient unconscious" in emergencies
            assert "Emergency treatment" in emergencies
        _shot(p, f"{view}-phone")
        wide = p.evaluate(
            "() => [document.documentElement.scrollWidth, ...[...document.querySelectorAll("
            "'body *')].filter((e) => e.getBoundingClientRect().right > innerWidth + 1)"
            ".map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 5)]"
        )  # fmt: skip
        assert wide[0] <= PHONE["width"], f"the {view} view is {wide[0]} px wide: {wide[1:]}"


def test_a_console_whose_agent_is_down_says_so_and_how_to_start_it(
    world: World, page: Page
) -> None:
    p = page
    down = "http://127.0.0.1:9"  # the discard port: nothing listens there on loopback
    p.goto(f"{world.clients[0].base_url}/console/?agent={down}#/patient")
    message = p.locator("#message.error")
    expect(message).to_contain_text("does not answer")
    text = message.inner_text()
    assert down in text, text
    assert "carechain agent --serve" in text, text
    assert "Failed to fetch" not in text
    # the node's own answers still show: the grant choices come from chain state
    options = p.locator("#grant-institution option")
    expect(options).to_have_count(3)
    assert "hospital-c" in options.all_inner_texts()


def _left_out(path: str, answer: Any) -> tuple[str, Any]:
    """A node that leaves the last proved entry out of a list's answer."""
    if answer is not None and "proof=true" in path and answer.get("entries"):
        del answer["entries"][-1]
    return path, answer


def test_a_console_says_loudly_when_a_node_lied(world: World, page: Page, tmp_path: Path) -> None:
    node = world.clients[0].base_url
    with LyingProxy(node, _left_out) as proxy:
        agent = _start_agent(world.home, proxy.url, world.genesis, AGENT_PORT + 1, tmp_path, node)
        try:
            page.goto(f"{node}/console/?agent=http://127.0.0.1:{AGENT_PORT + 1}#/patient")
            lied = page.locator("#proof-vaults.lied")
            expect(lied).to_contain_text("did not verify")
            expect(lied).to_contain_text("answer_incomplete")
            assert page.locator("#vaults summary").count() == 0, "nothing unverified is shown"
            _shot(page, "patient-lied")
        finally:
            agent.terminate()
            agent.wait(30)


def test_an_operator_sees_a_killed_validator_marked_missing(world: World, page: Page) -> None:
    p = page
    p.goto(f"{world.console}#/operator")
    p.wait_for_selector("body[data-loaded=operator]")
    victim = world.devnet.nodes[3].name
    state = f"#validators tr[data-validator='{victim}'] td:last-child"
    assert p.inner_text(state) == "active"
    _shot(p, "operator")
    world.devnet.kill(victim)
    deadline = time.monotonic() + 60
    while p.inner_text(state) != "missing":
        assert time.monotonic() < deadline, "the killed validator was never marked missing"
        time.sleep(1)
        p.reload()
        p.wait_for_selector("body[data-loaded=operator]")
    _shot(p, "operator-validator-missing")


def _vault(data_type: str) -> str:
    return vault_id_of(crypto.account_id(P1.public_key), data_type).hex()


def _committed_records(world: World, data_type: str, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(world.clients[2].get(f"/v1/vaults/{_vault(data_type)}/records")["records"]) < count:
        assert time.monotonic() < deadline, "the approved record was not committed"
        time.sleep(0.2)


def test_the_nodes_answers_match_their_openapi_schemas(world: World) -> None:
    """This world holds every kind of thing the API shows (a patient, vaults, records, grants,
    a receipt, an emergency, partials, governance): each GET answer is checked against the
    schema the node's own OpenAPI document gives it (the fuzz test's node is empty)."""
    client = world.clients[1]
    document = client.get("/openapi.json")
    account = crypto.account_id(P1.public_key).hex()
    glucose = _vault("glucose")
    partial = client.partials()[0]["id"] if client.partials() else None
    committed_tx = client.get("/v1/blocks/3")["txs"][0]
    urls = {
        "/v1/status": "/v1/status",
        "/v1/genesis": "/v1/genesis",
        "/v1/institutions": "/v1/institutions",
        "/v1/emergencies": "/v1/emergencies",
        "/v1/accounts/{address}": f"/v1/accounts/{account}",
        "/v1/accounts/{address}/vaults": f"/v1/accounts/{account}/vaults",
        "/v1/accounts/{address}/timeline": f"/v1/accounts/{account}/timeline",
        "/v1/accounts/{address}/recovery": f"/v1/accounts/{account}/recovery",
        "/v1/guardians/{key}": f"/v1/guardians/{CARER.public_key.hex()}",
        "/v1/vaults/{id}": f"/v1/vaults/{glucose}",
        "/v1/vaults/{id}/records": f"/v1/vaults/{glucose}/records",
        "/v1/vaults/{id}/grants": f"/v1/vaults/{glucose}/grants",
        "/v1/vaults/{id}/receipts": f"/v1/vaults/{glucose}/receipts",
        "/v1/partials": "/v1/partials",
        "/v1/blocks/{height}": "/v1/blocks/3",
        "/v1/blocks/{height}/txs": "/v1/blocks/3/txs",
        "/v1/txs/{id}": f"/v1/txs/{committed_tx}",
        "/v1/state/{table}": "/v1/state/account",
    }
    if partial is not None:
        urls["/v1/txs/{id} (partial)"] = f"/v1/txs/{partial}"
    checked = 0
    for path, url in urls.items():
        answer = client.get(url)
        schema = document["paths"][path.split(" ")[0]]["get"]["responses"]["200"]["content"]
        validator = jsonschema_rs.Draft202012Validator(schema["application/json"]["schema"])
        errors = [str(error) for error in validator.iter_errors(answer)]
        assert errors == [], f"GET {url}: {errors[:3]}"
        checked += bool(answer)
    assert checked == len(urls)
    records = client.get(f"/v1/vaults/{glucose}/records")["records"]
    assert records, "the schema of a record was checked against real records"


def test_screenshots_are_kept_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(SHOTS / "patient.png")],
        cwd=SHOTS.parents[1], check=False,
    )  # fmt: skip
    assert ignored.returncode == 0 or shutil.which("git") is None
