"""A recovery's finish from the signers' wallet, against a ledger in one process: a patient with
more epochs than one transaction can carry is recovered in a finish that defers the past
epochs' keys, then `epoch.share` transactions hand them to the new key, which reads the first
record again; run again, nothing more is sent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from carechain.consensus.genesis import ConsensusParams
from carechain.node.wallet.client import ApiRequestError
from carechain.node.wallet.context import FlowContext
from carechain.node.wallet.patient_actions import read_record
from carechain.node.wallet.recovery_actions import (
    finish_recovery,
    fits,
    share_missing_epochs,
    start_recovery,
)
from carechain.tests.ledger_world import World
from carechain.tests.strategies import deterministic_key
from carechain.tests.world_node import WorldNode

REPLACEMENT = deterministic_key(779)


def test_a_finish_too_large_for_one_transaction_hands_the_past_epochs_over_after(
    tmp_path: Path,
) -> None:
    world = World(params=dataclasses.replace(ConsensusParams(), max_tx_bytes=2048))
    vault = world.create_vault(team=("A",))
    first = world.put_record(vault, plaintext=b"glucose 5.0 mmol/L, the first")
    for _ in range(30):
        world.block(world.rotate(vault, set(world.vault(vault).members)))
    context = FlowContext(tmp_path, WorldNode(world), None)
    signers = [world.p1, world.trusted]
    lost, patient = world.p2.public_key, world.patient
    context.send(start_recovery(context, signers, patient, lost, REPLACEMENT.public_key))
    whole = finish_recovery(context, signers, patient)
    assert not fits(context, whole)
    with pytest.raises(ApiRequestError) as refused:
        context.send(whole)
    assert refused.value.code == "oversize"
    context.send(finish_recovery(context, signers, patient, defer_old_epochs=True))
    assert world.vault(vault).epoch == 32
    shared = share_missing_epochs(context, signers, patient, REPLACEMENT.public_key, batch=8)
    assert shared == 31, "epochs 1..31: the finish sealed epoch 32 to the new key itself"
    assert read_record(context, REPLACEMENT, vault, first) == b"glucose 5.0 mmol/L, the first"
    assert share_missing_epochs(context, signers, patient, REPLACEMENT.public_key) == 0
