"""What the patient's agent does of its own accord, against a ledger in one process: it reports
a pending recovery of the patient's account, cancels one no patient key started only when its
rules say so, rotates the epoch of each vault whose key a revoked institution still holds
(once, or as one partial for the other key), and never co-signs what a revoked institution
initiated."""

from __future__ import annotations

from pathlib import Path

from carechain.consensus import crypto
from carechain.consensus.ledger.records import InstitutionAction, Recovery, Vault
from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.types import Tx, TxSignature
from carechain.node.wallet import builders
from carechain.node.wallet.agent_duties import agent_pass, decision_id
from carechain.node.wallet.context import FlowContext
from carechain.tests.ledger_world import CHAIN_ID, World
from carechain.tests.strategies import deterministic_key
from carechain.tests.world_node import WorldNode

REPLACEMENT = deterministic_key(778)


def _setup(tmp_path: Path, settings: str = "") -> tuple[World, WorldNode, FlowContext, Path]:
    world = World()
    world.create_vault("glucose", team=("A",))
    world.create_vault("cgm", team=("A", "B"))
    node = WorldNode(world)
    rules = tmp_path / "rules.toml"
    rules.write_text(settings)
    return world, node, FlowContext(tmp_path, node, None), rules


def _start_recovery(world: World, node: WorldNode, *signers: crypto.PrivateKey) -> None:
    draft = builders.start_recovery(
        CHAIN_ID, world.patient, world.nonce(world.patient), world.time_ms + 86_400_000,
        lost=world.p2.public_key, replacement=REPLACEMENT.public_key,
    )  # fmt: skip
    assert node.submit(draft.signed(*signers))["status"] == "committed"


def _pending(world: World) -> Recovery | None:
    return Overlay(world.store).load(Table.RECOVERY, world.patient, Recovery)


def test_a_recovery_no_patient_key_started_is_reported_and_cancelled_only_when_told(
    tmp_path: Path,
) -> None:
    world, node, context, rules = _setup(tmp_path)
    _start_recovery(world, node, world.trusted, world.hospital["A"])  # the slow path
    [alert] = agent_pass(context, [world.p1, world.p2], rules)
    assert alert["alert"] == "recovery_pending"
    assert (alert["signed"], alert["path"]) == (False, "slow")
    assert "may finish from" in str(alert["reason"])
    assert decision_id(alert) == f"recovery@{world.height}"
    assert _pending(world) is not None, "by default the agent only alerts"
    rules.write_text('on_recovery = "cancel"\n')
    [cancel] = agent_pass(context, [world.p1, world.p2], rules)
    assert (cancel["kind"], cancel["signed"]) == ("recovery.cancel", True)
    assert cancel["tx"] in {tx.hex() for tx in node.committed}
    assert _pending(world) is None
    assert agent_pass(context, [world.p1, world.p2], rules) == []


def test_the_patients_own_recovery_is_never_cancelled(tmp_path: Path) -> None:
    world, node, context, rules = _setup(tmp_path, 'on_recovery = "cancel"\n')
    _start_recovery(world, node, world.p1, world.trusted)  # the fast path: key 1 is there
    [alert] = agent_pass(context, [world.p1], rules)
    assert (alert["path"], alert["signed"]) == ("fast", False)
    assert "the patient's own key" in str(alert["reason"])
    assert _pending(world) is not None


def test_after_a_revocation_the_agent_rotates_each_vault_the_revoked_key_could_read(
    tmp_path: Path,
) -> None:
    world, _, context, rules = _setup(tmp_path)
    glucose = {v.data_type: v for v in _vaults(world)}["glucose"]
    world.block(world.grant_draft(glucose.vault_id, "C").signed(world.p1, world.p2))
    world.govern_institution(InstitutionAction.REVOKE, "C")  # C reads glucose by its grant
    world.govern_institution(InstitutionAction.REVOKE, "B")  # B is on cgm's team
    decisions = agent_pass(context, [world.p1, world.p2], rules)
    assert sorted((d["kind"], d["signed"]) for d in decisions) == [("epoch.rotate", True)] * 2
    revoked = {world.hospital["B"].public_key, world.hospital["C"].public_key}
    for vault in _vaults(world):
        assert vault.epoch == 2, vault.data_type
        assert not set(vault.members) & revoked
        assert world.hospital["A"].public_key in vault.members
    assert agent_pass(context, [world.p1, world.p2], rules) == [], "nothing more to rotate"


def test_with_one_key_the_rotation_waits_once_for_the_other(tmp_path: Path) -> None:
    world, node, context, rules = _setup(tmp_path)
    world.govern_institution(InstitutionAction.REVOKE, "B")
    [first] = agent_pass(context, [world.p1], rules)
    assert "waits for the patient's other key" in str(first["reason"])
    [again] = agent_pass(context, [world.p1], rules)
    assert again["tx"] == first["tx"], "the waiting rotation is not sent twice"
    assert len(node.partial_txs) == 1
    cgm = {v.data_type: v for v in _vaults(world)}["cgm"]
    assert cgm.epoch == 1
    tx = node.partial_txs[bytes.fromhex(str(first["tx"]))]
    signature = world.p2.sign(crypto.Purpose.TX, tx.chain_id, tx.id)
    assert node.cosign(tx.id, TxSignature(world.p2.public_key, signature))["status"] == (
        "committed"
    )
    assert {v.data_type: v for v in _vaults(world)}["cgm"].epoch == 2


def test_rotation_after_revocation_can_be_turned_off(tmp_path: Path) -> None:
    world, _, context, rules = _setup(tmp_path, "rotate_after_revocation = false\n")
    world.govern_institution(InstitutionAction.REVOKE, "B")
    assert agent_pass(context, [world.p1, world.p2], rules) == []


def test_a_partial_a_revoked_institution_initiated_is_never_cosigned(tmp_path: Path) -> None:
    hospital = World().hospital["A"].public_key.hex()
    world, node, context, rules = _setup(
        tmp_path,
        f'[[rule]]\nname = "A files"\ninstitutions = ["{hospital}"]\nkinds = ["record.put"]\n',
    )
    glucose = {v.data_type: v for v in _vaults(world)}["glucose"]
    put = world.record_draft(glucose.vault_id).signed(world.hospital["A"])
    assert node.submit(put)["status"] == "partial"
    world.govern_institution(InstitutionAction.REVOKE, "A")
    decisions = agent_pass(context, [world.p1], rules, refused=frozenset())
    [refusal] = [d for d in decisions if d["tx"] == put.id.hex()]
    assert refusal["signed"] is False
    assert "revoked institution" in str(refusal["reason"])
    assert put.id not in node.committed


def _vaults(world: World) -> list[Vault]:
    state = Overlay(world.store)
    found = []
    for _, vault_id in world.store.table_entries(Table.PATIENT_VAULT, world.patient):
        vault = state.load(Table.VAULT, vault_id, Vault)
        assert vault is not None
        found.append(vault)
    return found


def _rotated_a(tmp_path: Path, seed: int) -> tuple[World, WorldNode, FlowContext, Path, Tx]:
    """A rule for hospital A's records; A rotates to a new key (from `seed`) and sends a
    glucose record signed by it, which waits as a partial."""
    hospital = World().hospital["A"].public_key.hex()
    world, node, context, rules = _setup(
        tmp_path,
        f'[[rule]]\nname = "A files"\ninstitutions = ["{hospital}"]\nkinds = ["record.put"]\n',
    )
    new_key = deterministic_key(seed)
    a = world.hospital["A"]
    account = crypto.account_id(a.public_key)
    rotation = builders.rotate_institution_key(
        CHAIN_ID, account, world.nonce(account), world.expiry(), new_key.public_key
    )
    world.block(rotation.signed(a, new_key))
    glucose = {v.data_type: v for v in _vaults(world)}["glucose"]
    put = world.record_draft(glucose.vault_id).signed(new_key)
    assert node.submit(put)["status"] == "partial"
    return world, node, context, rules, put


def test_a_rule_naming_a_hospital_follows_it_to_its_new_key(tmp_path: Path) -> None:
    world, node, context, rules, by_new_key = _rotated_a(tmp_path, 790)
    decisions = {d["tx"]: d for d in agent_pass(context, [world.p1], rules)}
    assert decisions[by_new_key.id.hex()]["signed"] is True
    assert by_new_key.id in node.committed


def test_a_revoked_institution_signing_with_its_rotated_key_is_still_refused(
    tmp_path: Path,
) -> None:
    """The agent looks a signer up as the institution it stands for: a hospital revoked after
    rotating its key does not slip past as its new key."""
    world, node, context, rules, put = _rotated_a(tmp_path, 791)
    world.govern_institution(InstitutionAction.REVOKE, "A")
    decisions = {d["tx"]: d for d in agent_pass(context, [world.p1], rules)}
    assert decisions[put.id.hex()]["signed"] is False
    assert "revoked institution" in str(decisions[put.id.hex()]["reason"])
    assert put.id not in node.committed
