"""Candidate generation: every source proposes products, each with its own raw evidence.

Sources, and what each one stands for:

- ``taste``: Qdrant nearest neighbours of the shopper's preference vector (fused space);
- ``recent``: a Qdrant recommend query from recent positives against dismissed items;
- ``context``: products that look like the one on the page;
- ``new``: recently listed products nearest the shopper's taste (the exploration budget's pool);
- ``covisit``: products viewed in the same sessions as the shopper's recent ones;
- ``history``: products near the shopper's recent ones in other shoppers' histories;
- ``items``: the item-to-item model's best items for the shopper's whole history;
- ``affinity``: the River factorisation's best items for a shopper it knows;
- ``trending`` / ``trending_in``: decayed popularity, overall and in the shopper's top categories;
- ``catalogue``: a sample of the catalogue, when nothing else knows anything yet.

Scores from different sources are never compared with each other here: each stays the
evidence it is (a cosine, a co-visitation count, a popularity) and the ranking weighs them.

>>> pool = CandidatePool()
>>> pool.offer("a", "trending", 4.0)
>>> pool.offer("a", "covisit", 2.0, anchor="b")
>>> pool.offer("a", "covisit", 1.0, anchor="c")
>>> sorted(pool.get("a").evidence.items())
[('covisit', (2.0, 'b')), ('trending', (4.0, None))]
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from services.recommender.shopper import Pairs

VISUAL_SOURCES = frozenset({"taste", "recent", "context", "new", "catalogue"})


@dataclass
class Candidate:
    product_id: str
    evidence: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # source → (score, anchor)
    payload: dict[str, Any] | None = None
    vector: Sequence[float] | None = None  # fused vector as stored (unit length)

    @property
    def sources(self) -> set[str]:
        return set(self.evidence)


def without_sources(candidates: list[Candidate], left_out: frozenset[str]) -> list[Candidate]:
    """The candidates as if the sources ``left_out`` had proposed nothing (an experiment's variant
    that does without them): their evidence dropped, and the products no other source proposed gone.

    >>> kept = without_sources([Candidate("a", {"looks": (0.9, None), "taste": (0.5, None)}), Candidate("b", {"looks": (0.8, None)})],
    ...                        frozenset({"looks"}))
    >>> [(c.product_id, c.sources) for c in kept]
    [('a', {'taste'})]
    """
    kept = []
    for candidate in candidates:
        evidence = {source: found for source, found in candidate.evidence.items() if source not in left_out}
        if evidence:
            kept.append(replace(candidate, evidence=evidence))
    return kept


class CandidatePool:
    """Merges the sources' proposals: a product keeps each source's best evidence."""

    def __init__(self) -> None:
        self._by_id: dict[str, Candidate] = {}

    def offer(
        self,
        product_id: str,
        source: str,
        score: float,
        anchor: str | None = None,
        payload: dict[str, Any] | None = None,
        vector: Sequence[float] | None = None,
    ) -> None:
        current = self._by_id.get(product_id)
        if current is None:
            current = self._by_id[product_id] = Candidate(product_id)
        if score > current.evidence.get(source, (-math.inf, None))[0]:
            current.evidence[source] = (score, anchor)
        if payload is not None and current.payload is None:
            current.payload = payload
        if vector is not None and current.vector is None:
            current.vector = vector

    def get(self, product_id: str) -> Candidate:
        return self._by_id[product_id]

    def drop(self, product_id: str) -> None:
        self._by_id.pop(product_id, None)

    def __contains__(self, product_id: str) -> bool:
        return product_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Candidate]:
        return list(self._by_id.values())


@dataclass
class CoVisits:
    """Co-visitation and history pairs of the shopper's latest items (``anchors``, newest first),
    summed per candidate at three reaches; ``best`` names the anchor that contributed most.

    >>> cv = CoVisits.gather(["a", "b"], {"a": [("x", 2.0)], "b": [("x", 1.0), ("y", 5.0)]}, {}, {"a": 4.0}, decay=0.5)
    >>> cv.last["x"], cv.recent["x"], cv.recent["y"], cv.confidence["x"], cv.best["y"]
    (2.0, 2.5, 2.5, 0.5, 'b')
    """

    last: dict[str, float] = field(default_factory=dict)  # with the newest anchor
    last3: dict[str, float] = field(default_factory=dict)
    recent: dict[str, float] = field(default_factory=dict)  # decayed sum over every anchor
    confidence: dict[str, float] = field(default_factory=dict)  # P(candidate | newest anchor)
    confidence3: dict[str, float] = field(default_factory=dict)  # summed over the three newest
    history_last: dict[str, float] = field(default_factory=dict)  # divided by sqrt(anchor interactions)
    history_last3: dict[str, float] = field(default_factory=dict)
    history_recent: dict[str, float] = field(default_factory=dict)
    best: dict[str, str] = field(default_factory=dict)

    @classmethod
    def gather(
        cls, anchors: list[str], neighbours: dict[str, Pairs], history: dict[str, Pairs], interactions: dict[str, float], decay: float = 0.9
    ) -> "CoVisits":
        cv = cls()
        strongest: dict[str, float] = {}
        for n, anchor in enumerate(anchors):
            weight = decay**n
            seen_often = max(1.0, interactions.get(anchor, 0.0))
            for item, count in neighbours.get(anchor, ()):
                if n == 0:
                    cv.last[item] = count
                    cv.confidence[item] = count / seen_often
                if n < 3:
                    cv.last3[item] = cv.last3.get(item, 0.0) + count
                    cv.confidence3[item] = cv.confidence3.get(item, 0.0) + count / seen_often
                contribution = weight * count
                cv.recent[item] = cv.recent.get(item, 0.0) + contribution
                if contribution > strongest.get(item, 0.0):
                    strongest[item], cv.best[item] = contribution, anchor
            spread = math.sqrt(seen_often)
            for item, pairs in history.get(anchor, ()):
                value = pairs / spread
                if n == 0:
                    cv.history_last[item] = value
                if n < 3:
                    cv.history_last3[item] = cv.history_last3.get(item, 0.0) + value
                cv.history_recent[item] = cv.history_recent.get(item, 0.0) + weight * value
                if item not in cv.best:
                    cv.best[item] = anchor
        return cv

    def top(self, scores: dict[str, float], limit: int) -> list[tuple[str, float]]:
        return sorted(scores.items(), key=lambda kv: -kv[1])[:limit]


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else vector
