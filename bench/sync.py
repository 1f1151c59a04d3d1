"""A fresh node catching up from a peer over libp2p on loopback: a LevelDB chain of 100,000
transactions (blocks of 1,000 patient registrations, each block certified by 3 of 4
validators) is streamed by one node and verified and applied by another (certificate checked,
every signature verified, block re-executed, state root compared, committed to LevelDB), in
transactions per second, with signatures verified inline and in a process pool of all cores
(as a node does for large batches), beside the single-core verify ceiling of the same run.

Run: .venv/bin/python bench/sync.py [--txs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from common import ceilings, report

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.ledger.apply import SignatureCache
from carechain.consensus.poa.application import LedgerApplication
from carechain.node.sync import BlockSync, range_provider
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.storage.chain import ChainStore
from carechain.tests.chain_fixture import committee_chain, committee_genesis


async def catch_up(source: ChainStore, target: ChainStore, workers: int) -> tuple[int, float]:
    keys = [PrivateKey(bytes([70 + i]) * 32) for i in range(2)]
    ids = [peer_id(k.public_key) for k in keys]
    server = Libp2pNetwork(keys[0], "/ip4/127.0.0.1/tcp/0", allowed={ids[1]})
    await server.start()
    client = Libp2pNetwork(
        keys[1], "/ip4/127.0.0.1/tcp/0", dial=server.listen_addrs[:1], allowed={ids[0]}
    )
    await client.start()
    try:
        server.serve_range(range_provider(source))
        while not client.peers():
            await asyncio.sleep(0.05)
        signatures = SignatureCache()  # as a node has: the pool's results land here
        app = LedgerApplication(committee_genesis(), target, lambda: (), signatures)
        syncer = BlockSync(client, target, app, signatures=signatures, workers=workers)
        started = time.perf_counter()
        reached = await syncer.sync([ids[0]], source.height)
        elapsed = time.perf_counter() - started
    finally:
        syncer.close()
        await client.stop()
        await server.stop()
    assert reached == source.height, f"synced to {reached} of {source.height}"
    return reached, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=100_000)
    arguments = parser.parse_args()
    blocks = max(1, arguments.txs // 1000)
    limits = ceilings()
    verify = limits["ed25519_verify_per_s_one_core"]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        source = ChainStore.open(Path(folder) / "source", committee_genesis())
        committee_chain(source, blocks, txs_per_block=1000)
        for workers in sorted({1, os.cpu_count() or 1}):
            target = ChainStore.open(Path(folder) / f"fresh{workers}", committee_genesis())
            height, seconds = asyncio.run(catch_up(source, target, workers))
            synced = [tx for block, _ in target.blocks(1, height) for tx in block.txs]
            target.close()
            per_tx = sum(len(tx.signatures) for tx in synced) / len(synced)
            figures.update(
                {"transactions": len(synced), "blocks": height, "signatures_per_tx": per_tx}
            )
            figures[f"sync_txs_per_s_{workers}_process"] = len(synced) / seconds
            figures[f"sync_vs_verify_ceiling_one_core_{workers}_process"] = (
                len(synced) / seconds * per_tx / verify
            )
        source.close()
    report("sync", figures, limits=limits)


if __name__ == "__main__":
    main()
