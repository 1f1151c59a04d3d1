"""A wallet reads a whole state table through the node's API however large it is: page after
page (`after` the last key), not only the first page the route answers."""

from __future__ import annotations

import pytest

from carechain.consensus.ledger.state import Table
from carechain.node.wallet import client
from carechain.node.wallet.client import RemoteState
from carechain.tests.ledger_world import World
from carechain.tests.world_node import WorldNode


def test_table_entries_follow_every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    for data_type in ("glucose", "cgm", "hba1c", "blood-pressure"):
        world.create_vault(data_type)
    everything = world.store.table_entries(Table.VAULT)
    assert len(everything) == 4
    monkeypatch.setattr(client, "STATE_PAGE", 3)
    assert RemoteState(WorldNode(world)).table_entries(Table.VAULT) == everything
    monkeypatch.setattr(client, "STATE_PAGE", 2)  # a full last page: one more, empty, ends it
    assert RemoteState(WorldNode(world)).table_entries(Table.VAULT) == everything
