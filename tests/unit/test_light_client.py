"""The light client's shell over sources that serve synthetic chains: trust kept on disk and
reused, a witness on another certified history caught as a fork with its evidence kept, a
witness that lies about a header ignored with a warning, and malformed answers refused."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carechain.consensus.genesis import Genesis
from carechain.consensus.ledger.context import ChainContext
from carechain.consensus.ledger.state import StateReader, Table
from carechain.consensus.light.verifier import LightBlock, VerificationError
from carechain.node.light.client import (
    ForkDetected,
    LightClient,
    LightStoreError,
    NodeSource,
)
from carechain.node.light.lists import ITEMS, list_query
from carechain.node.wallet.client import Client
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.chain_fixture import committee_chain, committee_genesis
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

    def proved(self, table: Table, key: bytes, height: int) -> Any:
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


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**70) | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


class StoreSource(NodeSource):
    """A node serving a real chain store, its proved entries bent by `bend` first."""

    def __init__(self, store: ChainStore, genesis: Genesis) -> None:
        super().__init__(Client("http://store.invalid"))
        self.store = store
        self.genesis = genesis
        self.bend: Callable[[dict[str, Any]], Any] = lambda answer: answer
        self.lists: dict[str, tuple[str, bytes]] = {}

    def head(self) -> int:
        return self.store.height

    def light_block(self, height: int) -> LightBlock:
        block = self.store.block(height)
        return LightBlock(block.header, self.store.certificate(height), self.genesis.validators)

    def proved(self, table: Table, key: bytes, height: int) -> Any:
        proof, value, _ = self.store.state.prove(table, key, height)
        answer = {
            "height": height,
            "value": None if value is None else value.hex(),
            "proof": proof.to_json(),
            "header": self.store.block(height).header.encode().hex(),
            "certificate": self.store.certificate_bytes(height).hex(),
        }
        return self.bend(json.loads(json.dumps(answer)))

    def proved_set(self, path: str, height: int) -> Any:
        """What an honest node answers for a list route: the entries its query reads."""
        kind, entry = self.lists[path]
        reads = self.store.state.prover_at(height)
        list_query(kind, entry, self.genesis)[1](reads)
        answer = {
            "height": height,
            "header": self.store.block(height).header.encode().hex(),
            "certificate": self.store.certificate_bytes(height).hex(),
            "entries": reads.entries_json(),
        }
        return self.bend(json.loads(json.dumps(answer)))

    def serve(self, kind: str, entry: bytes) -> tuple[str, Callable[[StateReader], Any]]:
        """The path and query of list `kind`, served by `proved_set`."""
        path, read = list_query(kind, entry, self.genesis)
        self.lists[path] = (kind, entry)
        return path, read


@functools.cache
def _served() -> tuple[ChainStore, Genesis, bytes, bytes]:
    genesis = committee_genesis()
    store = ChainStore(MemoryKV())
    store.state.initialize(genesis)
    committee_chain(store, 3)
    account, value = next(iter(store.table_entries(Table.ACCOUNT)))
    return store, genesis, account, value


def _store_client(
    store: ChainStore, genesis: Genesis, source: StoreSource, home: Path
) -> LightClient:
    """A light client of `source`, its clock just after the store's head."""
    clock = store.block(store.height).header.time_ms + 1000
    return LightClient(genesis, home, source, clock_ms=lambda: clock)


def _bend(data: st.DataObject) -> Callable[[dict[str, Any]], Any]:
    """One way to change a node's answer: a field replaced, dropped, or one hex digit flipped
    (in the value, or in a sibling of the proof)."""
    how = data.draw(st.sampled_from(["replace", "drop", "flip", "whole"]))
    field = data.draw(st.sampled_from(["height", "value", "proof", "header", "certificate"]))
    junk = data.draw(JSONISH)
    where = data.draw(st.integers(0, 10_000))

    def bend(answer: dict[str, Any]) -> Any:
        if how == "whole":
            return junk
        if how == "drop":
            answer.pop(field)
        elif how == "replace":
            answer[field] = junk
        else:
            texts = [answer["value"]] if answer["value"] else []
            texts += [s for level in answer["proof"]["levels"] for s in level["siblings"]]
            text = texts[where % len(texts)]
            at = where % len(text)
            flipped = text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :]
            if answer["value"] == text:
                answer["value"] = flipped
            else:
                for level in answer["proof"]["levels"]:
                    level["siblings"] = [flipped if s == text else s for s in level["siblings"]]
        return answer

    return bend


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_bent_answer_is_refused_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, genesis, account, value = _served()
    source = StoreSource(store, genesis)
    source.bend = _bend(data)
    client = _store_client(store, genesis, source, tmp_path_factory.mktemp("light"))
    try:
        found = client.get(Table.ACCOUNT, account)
    except VerificationError:
        return
    assert found.value == value, "an answer that verified must be the true one"


def _patient_of(store: ChainStore) -> bytes:
    """A registered patient's account id (every registration is a patient's)."""
    return next(iter(store.table_entries(Table.ACCOUNT)))[0]


@pytest.mark.parametrize("kind", ["vaults", "timeline"])
def test_a_list_verifies_whole_and_an_entry_left_out_is_caught(tmp_path: Path, kind: str) -> None:
    store, genesis, _, _ = _served()
    source = StoreSource(store, genesis)
    client = _store_client(store, genesis, source, tmp_path)
    patient = _patient_of(store)
    found = client.query(*source.serve(kind, patient))
    listed = found.value[ITEMS[kind]]
    assert listed == []  # no vaults yet, every data type proved absent
    assert found.entries >= len(ChainContext.from_genesis(genesis).data_types)

    def left_out(answer: dict[str, Any]) -> Any:
        del answer["entries"][len(answer["entries"]) // 2]
        return answer

    source.bend = left_out
    with pytest.raises(VerificationError) as refused:
        client.query(*source.serve(kind, patient))
    assert refused.value.code == "answer_incomplete"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_bent_list_is_refused_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, genesis, _, _ = _served()
    source = StoreSource(store, genesis)
    path_and_read = source.serve("timeline", _patient_of(store))
    junk = data.draw(JSONISH)
    where = data.draw(st.integers(0, 10_000))
    how = data.draw(st.sampled_from(["whole", "field", "entry", "entry field", "value"]))

    def bend(answer: dict[str, Any]) -> Any:
        entries = answer["entries"]
        entry = entries[where % len(entries)]
        if how == "whole":
            return junk
        if how == "field":
            answer[data.draw(st.sampled_from(sorted(answer)))] = junk
        elif how == "entry":
            entries[where % len(entries)] = junk
        elif how == "entry field":
            entry[data.draw(st.sampled_from(sorted(entry)))] = junk
        else:
            entry["value"] = "00" if entry["value"] is None else None
        return answer

    source.bend = bend
    client = _store_client(store, genesis, source, tmp_path_factory.mktemp("light"))
    try:
        found = client.query(*path_and_read)
    except VerificationError:
        return
    assert found.value == {"events": [], "names": {}}, "an answer that verified is the true one"


class Lagging(ChainSource):
    """A node whose head is `head_at`, whatever its chain holds."""

    def __init__(self, chain: SyntheticChain, name: str, head_at: int) -> None:
        super().__init__(chain, name)
        self.head_at = head_at

    def head(self) -> int:
        return self.head_at


def test_a_node_that_says_its_head_is_older_than_what_is_trusted_is_refused(
    tmp_path: Path,
) -> None:
    """Once a client trusts height H, a node that says its head is below H withholds what
    happened since (a recovery begun, a grant revoked): refused, never read as verified."""
    chain = synthetic_chain(12, changes=1)
    client = _client(tmp_path, chain)
    assert client.sync().height == chain.head
    client.primary = Lagging(chain, "stale", chain.head - 4)
    with pytest.raises(VerificationError) as refused:
        client.sync()
    assert refused.value.code == "stale_head"


def test_a_witness_far_ahead_of_the_primary_is_reported(tmp_path: Path) -> None:
    chain = synthetic_chain(12, changes=1)
    client = LightClient(
        chain.genesis,
        tmp_path,
        Lagging(chain, "primary", chain.head - 5),
        [ChainSource(chain, "witness")],
        clock_ms=chain.time_after,
    )
    assert client.sync().height == chain.head - 5
    assert any("withholds newer blocks" in warning for warning in client.warnings)
