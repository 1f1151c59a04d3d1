"""The simulator in CI: 300 seeded runs with every fault on, across 4 and 7 validators, and
proof that its checkers catch a broken engine."""

from __future__ import annotations

import pytest

from carechain.consensus.poa.engine import Engine
from carechain.tests.sim.cluster import simulate

CHUNK = 10
SEEDS_PER_SIZE = 150  # 300 runs in all


@pytest.mark.slow
@pytest.mark.parametrize("validators", [4, 7])
@pytest.mark.parametrize("first", range(0, SEEDS_PER_SIZE, CHUNK))
def test_seeds_keep_agreement_validity_and_liveness(validators: int, first: int) -> None:
    failures = []
    for seed in range(first, first + CHUNK):
        result = simulate(seed, validators)
        if not result.ok:
            failures.append(
                f"{result.describe()}\n"
                f"  reproduce with: python -m tests.sim --seed {seed} --validators {validators}"
            )
    assert failures == [], "\n".join(failures)


def test_a_fault_free_network_commits_every_heartbeat_in_one_round() -> None:
    result = simulate(3, 4, faults=False)
    assert result.ok, result.describe()
    assert result.committed_heights >= 25
    assert result.mean_rounds_per_height == 1.0
    # every node keeps the precommits that came after its certificate (4 validators, a
    # quorum of 3: about one per node and height), and the checker found each one sound
    assert result.late_votes >= 3 * result.committed_heights


class EngineIgnoringItsWal(Engine):
    """Test-only: an engine that forgets its WAL on restart (the bug the WAL prevents)."""

    def _restore_from_wal(self) -> int | None:
        self.replayed = ()
        return None


def test_the_double_sign_checker_catches_an_engine_that_ignores_its_wal() -> None:
    caught = None
    for seed in range(60):
        result = simulate(seed, 4, engine_factory=EngineIgnoringItsWal, crash_mid_batch=True)
        if any("double-signed" in v for v in result.violations):
            caught = seed
            break
    assert caught is not None, "60 seeds with crashes never exposed the missing WAL replay"
    safe = simulate(caught, 4, crash_mid_batch=True)
    assert safe.ok, f"the real engine fails seed {caught}: {safe.describe()}"
