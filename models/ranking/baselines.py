"""Simple recommenders every ranking must beat, learned one event at a time.

They see the same events as Shelfsight, in the same order, and answer the same questions:
most popular so far, most popular with exponential decay, and item co-visitation (items
that followed or preceded the shopper's latest ones in other shoppers' histories).

>>> pop = Popularity()
>>> for user, item in [("u1", "a"), ("u2", "a"), ("u2", "b")]:
...     pop.learn_one(user, item, at=0.0)
>>> pop.rank("u3", k=2, exclude=set(), now=0.0)
['a', 'b']
>>> covis = CoVisitation(window=5)
>>> for user, item in [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c"), ("u3", "c"), ("u3", "b"), ("u4", "a")]:
...     covis.learn_one(user, item, at=0.0)
>>> covis.rank("u4", k=2, exclude={"a"}, now=0.0)
['b', 'c']
"""

from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Protocol

import numpy as np


class Baseline(Protocol):
    name: str

    def learn_one(self, user: str, item: str, at: float) -> None: ...

    def rank(self, user: str, k: int, exclude: set[str], now: float) -> list[str]: ...


class _Items:
    """Dense indexes for item ids, so scores live in one growing numpy array."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.scores = np.zeros(1024)

    def of(self, item: str) -> int:
        i = self.index.get(item)
        if i is None:
            i = self.index[item] = len(self.ids)
            self.ids.append(item)
            if i >= len(self.scores):
                self.scores = np.concatenate([self.scores, np.zeros(len(self.scores))])
        return i

    def top(self, scores: np.ndarray, k: int, exclude: Iterable[str]) -> list[str]:
        scores = scores[: len(self.ids)].copy()
        for item in exclude:
            i = self.index.get(item)
            if i is not None:
                scores[i] = -np.inf
        n = min(k, int(np.isfinite(scores).sum()))
        if n <= 0:
            return []
        best = np.argpartition(-scores, n - 1)[:n]
        # Ties break by first appearance, so runs are reproducible.
        best = best[np.lexsort((best, -scores[best]))]
        return [self.ids[i] for i in best]


class Popularity:
    """Most interactions so far."""

    name = "most popular so far"

    def __init__(self) -> None:
        self._items = _Items()

    def learn_one(self, user: str, item: str, at: float) -> None:
        i = self._items.of(item)
        self._items.scores[i] += 1.0

    def rank(self, user: str, k: int, exclude: set[str], now: float) -> list[str]:
        return self._items.top(self._items.scores, k, exclude)


class DecayedPopularity:
    """Interactions weighted by 2^(-age / half-life): what is popular lately.

    Scores are kept as forward-decayed sums (``2^((t - t0) / half_life)``), rebased when they grow large.
    """

    def __init__(self, half_life_s: float = 7 * 86400.0) -> None:
        self.half_life_s = half_life_s
        self.name = f"most popular, {half_life_s / 86400:g}-day decay"
        self._items = _Items()
        self._epoch: float | None = None

    def learn_one(self, user: str, item: str, at: float) -> None:
        if self._epoch is None:
            self._epoch = at
        exponent = (at - self._epoch) / self.half_life_s
        if exponent > 50:
            self._items.scores *= 2.0**-exponent
            self._epoch, exponent = at, 0.0
        i = self._items.of(item)
        self._items.scores[i] += 2.0**exponent

    def rank(self, user: str, k: int, exclude: set[str], now: float) -> list[str]:
        return self._items.top(self._items.scores, k, exclude)


class CoVisitation:
    """Each event is paired with the shopper's previous ``window`` items; a shopper's answer sums
    the co-visitation counts of their latest ``window`` items (popularity breaks ties)."""

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.name = f"item co-visitation (each shopper's last {window} items)"
        self._items = _Items()
        self._pairs: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self._recent: dict[str, deque[int]] = defaultdict(lambda: deque(maxlen=window))

    def learn_one(self, user: str, item: str, at: float) -> None:
        i = self._items.of(item)
        recent = self._recent[user]
        for j in recent:
            if j != i:
                self._pairs[i][j] += 1.0
                self._pairs[j][i] += 1.0
        recent.append(i)
        self._items.scores[i] += 1.0

    def rank(self, user: str, k: int, exclude: set[str], now: float) -> list[str]:
        popularity = self._items.scores
        scores = popularity * (1e-6 / max(1.0, float(popularity.max(initial=0.0))))
        for j in self._recent.get(user, ()):
            for i, count in self._pairs[j].items():
                scores[i] += count
        return self._items.top(scores, k, exclude)


__all__ = ["Baseline", "CoVisitation", "DecayedPopularity", "Popularity"]
