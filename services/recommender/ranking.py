"""Ranking: blend the click model, the factorisation, popularity and retrieval; then diversify.

>>> RankWeights.parse("retrieval=0.5,click=0.5")
RankWeights(retrieval=0.5, click=0.5, affinity=0.0, popularity=0.0)
>>> vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
>>> mmr(np.array([1.0, 0.95, 0.6]), vectors, k=2, lambda_=0.5)
[0, 2]
"""

from dataclasses import dataclass, fields

import numpy as np


@dataclass(frozen=True)
class RankWeights:
    retrieval: float = 0.45
    click: float = 0.35
    affinity: float = 0.1
    popularity: float = 0.1

    @classmethod
    def parse(cls, text: str) -> "RankWeights":
        """From ``name=value,…`` (SHELFSIGHT_RANK_WEIGHTS); names left out weigh 0."""
        values = {name: 0.0 for name in (f.name for f in fields(cls))}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in values:
                raise ValueError(f"unknown ranking weight {name!r}; known: {', '.join(values)}")
            values[name] = float(value)
        return cls(**values)


def blend(weights: RankWeights, retrieval: np.ndarray, click: np.ndarray, affinity: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Every input is in [0, 1] per candidate; the result is their weighted mean."""
    total = weights.retrieval + weights.click + weights.affinity + weights.popularity or 1.0
    return (
        weights.retrieval * retrieval + weights.click * click + weights.affinity * affinity + weights.popularity * popularity
    ) / total


def spread(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled to span [0, 1], so MMR trades relevance and likeness on the same scale.

    >>> spread(np.array([0.5, 0.6, 0.7])).round(2).tolist()
    [0.0, 0.5, 1.0]
    """
    low, high = float(scores.min(initial=0.0)), float(scores.max(initial=0.0))
    if scores.size == 0 or high - low < 1e-12:
        return np.ones_like(scores)
    return (scores - scores.min()) / (high - scores.min())


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Maximal marginal relevance: greedily take the item best at relevance minus likeness to those taken.

    ``vectors`` are unit rows (a zero row never counts as similar); the result indexes ``scores``.
    """
    n = len(scores)
    if n == 0:
        return []
    chosen: list[int] = []
    closest = np.full(n, -np.inf)  # highest similarity of each item to the chosen ones
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        value = lambda_ * scores - (1.0 - lambda_) * penalty
        value[~available] = -np.inf
        best = int(np.argmax(value))
        chosen.append(best)
        available[best] = False
        closest = np.maximum(closest, vectors @ vectors[best])
    return chosen
