"""Mutations of valid encodings, the way a buggy or hostile peer would send them: flipped
bits, cut or stretched bytes, msgpack type bytes swapped in, chunks repeated, two messages
spliced, or noise. Each fuzzer seeds its Random and names the seed when it fails."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

# msgpack type markers that change how the rest is read: nil, never-used, false, bin8/16/32,
# ext, float, uint64, str32, array16/32, map16/32, plus fixarray/fixmap/fixstr prefixes
MARKERS = bytes([0xC0, 0xC1, 0xC2, 0xC4, 0xC5, 0xC6, 0xC7, 0xCB, 0xCF, 0xDB, 0xDC, 0xDD, 0xDE,
                 0xDF, 0x90, 0x9F, 0x80, 0x8F, 0xA0, 0xBF, 0x00, 0x7F, 0xFF])  # fmt: skip


def budget(default: int) -> int:
    """How many inputs a fuzzer tries: CARECHAIN_FUZZ_EXAMPLES, or its CI default."""
    return int(os.environ.get("CARECHAIN_FUZZ_EXAMPLES", str(default)))


def mutate(sample: bytes, others: Sequence[bytes], rng: random.Random) -> bytes:
    data = bytearray(sample)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        choice = rng.randrange(8)
        at = rng.randrange(len(data) + 1)
        if choice == 0 and data:
            position = min(at, len(data) - 1)
            data[position] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del data[at:]
        elif choice == 2:
            data[at:at] = rng.randbytes(rng.choice((1, 4, 64, 4096)))
        elif choice == 3 and data:
            data[min(at, len(data) - 1)] = rng.choice(MARKERS)
        elif choice == 4 and data:
            end = min(len(data), at + rng.randrange(1, 64))
            data[at:at] = data[at:end] * rng.randrange(1, 4)
        elif choice == 5 and others:
            other = rng.choice(others)
            data = data[:at] + other[rng.randrange(len(other) + 1) :]
        elif choice == 6:
            return rng.randbytes(rng.randrange(0, 256))
        elif data:
            del data[at : at + rng.randrange(1, 16)]
    return bytes(data)
