"""The demo's step for verified reads: the patient's phone, holding only its own copy of
genesis, reads its account and its glucose vault through a light client (the header trusted
from genesis, the entry proved against its state root, two other hospitals' nodes as
witnesses), then meets a node that lies about the vault and catches it."""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from carechain.cli.demo.steps import Story
from carechain.consensus.ledger.records import Account
from carechain.consensus.ledger.state import Table
from carechain.consensus.light.verifier import VerificationError
from carechain.node.light.client import LightClient, NodeSource
from carechain.node.light.lists import list_query
from carechain.node.wallet.client import Client

# (the path asked, the JSON answered or None before forwarding) -> (the path forwarded, the
# answer sent back)
Lie = Callable[[str, Any], tuple[str, Any]]


class LyingProxy:
    """An HTTP front for a node that forwards GETs and lets `lie` rewrite the path forwarded
    and the JSON answered: a node that lies, for demonstrations and tests."""

    def __init__(self, upstream: str, lie: Lie) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _ = lie(self.path, None)
                with urllib.request.urlopen(upstream + path, timeout=30) as response:  # noqa: S310 - the node's own URL
                    answer = json.loads(response.read())
                _, answer = lie(self.path, answer)
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LyingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def _vault_absent(path: str, answer: Any) -> tuple[str, Any]:
    """Says the vault does not exist (so nobody could be reading it)."""
    if answer is not None and "/v1/state/vault/" in path:
        answer["value"] = None
    return path, answer


def _grant_left_out(path: str, answer: Any) -> tuple[str, Any]:
    """Leaves the last grant out of a vault's proved grants (so the patient would not see who
    else can read)."""
    if answer is not None and path.startswith("/v1/vaults/") and "/grants?" in path:
        grants = [i for i, e in enumerate(answer["entries"]) if e["table"] == "grant"]
        if grants:
            del answer["entries"][grants[-1]]
    return path, answer


def verified_reads(story: Story) -> None:
    story.step("The patient's phone believes no single node: verified reads, a lie caught")
    glucose = story.vaults["glucose"]
    sources = {name: NodeSource(story.clients[name]) for name in ("patient", "A", "B")}
    with tempfile.TemporaryDirectory(prefix="carechain-light-") as home:
        phone = LightClient(
            story.ledger.genesis, Path(home), sources["patient"], [sources["A"], sources["B"]]
        )
        account = phone.get(Table.ACCOUNT, story.patient_account)
        vault = phone.get(Table.VAULT, glucose)
        honest = story.clients["patient"].get(f"/v1/state/vault/{glucose.hex()}")["value"]
        story.check(
            account.value is not None and vault.value is not None and vault.value.hex() == honest,
            f"the patient's account and glucose vault, each proved against a header trusted "
            f"from genesis ({vault.trusted.verified_by()}), nodes A and B agreeing",
        )
        upstream = story.clients["patient"].base_url
        with LyingProxy(upstream, _vault_absent) as proxy:
            liar = LightClient(story.ledger.genesis, Path(home), NodeSource(Client(proxy.url)))
            try:
                liar.get(Table.VAULT, glucose)
                caught = ""
            except VerificationError as exc:
                caught = str(exc)
        story.check(
            "present" in caught,
            "a node that says the glucose vault does not exist is caught: "
            f"{caught or 'it was believed'}",
        )
        genesis = story.ledger.genesis
        grants = phone.query(*list_query("grants", glucose, genesis)).value["grants"]
        holders = phone.query(*list_query("holders", glucose, genesis)).value
        events = phone.query(*list_query("timeline", story.patient_account, genesis)).value
        keys = {bytes.fromhex(key) for key in holders["holders"]}
        story.check(
            len(grants) >= 1
            and account.value is not None
            and set(Account.decode(account.value).keys) <= keys
            and len(events["events"]) >= len(grants),
            f"who holds the glucose vault's key now ({len(keys)} keys, epoch "
            f"{holders['epoch']}), who was ever granted it ({len(grants)} grant(s)) "
            f"and the whole access timeline ({len(events['events'])} events), each list "
            "proved complete",
        )
        with LyingProxy(upstream, _grant_left_out) as proxy:
            liar = LightClient(genesis, Path(home), NodeSource(Client(proxy.url)))
            try:
                liar.query(*list_query("grants", glucose, genesis))
                caught = ""
            except VerificationError as exc:
                caught = exc.code
        story.check(
            caught == "answer_incomplete",
            f"a node that leaves a grant out of the list is caught: {caught or 'it was believed'}",
        )
