"""Consensus in the deterministic simulator: simulated heights committed per second of wall
time, and the mean number of rounds per height as message loss grows (no other faults), for 4
and 7 validators.

Run: .venv/bin/python bench/consensus_sim.py [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from common import report

from carechain.tests.sim.cluster import simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    figures: dict[str, float] = {}
    for validators in (4, 7):
        for loss in (0.0, 0.1, 0.3):
            heights, rounds, started = 0, 0.0, time.perf_counter()
            for seed in range(arguments.runs):
                result = simulate(seed, validators, faults=False, loss=loss)
                assert result.ok, result.describe()
                heights += result.committed_heights
                rounds += result.mean_rounds_per_height
            elapsed = time.perf_counter() - started
            label = f"{validators}v_loss{int(loss * 100)}"
            figures[f"{label}_heights_per_wall_s"] = heights / elapsed
            figures[f"{label}_mean_rounds_per_height"] = rounds / arguments.runs
    report("consensus_sim", figures)


if __name__ == "__main__":
    main()
