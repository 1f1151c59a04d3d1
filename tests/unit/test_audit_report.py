"""The auditor's report says what each governance change was, not only how many there were."""

from __future__ import annotations

import pytest

from carechain.consensus.crypto import PrivateKey
from carechain.consensus.genesis import Institution, InstitutionKind
from carechain.consensus.ledger.records import InstitutionAction, ValidatorAction
from carechain.consensus.types import Tx, Validator
from carechain.node.audit.archive import governance_change
from carechain.node.wallet import builders

KEY = PrivateKey(bytes([7]) * 32).public_key
CHAIN = "carechain-test"


@pytest.mark.parametrize(
    ("tx", "said"),
    [
        (
            builders.change_institution(
                CHAIN, 2, 10**12, InstitutionAction.REGISTER,
                Institution("lab-one", InstitutionKind.LAB, KEY),
            ).unsigned(),
            f'register lab "lab-one" (key {KEY.hex()[:12]}...)',
        ),
        (
            builders.change_validator(
                CHAIN, 3, 10**12, ValidatorAction.ADD, Validator("v5", KEY, KEY, 10)
            ).unsigned(),
            f'add validator "v5" with power 10 (key {KEY.hex()[:12]}...)',
        ),
        (
            builders.change_validator(
                CHAIN, 4, 10**12, ValidatorAction.REMOVE, Validator("v2", KEY, KEY, 10)
            ).unsigned(),
            f'remove validator "v2" (key {KEY.hex()[:12]}...)',
        ),
    ],
)  # fmt: skip
def test_each_governance_change_is_said_in_words(tx: Tx, said: str) -> None:
    assert governance_change(tx) == said
