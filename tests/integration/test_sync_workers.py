"""Block sync with signatures verified in a pool of worker processes: the cache answers the
re-execution, and a forged signature in a large batch is still refused."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from carechain.consensus.ledger.apply import SignatureCache
from carechain.consensus.poa.application import LedgerApplication
from carechain.consensus.poa.messages import Commit
from carechain.node.sync import PARALLEL_TXS_MIN, BlockSync
from carechain.node.verifier import SignatureWorkers
from carechain.p2p.memory import MemoryHub, MemoryNetwork
from carechain.storage.chain import ChainStore
from carechain.storage.kv import MemoryKV
from carechain.tests.chain_fixture import COMMITTEE, certify_by, committee_chain, committee_genesis

TXS_PER_BLOCK = 1000
BLOCKS = -(-PARALLEL_TXS_MIN // TXS_PER_BLOCK) + 1


def _fresh() -> ChainStore:
    store = ChainStore(MemoryKV())
    store.state.initialize(committee_genesis())
    return store


async def _sync(blocks: list[bytes]) -> tuple[ChainStore, SignatureCache, int]:
    hub = MemoryHub()
    server = MemoryNetwork(hub, "server", {"client"})
    client = MemoryNetwork(hub, "client", {"server"})

    async def provide(remote: str, first: int, last: int) -> AsyncIterator[bytes]:
        for item in blocks[first - 1 : last]:
            yield item

    server.serve_range(provide)
    for network in (server, client):
        await network.start()
    target = _fresh()
    signatures = SignatureCache()
    app = LedgerApplication(committee_genesis(), target, lambda: (), signatures)
    verifier = SignatureWorkers(signatures, workers=2)
    syncer = BlockSync(client, target, app, verifier=verifier)
    try:
        reached = await syncer.sync(["server"], len(blocks))
    finally:
        verifier.close()
    return target, signatures, reached


@pytest.fixture(scope="module")
def chain() -> list[Commit]:
    source = _fresh()
    committee_chain(source, BLOCKS, txs_per_block=TXS_PER_BLOCK)
    return [Commit(b, c) for b, c in source.blocks(1, BLOCKS)]


@pytest.mark.asyncio
async def test_a_large_sync_takes_its_signatures_from_the_workers(chain: list[Commit]) -> None:
    target, signatures, reached = await _sync([c.encode() for c in chain])
    assert reached == target.height == BLOCKS
    assert signatures.hits >= BLOCKS * TXS_PER_BLOCK, "re-execution verified again"


@pytest.mark.asyncio
async def test_a_forged_signature_in_a_large_batch_is_refused(chain: list[Commit]) -> None:
    last = chain[-1].block
    tx = last.txs[7]
    wrong = dataclasses.replace(tx.signatures[0], signature=bytes(64))
    forged_tx = dataclasses.replace(tx, signatures=(wrong, *tx.signatures[1:]))
    txs = (*last.txs[:7], forged_tx, *last.txs[8:])
    header = dataclasses.replace(
        last.header, tx_root=dataclasses.replace(last, txs=txs).computed_tx_root()
    )
    forged = dataclasses.replace(last, header=header, txs=txs)
    items = [c.encode() for c in chain[:-1]] + [
        Commit(forged, certify_by(forged, COMMITTEE[:3])).encode()
    ]
    target, _, reached = await _sync(items)
    assert reached == BLOCKS - 1, "the forged block was applied"
    assert target.height == BLOCKS - 1
