"""What the patient's and institutions' side does when the chain moves under a transaction
that must match it exactly: a vault's key sealed to members that changed is built again."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest

from carechain.consensus.errors import InvalidInput
from carechain.consensus.types import Tx
from carechain.node.wallet.client import ApiRequestError, Client
from carechain.node.wallet.context import FlowContext, unique_id


@dataclasses.dataclass
class RefusingNode:
    """A node that refuses the first `refusals` transactions with `bad_members` (the members
    changed under them) and commits the rest; its height moves on each time it is asked."""

    refusals: int
    height: int = 5
    submitted: list[str] = dataclasses.field(default_factory=list)

    def status(self) -> dict[str, Any]:
        self.height += 1
        return {"height": self.height}

    def submit(self, tx: Any) -> dict[str, Any]:
        self.submitted.append(str(tx))
        if len(self.submitted) <= self.refusals:
            raise ApiRequestError(400, "bad_members", "must seal the epoch key to exactly ...")
        return {"id": str(tx), "status": "pending"}

    def wait_committed(self, tx_id: Any) -> dict[str, Any]:
        return {"id": str(tx_id), "status": "committed", "height": self.height}


def _context(node: RefusingNode) -> FlowContext:
    return FlowContext(Path("/nonexistent"), cast(Client, node), None)


@dataclasses.dataclass(frozen=True)
class Built:
    """Stands for a transaction: what the node sees of it is its name and id."""

    id: str

    def __str__(self) -> str:
        return self.id


def _builder() -> Any:
    built = iter(range(100))
    return lambda: cast(Tx, Built(f"tx-{next(built)}"))


def test_a_sealed_transaction_refused_for_its_members_is_built_again_once() -> None:
    node = RefusingNode(refusals=1)
    answer = _context(node).send_sealed(_builder())
    assert node.submitted == ["tx-0", "tx-1"], "built again from the state after the refusal"
    assert answer["status"] == "committed"


def test_a_second_refusal_says_why_and_when_to_retry() -> None:
    node = RefusingNode(refusals=2)
    with pytest.raises(InvalidInput) as raised:
        _context(node).send_sealed(_builder())
    assert raised.value.code == "bad_members"
    assert "after the next block" in str(raised.value)
    assert len(node.submitted) == 2


def test_other_refusals_are_not_retried() -> None:
    node = RefusingNode(refusals=0)

    def refused() -> Tx:
        raise ApiRequestError(400, "bad_nonce", "spent")

    with pytest.raises(ApiRequestError):
        _context(node).send_sealed(refused)


def test_an_id_is_named_whole_or_by_a_unique_prefix_of_eight_or_more() -> None:
    first, second = bytes.fromhex("ab" * 32), bytes.fromhex("abcd" + "00" * 30)
    ids = [first, second]
    assert unique_id("ab" * 32, ids, 32, "--grant") == first
    assert unique_id("ABABABAB", ids, 32, "--grant") == first
    assert unique_id("abcd0000", ids, 32, "--grant") == second
    for text, problem in (
        ("abab", "at least 8"),
        ("zzzzzzzz", "at least 8"),
        ("ffffffff", "no such id"),
    ):
        with pytest.raises(InvalidInput, match=problem):
            unique_id(text, ids, 32, "--grant")
    twins = [bytes.fromhex("12345678" + "00" * 28), bytes.fromhex("12345678" + "11" * 28)]
    with pytest.raises(InvalidInput, match="names 2 ids"):
        unique_id("12345678", twins, 32, "--grant")
