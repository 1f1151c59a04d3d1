"""Security promises not shown elsewhere, end to end. The whole security suite is every test
marked `security` (`pytest -m security`): an unregistered peer can neither connect nor inject
(tests/integration/test_p2p.py), a blob fetch needs a grant (same file), an expired grant stops
at its block time and a revoked grantee cannot read later records
(tests/unit/test_ledger_kinds.py, test_ledger_promises.py), a tampered blob is refused
(tests/contract/test_blobs.py), a wrong passphrase yields nothing (tests/unit/test_keystore.py),
a malformed peer message never crashes a node (tests/fuzz/), a validator never signs twice
after losing its WAL (tests/integration/test_nodes.py); and here: an emergency access without
the trusted party is refused while every emergency shows in the audit report, and the API of a
node started with the default configuration listens on loopback only."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from carechain.cli.main import cli
from carechain.cli.nodes import spawn, wait_for_api
from carechain.config.genesis import save_genesis
from carechain.config.node import load_node_config, save_node_config
from carechain.consensus.crypto import PrivateKey, encode_address
from carechain.consensus.ledger.apply import apply_block
from carechain.consensus.ledger.records import EmergencyStatus, InstitutionAction
from carechain.consensus.types import (
    Block,
    CommitCertificate,
    CommitSignature,
    Tx,
    Vote,
    VoteType,
)
from carechain.node.local_chain import LocalChain
from carechain.node.wallet import builders
from carechain.node.wallet.client import ApiRequestError
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.ledger_world import CHAIN_ID, GENESIS_TIME_MS, World
from carechain.tests.strategies import deterministic_key
from carechain.tests.unit.test_ledger_kinds import _emergency

pytestmark = pytest.mark.security


class CertifiedWorld(World):
    """The ledger test world, each of whose blocks is also committed, certified by three of
    its four validators, into a node's chain store: what an auditor replays."""

    def attach(self, store: ChainStore) -> None:
        ticks = itertools.count(GENESIS_TIME_MS + 1000, 1000)
        self.chain_store = store
        self.local = LocalChain(MemoryKV(), self.genesis, None, lambda: next(ticks))

    def block(self, *txs: Tx, advance_ms: int = 1000) -> bytes:
        root = super().block(*txs, advance_ms=advance_ms)
        made = self.local.commit(*txs)
        diff = apply_block(self.chain_store, made, self.local.chain)
        self.chain_store.commit(made, self._certify(made), diff)
        return root

    def _certify(self, block: Block) -> CommitCertificate:
        entries = []
        for key in sorted(self.validator_keys[:3], key=lambda k: k.public_key):
            vote = Vote(
                CHAIN_ID, VoteType.PRECOMMIT, block.header.height, 0, block.block_hash,
                key.public_key,
            ).signed_by(key)  # fmt: skip
            entries.append(CommitSignature(vote.validator, vote.signature))
        return CommitCertificate(block.header.height, 0, block.block_hash, tuple(entries))


@contextlib.contextmanager
def _audited_world(home: Path, world: CertifiedWorld | None = None) -> Iterator[CertifiedWorld]:
    """A world whose blocks go into the chain store of an auditor's `home` (its genesis
    beside it); the store is closed when the block ends, for `audit` to open. `world`: one
    used before, to add blocks after an audit."""
    fresh = world is None
    world = CertifiedWorld() if world is None else world
    if fresh:
        save_genesis(home / "genesis.json", world.genesis)
    store = ChainStore.open(home / "data" / "chain", world.genesis)
    try:
        if fresh:
            world.attach(store)
        world.chain_store = store
        yield world
    finally:
        store.close()


def test_an_emergency_needs_the_trusted_party_and_every_one_shows_in_the_audit_report(
    tmp_path: Path,
) -> None:
    home = tmp_path / "auditor"
    with _audited_world(home) as world:
        vault = world.create_vault()
        world.put_record(vault)
        alone = _emergency(world, vault, world.hospital["C"])
        assert world.reject(alone).code == "policy_not_satisfied"
        opened = []
        for reason in ("unconscious", "life-threatening", "patient-unreachable"):
            tx = _emergency(world, vault, reason=reason)
            world.block(tx)
            opened.append(tx.id)
        review = builders.review_emergency(
            CHAIN_ID, vault, world.nonce(vault), world.expiry(), emergency_id=opened[0],
            verdict=EmergencyStatus.APPROPRIATE, note="confirmed by the patient",
        )  # fmt: skip
        world.block(review.signed(world.p1, world.p2))
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    listed = [(e["id"], e["status"]) for e in report["emergencies"]]
    assert sorted(i for i, _ in listed) == sorted(i.hex() for i in opened)
    assert [s for _, s in listed] == ["unreviewed", "unreviewed", "appropriate"]


def _listening(pid: int, port: int) -> set[str]:
    process = psutil.Process(pid)
    sockets: list[Any] = process.net_connections(kind="tcp")
    return {c.laddr.ip for c in sockets if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_a_node_with_the_default_api_config_listens_on_loopback_only_without_console(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hospital"
    init = CliRunner().invoke(
        cli,
        ["init", "--home", str(home), "--validator", "--new-chain", "carechain-loopback",
         "--moniker", "h", "--insecure-plaintext"],
    )  # fmt: skip
    assert init.exit_code == 0, init.output
    config = load_node_config(home)
    assert config.api.listen.startswith("127.0.0.1:")  # nothing configured: the default
    p2p = config.p2p.model_copy(
        update={"listen": "/ip4/127.0.0.1/tcp/29901", "heartbeat_listen": "127.0.0.1:29902"}
    )
    save_node_config(home, config.model_copy(update={"p2p": p2p}))
    process = spawn(home, home / "node.log")
    try:
        client = wait_for_api(home, process)
        port = int(client.base_url.rsplit(":", 1)[1])
        assert _listening(process.pid, port) == {"127.0.0.1"}
        with pytest.raises(ApiRequestError) as absent:  # the web console is off by default
            client.get("/console/")
        assert absent.value.status == 404
    finally:
        process.terminate()
        process.wait(30)


def _recovery_start(world: World, *signers: PrivateKey) -> Tx:
    draft = builders.start_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.expiry(),
        lost=world.p2.public_key, replacement=deterministic_key(900).public_key,
    )  # fmt: skip
    return draft.signed(*signers)


def test_hospitals_together_cannot_recover_a_patients_account() -> None:
    world = World()
    world.create_vault(team=("A", "B", "C"))
    every_hospital = [world.hospital[name] for name in "ABC"]
    assert world.reject(_recovery_start(world, *every_hospital)).code == "policy_not_satisfied"
    with_the_lost_key = _recovery_start(world, *every_hospital, world.p2)
    assert world.reject(with_the_lost_key).code == "policy_not_satisfied"


def test_a_trusted_party_alone_cannot_recover_a_patients_account() -> None:
    world = World()
    world.create_vault(team=("A",))
    assert world.reject(_recovery_start(world, world.trusted)).code == "policy_not_satisfied"
    not_on_the_team = _recovery_start(world, world.trusted, world.hospital["B"])
    assert world.reject(not_on_the_team).code == "policy_not_satisfied"
    with_the_lost_key = _recovery_start(world, world.trusted, world.p2)
    assert world.reject(with_the_lost_key).code == "policy_not_satisfied"


def test_the_audit_report_lists_every_recovery_step_and_each_pending_one(tmp_path: Path) -> None:
    """A recovery an auditor should see: the steps on chain, and a slow one still pending (in
    the human report in red) that the patient can still cancel."""
    home = tmp_path / "auditor"
    with _audited_world(home) as world:
        world.create_vault(team=("A",))
        world.block(_recovery_start(world, world.trusted, world.hospital["A"]))
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (step,) = report["recoveries"]
    assert step["kind"] == "recovery.start"
    assert step["lost"] == world.p2.public_key.hex()
    assert sorted(step["signers"]) == sorted(
        k.public_key.hex() for k in (world.trusted, world.hospital["A"])
    )
    (pending,) = report["pending_recoveries"]
    assert (pending["path"], pending["lost"]) == ("slow", world.p2.public_key.hex())
    human = CliRunner().invoke(cli, ["audit", "report", "--home", str(home)])
    assert "1 pending" in human.output
    assert "PENDING (slow path)" in human.output
    address = encode_address(world.patient)
    access = CliRunner().invoke(
        cli, ["audit", "access", "--home", str(home), "--patient", address, "--json"]
    )
    assert access.exit_code == 0, access.output
    (event,) = [e for e in json.loads(access.output) if e["kind"] == "recovery"]
    assert event["detail"]["status"] == "pending", "the patient's timeline shows it"
    assert event["detail"]["replacement"] == deterministic_key(900).public_key.hex()


def test_the_audit_report_lists_vaults_a_revoked_hospital_still_reads_until_rotated(
    tmp_path: Path,
) -> None:
    """Governance revokes hospital A (a stolen key): A holds the current key of its team's
    vault, and the report says so (in red for a person) until the patient rotates the epoch."""
    home = tmp_path / "auditor"
    with _audited_world(home) as world:
        vault = world.create_vault(team=("A",))
        world.create_vault("cgm", team=("B",))
        world.govern_institution(InstitutionAction.REVOKE, "A")
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert result.exit_code == 0, result.output
    (stale,) = json.loads(result.output)["readable_by_revoked"]
    assert (stale["vault"], stale["epoch"]) == (vault.hex(), 1)
    assert stale["revoked_keys"] == [world.hospital["A"].public_key.hex()]
    human = CliRunner().invoke(cli, ["audit", "report", "--home", str(home)])
    assert "vaults still readable by a revoked institution's key: 1" in human.output
    with _audited_world(home, world) as same:
        members = set(same.vault(vault).members) - {same.hospital["A"].public_key}
        same.block(same.rotate(vault, members))
    result = CliRunner().invoke(cli, ["audit", "report", "--home", str(home), "--json"])
    assert json.loads(result.output)["readable_by_revoked"] == []
