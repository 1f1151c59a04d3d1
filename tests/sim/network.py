"""The simulator's network: seeded latency, loss, duplication, reordering and partitions."""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True, slots=True)
class Partition:
    start_ms: int
    end_ms: int
    groups: tuple[frozenset[str], ...]

    def separates(self, a: str, b: str, now_ms: int) -> bool:
        if not self.start_ms <= now_ms < self.end_ms:
            return False
        return not any(a in group and b in group for group in self.groups)


@dataclasses.dataclass
class NetworkFaults:
    latency_ms: tuple[int, int] = (5, 60)
    loss: float = 0.0
    duplication: float = 0.0
    partitions: list[Partition] = dataclasses.field(default_factory=list)

    def heal_ms(self) -> int:
        return max((p.end_ms for p in self.partitions), default=0)


class SimNetwork:
    """Decides, for each message, when (and whether, and how often) it arrives."""

    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self.rng = rng
        self.faults = faults
        self.sent = 0
        self.dropped = 0

    def deliveries(self, sender: str, receiver: str, now_ms: int) -> list[int]:
        """Arrival times of one message (empty if lost or partitioned)."""
        self.sent += 1
        if any(p.separates(sender, receiver, now_ms) for p in self.faults.partitions):
            self.dropped += 1
            return []
        if self.rng.random() < self.faults.loss:
            self.dropped += 1
            return []
        low, high = self.faults.latency_ms
        arrivals = [now_ms + self.rng.randint(low, high)]
        if self.rng.random() < self.faults.duplication:
            arrivals.append(now_ms + self.rng.randint(low, high * 2))
        return arrivals
