"""The light client's shell over sources that serve synthetic chains: trust kept on disk and
reused, a witness on another certified history caught as a fork with its evidence kept, a
witness that lies about a header ignored with a warning, and malformed answers refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from carechain.consensus.ledger.state import Table
from carechain.consensus.light.verifier import LightBlock, VerificationError
from carechain.node.light.client import (
    ForkDetected,
    LightClient,
    LightStoreError,
    NodeSource,
)
from carechain.node.wallet.client import Client
from carechain.tests.light_fixture import SyntheticChain, synthetic_chain


class ChainSource(NodeSource):
    """A node that serves a synthetic chain (and no state)."""

    def __init__(self, chain: SyntheticChain, name: str) -> None:
        super().__init__(Client(f"http://{name}.invalid"))
        self.chain = chain
        self.served: list[int] = []

    def head(self) -> int:
        return self.chain.head

    def light_block(self, height: int) -> LightBlock:
        self.served.append(height)
        return self.chain.blocks[height]

    def proved(self, table: Table, key: bytes, height: int) -> dict[str, Any]:
        return {"height": height, "header": None, "value": "zz", "proof": {}}


def _client(home: Path, primary: SyntheticChain, *witnesses: SyntheticChain) -> LightClient:
    return LightClient(
        primary.genesis,
        home,
        ChainSource(primary, "primary"),
        [ChainSource(chain, f"witness{i}") for i, chain in enumerate(witnesses)],
        clock_ms=primary.time_after,
    )


def test_trust_is_kept_on_disk_and_reused(tmp_path: Path) -> None:
    chain = synthetic_chain(500, changes=4)
    first = _client(tmp_path, chain, chain)
    trusted = first.sync()
    assert trusted.height == 500
    again = _client(tmp_path, chain)
    assert again.store.newest == trusted
    assert again.sync() == trusted
    assert again.primary.served == []  # type: ignore[attr-defined]
    other = synthetic_chain(10, changes=0, seed=2, first_key=700_000)
    with pytest.raises(LightStoreError, match="another genesis"):
        _client(tmp_path, other)


def test_a_witness_on_another_certified_history_is_a_fork(tmp_path: Path) -> None:
    chain = synthetic_chain(60, changes=1, seed=4)
    forked = synthetic_chain(60, changes=1, seed=5)  # the same validators signed another history
    assert forked.genesis == chain.genesis
    client = _client(tmp_path, chain, forked)
    with pytest.raises(ForkDetected, match="two different headers"):
        client.sync()
    evidence = json.loads((tmp_path / "evidence-60.json").read_text())
    assert evidence["primary"]["header"] != evidence["witness"]["header"]
    assert client.store.newest.height == 0, "nothing is trusted from a forked sync"


def test_a_witness_whose_header_fails_is_ignored_with_a_warning(tmp_path: Path) -> None:
    chain = synthetic_chain(40, changes=0)
    liar = dataclasses.replace(chain, blocks=dict(chain.blocks))
    last = chain.blocks[40]
    liar.blocks[40] = LightBlock(
        dataclasses.replace(last.header, state_root=b"\x05" * 32), last.certificate, last.validators
    )
    client = _client(tmp_path, chain, liar)
    assert client.sync().height == 40
    assert any("witness0" in warning for warning in client.warnings)


def test_a_malformed_proved_entry_is_refused(tmp_path: Path) -> None:
    chain = synthetic_chain(5, changes=0)
    client = _client(tmp_path, chain)
    with pytest.raises(VerificationError, match="malformed"):
        client.get(Table.ACCOUNT, b"\x01" * 20)
