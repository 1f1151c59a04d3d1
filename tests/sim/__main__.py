"""Replay simulator runs: `python -m tests.sim --seed N [--runs K] [--validators 4|7]`.

Runs seeds N, N+1, ..., N+K-1 and prints one line per run (or only failures with --quiet);
exits 1 if any run violates agreement, validity, no-double-sign or liveness.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from carechain.tests.sim.cluster import simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--validators", type=int, choices=[4, 7], default=4)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    failures, heights, simulated_ms = [], 0, 0
    for seed in range(arguments.seed, arguments.seed + arguments.runs):
        result = simulate(seed, arguments.validators, faults=not arguments.no_faults)
        heights += result.committed_heights
        simulated_ms += result.simulated_ms
        if not result.ok:
            failures.append(seed)
            hint = f"reproduce with --seed {seed} --validators {arguments.validators}"
            print(f"{result.describe()}\n  {hint}")
        elif not arguments.quiet:
            print(result.describe())
    elapsed = time.perf_counter() - started
    summary = {
        "runs": arguments.runs,
        "validators": arguments.validators,
        "failures": len(failures),
        "failed_seeds": failures[:50],
        "wall_seconds": round(elapsed, 1),
        "commits_per_simulated_second": round(heights / (simulated_ms / 1000), 3)
        if simulated_ms
        else 0,
    }
    print(json.dumps(summary))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
