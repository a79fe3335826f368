"""A seeded random source whose stream never changes across Python or NumPy versions.

Python guarantees only two things about `random.Random` across versions: seeding from a
``str`` (version 2, SHA-512 based) and the sequence of ``random()`` floats. Every helper
here is built on ``random()`` alone, so the bundled tables regenerate byte for byte on any
Python >= 3.2 (``randrange``, ``choice`` and ``shuffle`` carry no such guarantee).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Rng:
    """Deterministic draws for one generator stream (``seed`` plus a stream name)."""

    def __init__(self, seed: int, stream: str) -> None:
        self._r = random.Random(f"ggr-kv:{seed}:{stream}")

    def random(self) -> float:
        """A float in [0, 1)."""
        return self._r.random()

    def below(self, n: int) -> int:
        """An int in [0, n)."""
        return min(int(self._r.random() * n), n - 1)

    def randint(self, lo: int, hi: int) -> int:
        """An int in [lo, hi], both ends included."""
        return lo + self.below(hi - lo + 1)

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self._r.random()

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self._r.random() < p

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def weighted(self, seq: Sequence[T], cum_weights: Sequence[float]) -> T:
        """One item, drawn with the given cumulative weights (see `cumulative`)."""
        x = self._r.random() * cum_weights[-1]
        return seq[min(bisect.bisect_right(cum_weights, x), len(seq) - 1)]

    def shuffle(self, items: list) -> None:
        """Fisher-Yates shuffle in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct items in random order."""
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def gauss(self, mu: float, sigma: float) -> float:
        """Normal draw (Box-Muller on two ``random()`` floats)."""
        u1 = 1.0 - self._r.random()  # (0, 1]
        u2 = self._r.random()
        return mu + sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def expovariate(self, mean: float) -> float:
        return -mean * math.log(1.0 - self._r.random())


def cumulative(weights: Sequence[float]) -> list[float]:
    """Cumulative sums for `Rng.weighted`."""
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def zipf_weights(n: int, s: float) -> list[float]:
    """Cumulative Zipf weights ``1 / rank**s`` for ``n`` items (popular items first)."""
    return cumulative([1.0 / (k + 1) ** s for k in range(n)])


def clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else min(x, hi)
