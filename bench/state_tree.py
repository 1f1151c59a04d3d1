"""The authenticated state tree and the light client, on one core:

- update: a state of `--entries` entries (default 1,000,000) in LevelDB, then blocks of
  `--changes` changed entries (default 5,000: 4/5 new values of existing entries, 1/5 new
  entries); microseconds per changed entry to compute the new root (`tree_us_per_change`) and
  to apply the whole block to the store, entries, tree nodes, pruning and fsync included
  (`apply_us_per_change`);
- proofs: generated from that store and verified, per second;
- verify: the whole tree walked and every entry matched, as a node's start does
  (`state.verify_on_start`), in seconds;
- light client: trust carried from genesis to the head of a chain of `--headers` certified
  headers (default 10,000) with `--set-changes` validator-set changes (default 20), in seconds
  (headers served from memory: the figure is verification, not the network).

Run: .venv/bin/python bench/state_tree.py [--entries 1000000] [--changes 5000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from common import rate, report

from carechain.consensus.ledger.state import Overlay, Table
from carechain.consensus.ledger.state_proof import verify
from carechain.consensus.light.verifier import Clock, Trusted, sync_to
from carechain.storage.kv import LevelKV
from carechain.storage.state import StateStore
from carechain.tests.light_fixture import synthetic_chain

BUILD_BATCH = 50_000


def _apply(store: StateStore, writes: dict[bytes, bytes]) -> None:
    overlay = Overlay(store)
    for key, value in writes.items():
        overlay.put(Table.RECORD, key, value)
    store.apply(overlay.diff(), store.height + 1 if store.initialized else 0)


def _build(store: StateStore, entries: int, rng: random.Random) -> list[bytes]:
    keys: list[bytes] = []
    while len(keys) < entries:
        batch = {
            rng.randbytes(36): rng.randbytes(80)
            for _ in range(min(BUILD_BATCH, entries - len(keys)))
        }
        _apply(store, batch)
        keys.extend(batch)
    return keys


def _blocks(
    store: StateStore, keys: list[bytes], changes: int, rng: random.Random
) -> dict[str, float]:
    tree, apply = [], []
    for _ in range(3):
        writes = {key: rng.randbytes(80) for key in rng.sample(keys, changes * 4 // 5)}
        fresh = {rng.randbytes(36): rng.randbytes(80) for _ in range(changes - len(writes))}
        overlay = Overlay(store)
        for key, value in (writes | fresh).items():
            overlay.put(Table.RECORD, key, value)
        diff = overlay.diff()
        started = time.perf_counter()
        store.root_after(diff)
        tree.append(time.perf_counter() - started)
        diff = overlay.diff()  # a diff of its own: nothing computed before
        started = time.perf_counter()
        store.apply(diff, store.height + 1)
        apply.append(time.perf_counter() - started)
        keys.extend(fresh)
    return {
        "tree_us_per_change": min(tree) / changes * 1e6,
        "apply_us_per_change": min(apply) / changes * 1e6,
    }


def _proofs(store: StateStore, keys: list[bytes], rng: random.Random) -> dict[str, float]:
    sample = rng.sample(keys, 2000)
    made = iter(sample * 1000)
    generated = rate(lambda: store.prove(Table.RECORD, next(made)), seconds=2.0)
    root = store.root
    proofs = [(key, *store.prove(Table.RECORD, key)[:2]) for key in sample]
    cycle = iter(proofs * 1000)

    def check() -> None:
        key, proof, value = next(cycle)
        verify(root, Table.RECORD, key, value, proof)

    verified = rate(check, seconds=2.0)
    levels = sum(len(proof.levels) for _, proof, _ in proofs) / len(proofs)
    siblings = sum(len(lv.siblings) for _, p, _ in proofs for lv in p.levels) / len(proofs)
    return {
        "proofs_generated_per_s": generated,
        "proofs_verified_per_s": verified,
        "proof_levels_mean": levels,
        "proof_bytes_mean": siblings * 32 + levels * 2 + 64,
    }


def _light(headers: int, set_changes: int) -> dict[str, float]:
    chain = synthetic_chain(headers, set_changes, seed=7)
    fetched: list[int] = []

    def fetch(height: int):  # type: ignore[no-untyped-def]
        fetched.append(height)
        return chain.blocks[height]

    started = time.perf_counter()
    trusted = sync_to(
        Trusted.of_genesis(chain.genesis), chain.head, fetch, Clock(chain.time_after())
    )
    seconds = time.perf_counter() - started
    assert trusted[-1].height == headers
    return {
        "light_headers": headers,
        "light_set_changes": set_changes,
        "light_sync_seconds": seconds,
        "light_headers_fetched": len(set(fetched)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=5_000)
    parser.add_argument("--headers", type=int, default=10_000)
    parser.add_argument("--set-changes", type=int, default=20)
    arguments = parser.parse_args()
    rng = random.Random(18)
    figures: dict[str, float] = {"entries": arguments.entries, "changes": arguments.changes}
    with tempfile.TemporaryDirectory() as folder:
        kv = LevelKV(Path(folder) / "state")
        try:
            store = StateStore(kv, heights_kept=10)
            started = time.perf_counter()
            keys = _build(store, arguments.entries, rng)
            figures["build_seconds"] = time.perf_counter() - started
            figures |= _blocks(store, keys, arguments.changes, rng)
            figures |= _proofs(store, keys, rng)
            started = time.perf_counter()
            store.verify()  # what a node's start does with state.verify_on_start
            figures["verify_seconds"] = time.perf_counter() - started
        finally:
            kv.close()
    figures |= _light(arguments.headers, arguments.set_changes)
    report("state_tree", figures)


if __name__ == "__main__":
    main()
