"""Audit replay: transactions verified (signatures, in a process pool) and re-executed per second
on a LevelDB chain of at least 200,000 transactions, with one process and with all cores, beside
the single-core Ed25519 verify rate measured in the same run.

Run: .venv/bin/python bench/replay.py [--txs 200000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import rate, report

from carechain.consensus import crypto
from carechain.node.audit.replay import replay
from carechain.node.collector import tuned_collector
from carechain.storage.chain import ChainStore
from carechain.storage.kv import LevelKV
from carechain.tests.chain_fixture import committee_chain, committee_genesis


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--txs", type=int, default=200_000)
    arguments = parser.parse_args()
    blocks = max(1, arguments.txs // 1000)
    key = crypto.PrivateKey(b"\x05" * 32)
    digest = crypto.sha256(b"x")
    signature = key.sign(crypto.Purpose.TX, "c", digest)
    verify_rate = rate(
        lambda: crypto.verify(key.public_key, crypto.Purpose.TX, "c", digest, signature)
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "chain"
        store = ChainStore.open(path, committee_genesis())
        committee_chain(store, blocks, txs_per_block=1000)
        store.close()
        figures: dict[str, float] = {"ed25519_verify_per_s_one_core": verify_rate}
        for workers in (1, os.cpu_count() or 1):
            source = ChainStore(LevelKV(path, create=False))
            with tuned_collector():  # as `carechain audit replay` does
                result = replay(source, committee_genesis(), workers=workers)
            source.close()
            figures["transactions"] = result.txs
            figures["signatures_per_tx"] = result.signatures / result.txs
            figures[f"replay_txs_per_s_{workers}_process"] = result.txs / result.seconds
            figures[f"replay_vs_verify_ceiling_{workers}_process"] = (
                result.txs * figures["signatures_per_tx"] / result.seconds / verify_rate
            )
    report("replay", figures)


if __name__ == "__main__":
    main()
