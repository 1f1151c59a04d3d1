"""A fresh node catching up from a peer over libp2p on loopback: a LevelDB chain of 100,000
transactions (blocks of 1,000 patient registrations, each block certified by 3 of 4
validators) is streamed by one node and verified and applied by another (certificate checked,
every signature verified, block re-executed, state root compared, committed to LevelDB), in
transactions per second, with signatures verified inline and in a process pool of all cores
(as a node does for large batches), beside the single-core verify ceiling of the same run.
The serving peer runs in its own process, as it does in life; it shares the cores.

Run: .venv/bin/python bench/sync.py [--txs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ceilings, report

from carechain.consensus.crypto import PrivateKey, peer_id
from carechain.consensus.ledger.apply import SignatureCache
from carechain.consensus.poa.application import LedgerApplication
from carechain.node.collector import tuned_collector
from carechain.node.sync import BlockSync, range_provider
from carechain.node.verifier import SignatureWorkers
from carechain.p2p.libp2p_net import Libp2pNetwork
from carechain.storage.chain import ChainStore
from carechain.tests.chain_fixture import committee_chain, committee_genesis

KEYS = [PrivateKey(bytes([70 + i]) * 32) for i in range(2)]
IDS = [peer_id(k.public_key) for k in KEYS]


async def serve(folder: Path) -> None:
    """The peer being caught up from, in its own process (as it is in life, so its work
    does not share the syncing node's interpreter): serves `folder`'s chain until stdin
    closes, after printing its address."""
    source = ChainStore.open(folder, committee_genesis())
    server = Libp2pNetwork(KEYS[0], "/ip4/127.0.0.1/tcp/0", allowed={IDS[1]})
    await server.start()
    try:
        server.serve_range(range_provider(source))
        print(server.listen_addrs[0], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await server.stop()
        source.close()


async def catch_up(address: str, height: int, target: ChainStore, workers: int) -> float:
    client = Libp2pNetwork(KEYS[1], "/ip4/127.0.0.1/tcp/0", dial=[address], allowed={IDS[0]})
    await client.start()
    signatures = SignatureCache()  # as a node has: the pool's results land here
    app = LedgerApplication(committee_genesis(), target, lambda: (), signatures)
    verifier = SignatureWorkers(signatures, workers)
    syncer = BlockSync(client, target, app, verifier=verifier)
    try:
        while not client.peers():
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        reached = await syncer.sync([IDS[0]], height)
        elapsed = time.perf_counter() - started
    finally:
        verifier.close()
        await client.stop()
    assert reached == height, f"synced to {reached} of {height}"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=100_000)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the peer's process
    arguments = parser.parse_args()
    with tuned_collector():  # as the node daemon runs
        measure(arguments)


def measure(arguments: argparse.Namespace) -> None:
    if arguments.serve is not None:
        asyncio.run(serve(arguments.serve))
        return
    blocks = max(1, arguments.txs // 1000)
    limits = ceilings()
    verify = limits["ed25519_verify_per_s_one_core"]
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        source = ChainStore.open(Path(folder) / "source", committee_genesis())
        committee_chain(source, blocks, txs_per_block=1000)
        height = source.height
        source.close()
        peer = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(Path(folder) / "source")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert peer.stdout is not None
            address = peer.stdout.readline().strip()
            for workers in sorted({1, os.cpu_count() or 1}):
                target = ChainStore.open(Path(folder) / f"fresh{workers}", committee_genesis())
                seconds = asyncio.run(catch_up(address, height, target, workers))
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
        finally:
            peer.communicate(timeout=30)  # closes its stdin: it stops
    report("sync", figures, limits=limits)


if __name__ == "__main__":
    main()
