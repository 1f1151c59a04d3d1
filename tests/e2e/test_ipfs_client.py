"""End to end with a real IPFS client: `@helia/verified-fetch` (pinned in
tests/interop/helia) pointed at a running node's trustless gateway route fetches a record's
blob for a grantee, checking every block against its CID as it walks the UnixFS tree; the
grantee decrypts it. A hospital with no grant, and a request with no signature, get nothing.

Needs node and npm (the test installs the pinned packages); `make interop` runs it."""

from __future__ import annotations

import json
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from carechain.cli.context import make_context
from carechain.cli.main import cli
from carechain.cli.nodes import Devnet
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.blob_access import BlobRequest
from carechain.node.wallet.client import ApiRequestError, Client
from carechain.node.wallet.keystore import load_key, read_key_info
from carechain.node.wallet.patient_actions import decrypt_blob
from carechain.tests.leaks import LEAKED_SOCKET
from carechain.tests.unixfs_blobs import interop_tools

pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings(LEAKED_SOCKET)]
PORT = 28600
SEED = 25
CAR = "application/vnd.ipld.car"


def ok(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, f"{' '.join(args)}\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One validator, hospitals A (the vault's team), B (granted) and C (not), a patient."""
    folder = tmp_path_factory.mktemp("gateway")
    people = folder / "people"
    for name in ("p1", "p2", "hospital-a", "hospital-b", "hospital-c"):
        ok("keys", "new", "--home", str(people), "--name", name, "--insecure-plaintext")
    keys = {p.stem: read_key_info(p).public_key for p in (people / "keys").glob("*.json")}
    institutions = tuple(
        Institution(name, InstitutionKind.HOSPITAL, keys[name])
        for name in ("hospital-a", "hospital-b", "hospital-c")
    )
    devnet = Devnet(folder / "net", 1, PORT, institutions=institutions)
    clients = devnet.start()
    try:
        yield people, clients[0].base_url
    finally:
        devnet.stop()


def _fetch(
    tools: Path, api: str, cid: str, request: str, out: Path, seconds: int = 60
) -> dict[str, int]:
    """verified-fetch's answer for `cid` through the node at `api` ({status, bytes}); it
    gives up after `seconds`."""
    done = subprocess.run(
        ["node", "fetch.mjs", api, cid, request, str(out), str(seconds)],
        cwd=tools, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_verified_fetch_reads_a_granted_blob_through_the_gateway(
    network: tuple[Path, str], tmp_path: Path
) -> None:
    people, api = network
    tools = interop_tools(tmp_path, "helia")
    home = ["--home", str(people), "--api", api]
    key = {p.stem: read_key_info(p).public_key.hex() for p in (people / "keys").glob("*.json")}
    ok("patient", "register", *home, "--key1", "p1", "--key2", "p2")
    created = ok(
        "vault", "create", *home, "--key1", "p1", "--key2", "p2", "--type", "glucose",
        "--team", key["hospital-a"], "--json",
    )  # fmt: skip
    vault = json.loads(created)["vault"]
    report = tmp_path / "cgm-report.bin"
    report.write_bytes(random.Random(SEED).randbytes(3 * 1024 * 1024 + 5))  # four leaves
    put = json.loads(
        ok("record", "put", *home, "--vault", vault, "--file", str(report),
           "--key", "p1", "--key", "p2", "--json")
    )  # fmt: skip
    assert put["status"] == "committed", put
    granted = ok(
        "grant", "add", *home, "--vault", vault, "--grantee", key["hospital-b"],
        "--days", "30", "--key", "p1", "--key", "p2",
    )  # fmt: skip
    grant_id = re.search(r"grant id ([0-9a-f]{64})", granted).group(1)  # type: ignore[union-attr]

    asked = json.loads(
        ok("blob", "request", *home, "--vault", vault, "--record", put["record"],
           "--key", "hospital-b", "--grant", grant_id, "--json")
    )  # fmt: skip
    assert asked["content_id"] == put["content_id"], asked
    assert asked["receipt_committed"], asked
    assert asked["url"] == f"{api}/ipfs/{put['content_id']}"
    out = tmp_path / "fetched.bin"
    answer = _fetch(tools, api, asked["content_id"], asked["request"], out)
    assert answer == {"status": 200, "bytes": asked["bytes"]}, f"seed {SEED}: {answer}"
    context = make_context(people, api, None)
    reader = load_key(people / "keys" / "hospital-b.json", None)
    vault_id, record_id = bytes.fromhex(vault), bytes.fromhex(put["record"])
    plaintext = decrypt_blob(context, reader, vault_id, record_id, out.read_bytes())
    assert plaintext == report.read_bytes(), f"seed {SEED}"

    # Hospital C has no grant: a request it signs gets no block, from the IPFS client or not.
    stranger = load_key(people / "keys" / "hospital-c.json", None)
    forged = BlobRequest(
        context.chain_id, stranger.public_key, vault_id, record_id, put["content_id"],
        context.now_ms(),
    ).signed_by(stranger)  # fmt: skip
    for request in (forged.encode().hex(), "-"):  # a stranger's request, and none at all
        refused_out = tmp_path / f"refused-{request[:8]}.bin"
        # every block refused (403), Helia looks for another provider until it gives up
        answer = _fetch(tools, api, put["content_id"], request, refused_out, seconds=5)
        assert answer == {"status": 504, "bytes": 0}, answer
        assert not refused_out.exists()
    client = Client(api)
    for request_bytes in (forged.encode(), None):
        with pytest.raises(ApiRequestError) as refused:
            client.gateway(put["content_id"], request_bytes, CAR)
        assert refused.value.status == 403
        assert refused.value.code == "not_authorised"
