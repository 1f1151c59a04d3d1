"""The patient agent's co-signing rules: which partial transactions a patient's key signs
automatically. The first matching rule decides; with no match the partial waits for the
patient. A partial an institution governance revoked initiated is never signed. Every
decision comes with the reason, for the agent's log.

The same file says what the agent does of its own accord (top-level settings, before the
first `[[rule]]`):
- `on_recovery`: a recovery of the patient's account pending on chain is always reported
  (an alert in the agent's log); with "cancel", the agent also cancels one that no patient key
  started (the slow path: a trusted party and a hospital), which is what a recovery the
  patient does not know of looks like. Default "alert": a patient whose key is lost may be
  recovering by that path on purpose, so the agent does not stop it unless told to.
- `rotate_after_revocation`: when governance revokes an institution that holds the current
  epoch key of one of the patient's vaults, the agent rotates that vault's epoch so the
  revoked key reads nothing written afterwards (default true).

Rules file (TOML):

    on_recovery = "alert"                  # or "cancel"
    rotate_after_revocation = true

    [[rule]]
    name = "hospital A may file CGM and glucose reports"
    institutions = ["<hex public key>"]   # who initiated (signed) the partial
    kinds = ["record.put"]
    data_types = ["cgm", "glucose"]        # optional: any type if absent
    max_size_bytes = 10485760              # optional
    decision = "sign"                      # or "refuse"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import pydantic

from carechain.config.loading import StrictModel, read_toml, validate
from carechain.consensus.ledger.apply import decode_body
from carechain.consensus.ledger.bodies import CreateVault, PutRecord
from carechain.consensus.ledger.errors import TxRejected
from carechain.consensus.types import Tx

HexKey = Annotated[str, pydantic.Field(pattern=r"^[0-9a-f]{64}$")]


class Rule(StrictModel):
    name: Annotated[str, pydantic.Field(min_length=1, max_length=128)]
    institutions: list[HexKey] = pydantic.Field(min_length=1)
    kinds: list[str] = pydantic.Field(min_length=1)
    data_types: list[str] | None = None
    max_size_bytes: Annotated[int, pydantic.Field(ge=0)] | None = None
    decision: Literal["sign", "refuse"] = "sign"


class RuleFile(StrictModel):
    on_recovery: Literal["alert", "cancel"] = "alert"
    rotate_after_revocation: bool = True
    rule: list[Rule] = pydantic.Field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    sign: bool
    reason: str


def load_rule_file(path: Path) -> RuleFile:
    return validate(RuleFile, read_toml(path), path)


def load_rules(path: Path) -> list[Rule]:
    return load_rule_file(path).rule


def _facts(tx: Tx) -> Mapping[str, object]:
    try:
        body = decode_body(tx)
    except TxRejected:
        return {}
    if isinstance(body, PutRecord):
        return {"data_type": body.data_type, "size": body.size_bytes}
    if isinstance(body, CreateVault):
        return {"data_type": body.data_type}
    return {}


def decide(
    rules: list[Rule],
    tx: Tx,
    patient_keys: frozenset[bytes],
    revoked: frozenset[bytes] = frozenset(),
    stands_for: Mapping[bytes, bytes] | None = None,
) -> Decision:
    """Should the patient's agent co-sign this partial transaction? `revoked`: the keys of
    institutions governance revoked; `stands_for`: the institution (its first key, which the
    rules name) each signing key acts for, b"" for a key an institution rotated away from."""
    mapped = stands_for or {}
    raw = {s.public_key for s in tx.signatures if s.public_key not in patient_keys}
    if any(mapped.get(key) == b"" for key in raw):
        return Decision(False, "signed with a key its institution rotated away from")
    signers = {mapped.get(key, key) for key in raw}
    if signers & revoked:
        names = sorted(key.hex()[:16] for key in signers & revoked)
        return Decision(False, f"initiated by a revoked institution ({', '.join(names)})")
    initiators = {key.hex() for key in signers}
    if not initiators:
        return Decision(False, "no institution signed it; the patient decides in person")
    facts = _facts(tx)
    for rule in rules:
        if not initiators & set(rule.institutions) or tx.kind not in rule.kinds:
            continue
        if rule.data_types is not None and facts.get("data_type") not in rule.data_types:
            continue
        size = facts.get("size")
        if rule.max_size_bytes is not None and (
            not isinstance(size, int) or size > rule.max_size_bytes
        ):
            continue
        return Decision(rule.decision == "sign", f"rule {rule.name!r}: {rule.decision}")
    return Decision(False, "no rule matches; left for the patient")
