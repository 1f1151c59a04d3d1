"""The patient agent's co-signing rules, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from carechain.config.loading import ConfigError
from carechain.node.wallet.agent_rules import Rule, decide, load_rules
from carechain.tests.ledger_world import World

RULES_TOML = """
[[rule]]
name = "A files CGM up to 10 MB"
institutions = ["{a}"]
kinds = ["record.put"]
data_types = ["glucose"]
max_size_bytes = 100

[[rule]]
name = "never let C write"
institutions = ["{c}"]
kinds = ["record.put"]
decision = "refuse"
"""


@pytest.fixture
def world() -> World:
    return World()


def _rules(world: World, tmp_path: Path) -> list[Rule]:
    path = tmp_path / "rules.toml"
    path.write_text(
        RULES_TOML.format(
            a=world.hospital["A"].public_key.hex(), c=world.hospital["C"].public_key.hex()
        )
    )
    return load_rules(path)


CASES = [
    ("A", b"small", True, "A files CGM"),
    ("A", b"x" * 101, False, "no rule matches"),
    ("B", b"small", False, "no rule matches"),
    ("C", b"small", False, "never let C write"),
]


@pytest.mark.parametrize(("initiator", "plaintext", "sign", "reason"), CASES)
def test_decisions(
    world: World, tmp_path: Path, initiator: str, plaintext: bytes, sign: bool, reason: str
) -> None:
    rules = _rules(world, tmp_path)
    vault = world.create_vault()
    tx = world.record_draft(vault, plaintext).signed(world.hospital[initiator])
    decision = decide(rules, tx, frozenset(world.patient_keys))
    assert decision.sign is sign
    assert reason in decision.reason


def test_a_partial_only_the_patient_signed_is_left_to_the_patient(
    world: World, tmp_path: Path
) -> None:
    vault = world.create_vault()
    tx = world.record_draft(vault).signed(world.p1)
    decision = decide(_rules(world, tmp_path), tx, frozenset(world.patient_keys))
    assert not decision.sign
    assert "patient decides" in decision.reason


def test_other_kinds_do_not_match(world: World, tmp_path: Path) -> None:
    vault = world.create_vault()
    tx = world.grant_draft(vault).signed(world.hospital["A"])
    assert not decide(_rules(world, tmp_path), tx, frozenset(world.patient_keys)).sign


def test_bad_rules_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nname = "x"\ninstitutions = ["nothex"]\nkinds = ["record.put"]\n')
    with pytest.raises(ConfigError, match=r"rule\[0\]\.institutions\[0\]"):
        load_rules(path)


def test_a_rotated_hospital_is_matched_by_its_first_key_and_a_retired_key_never(
    world: World, tmp_path: Path
) -> None:
    """Rules name hospitals by the key that names them on chain: a partial signed with A's
    key now matches A's rule; one signed with a key A rotated away from, or by a revoked
    hospital, is never signed."""
    rules, vault = _rules(world, tmp_path), world.create_vault()
    now, first = world.hospital["B"], world.hospital["A"].public_key  # B's key plays A's new one
    tx = world.record_draft(vault, b"small").signed(now)
    patients = frozenset(world.patient_keys)
    assert decide(rules, tx, patients, stands_for={now.public_key: first}).sign
    retired = decide(rules, tx, patients, stands_for={now.public_key: b""})
    assert (retired.sign, "rotated away" in retired.reason) == (False, True)
    revoked = decide(rules, tx, patients, frozenset({first}), {now.public_key: first})
    assert (revoked.sign, "revoked" in revoked.reason) == (False, True)
