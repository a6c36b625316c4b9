"""Diversifying a ranked list: maximal marginal relevance over the fused vectors.

>>> vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
>>> mmr(np.array([1.0, 0.95, 0.6]), vectors, k=2, lambda_=0.5)
[0, 2]
"""

import numpy as np


def spread(scores: np.ndarray) -> np.ndarray:
    """Scores rescaled to span [0, 1], so MMR trades relevance and likeness on the same scale.

    >>> spread(np.array([0.5, 0.6, 0.7])).round(2).tolist()
    [0.0, 0.5, 1.0]
    >>> spread(np.array([-3.0, -3.0])).tolist()  # ties: all equally relevant, no 0/0
    [1.0, 1.0]
    """
    if scores.size == 0:
        return scores.astype(float)
    low, high = float(scores.min()), float(scores.max())
    if high - low < 1e-12:
        return np.ones_like(scores, dtype=float)
    return (scores - low) / (high - low)


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
