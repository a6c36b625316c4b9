"""Candidate generation: every source proposes products with a retrieval score in [0, 1].

Sources, and what each one stands for:

- ``taste``: Qdrant nearest neighbours of the shopper's preference vector (fused space);
- ``recent``: a Qdrant recommend query from recent positives against dismissed items;
- ``context``: products that look like the one on the page;
- ``covisit``: products viewed in the same sessions as the shopper's recent ones;
- ``affinity``: the River factorisation's best items for a shopper it knows;
- ``trending`` / ``trending_in``: forward-decayed popularity, overall and in top categories;
- ``catalogue``: a sample of the catalogue, when nothing else knows anything yet.

>>> pool = CandidatePool()
>>> pool.offer("a", 0.4, "trending")
>>> pool.offer("a", 0.9, "covisit", anchor="b")
>>> pool.offer("a", 0.5, "taste")
>>> best = pool.get("a"); (best.retrieval, best.source, best.anchor, sorted(best.evidence))
(0.9, 'covisit', 'b', ['covisit', 'taste', 'trending'])
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VISUAL_SOURCES = frozenset({"taste", "recent", "context", "catalogue"})


@dataclass
class Candidate:
    product_id: str
    retrieval: float  # the best normalised score any source gave it
    source: str  # the source of that score: it picks the reason
    anchor: str | None = None  # the product that explains it ("looks like …", "often viewed with …")
    evidence: dict[str, tuple[float, str | None]] = field(default_factory=dict)  # source → (score, anchor)
    payload: dict[str, Any] | None = None
    vector: Sequence[float] | None = None  # fused vector as stored (unit length); arrays are made in one go when ranking


class CandidatePool:
    """Merges the sources' proposals; a product keeps its best score and the source behind it."""

    def __init__(self) -> None:
        self._by_id: dict[str, Candidate] = {}

    def offer(self, product_id: str, score: float, source: str, anchor: str | None = None,
              payload: dict[str, Any] | None = None, vector: Sequence[float] | None = None) -> None:
        current = self._by_id.get(product_id)
        if current is None:
            current = self._by_id[product_id] = Candidate(product_id, score, source, anchor)
        elif score > current.retrieval:
            current.retrieval, current.source, current.anchor = score, source, anchor
        if score >= current.evidence.get(source, (-1.0, None))[0]:
            current.evidence[source] = (score, anchor)
        if payload is not None and current.payload is None:
            current.payload = payload
        if vector is not None and current.vector is None:
            current.vector = vector

    def get(self, product_id: str) -> Candidate:
        return self._by_id[product_id]

    def drop(self, product_id: str) -> None:
        self._by_id.pop(product_id, None)

    def __len__(self) -> int:
        return len(self._by_id)

    def all(self) -> list[Candidate]:
        return list(self._by_id.values())


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else vector


def likeness(cosine: float) -> float:
    """A cosine similarity mapped to [0, 1]."""
    return (cosine + 1.0) / 2.0


def scaled(rows: list[tuple[str, float]], low: float, high: float) -> list[tuple[str, float]]:
    """Scores of ``rows`` rescaled by the largest into [low, high] (counts and popularity have no fixed range).

    >>> scaled([("a", 10.0), ("b", 5.0)], 0.5, 1.0)
    [('a', 1.0), ('b', 0.75)]
    """
    top = max((s for _, s in rows), default=0.0)
    if top <= 0:
        return [(i, low) for i, _ in rows]
    return [(i, low + (high - low) * max(0.0, s) / top) for i, s in rows]
