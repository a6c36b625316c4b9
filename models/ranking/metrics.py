"""Ranking quality over a stream of test-then-learn questions: "which item comes next?".

For every question a recommender gives a ranked list; the answer is the item the shopper
actually chose next. HR@k counts answers found in the top k, NDCG@k discounts them by rank
(1 / log2(rank + 2)), MRR averages 1 / (rank + 1) within the top k; coverage is the share of
the catalogue that ever appeared in a top k, and intra-list diversity the mean pairwise
cosine distance inside a list.

>>> tally = RankingTally(k=2)
>>> tally.add(["a", "b", "c"], "b")  # found at rank 1 (0-based)
1
>>> tally.add(["c", "a"], "x")
>>> s = tally.summary(catalogue=4)
>>> s["hr"], round(s["ndcg"], 3), s["mrr"], s["coverage"]
(0.5, 0.315, 0.25, 0.75)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def rank_of(ranked: Sequence[str], target: str) -> int | None:
    """The 0-based position of ``target`` in ``ranked``, or None."""
    for position, item in enumerate(ranked):
        if item == target:
            return position
    return None


def intra_list_diversity(vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cosine) of a list's unit vectors; 0 for lists under two.

    >>> round(intra_list_diversity(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])), 3)
    0.667
    """
    n = len(vectors)
    if n < 2:
        return 0.0
    similarity = vectors @ vectors.T
    return float((n * n - similarity.sum()) / (n * (n - 1)))


@dataclass
class RankingTally:
    """Accumulates one recommender's answers; ``recall_at`` also checks a longer list (the candidate pool)."""

    k: int = 10
    recall_at: int = 100
    questions: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    rr_sum: float = 0.0
    pool_hits: int = 0
    diversity_sum: float = 0.0
    diversity_lists: int = 0
    shown: set[str] = field(default_factory=set)
    trace: list[tuple[bool, float]] = field(default_factory=list)  # (hit, ndcg) per question, for plots

    def add(self, ranked: Sequence[str], target: str, pool: Sequence[str] | None = None, vectors: np.ndarray | None = None) -> int | None:
        """One question; ``ranked`` is the full answer (only its top k counts), ``pool`` a longer list
        whose top ``recall_at`` is checked for recall (default: ``ranked``). Returns the rank in the top k."""
        top = list(ranked[: self.k])
        self.questions += 1
        self.shown.update(top)
        position = rank_of(top, target)
        gain = 0.0
        if position is not None:
            self.hits += 1
            gain = 1.0 / math.log2(position + 2)
            self.ndcg_sum += gain
            self.rr_sum += 1.0 / (position + 1)
        longer = ranked if pool is None else pool
        if rank_of(list(longer[: self.recall_at]), target) is not None:
            self.pool_hits += 1
        if vectors is not None and len(vectors) >= 2:
            self.diversity_sum += intra_list_diversity(vectors[: self.k])
            self.diversity_lists += 1
        self.trace.append((position is not None, gain))
        return position

    def summary(self, catalogue: int) -> dict[str, float]:
        n = max(1, self.questions)
        return {
            "questions": float(self.questions),
            "hr": self.hits / n,
            "ndcg": self.ndcg_sum / n,
            "mrr": self.rr_sum / n,
            "recall": self.pool_hits / n,
            "coverage": len(self.shown) / max(1, catalogue),
            "diversity": self.diversity_sum / self.diversity_lists if self.diversity_lists else float("nan"),
            "hr_ci": self.half_width(hit=True),
            "ndcg_ci": self.half_width(hit=False),
        }

    def half_width(self, hit: bool = True) -> float:
        """Half the 95 % interval of the mean HR (``hit``) or NDCG over the questions: 1.96 standard errors.

        >>> tally = RankingTally(k=1)
        >>> for target in "aaab":
        ...     _ = tally.add(["a"], target)
        >>> round(tally.half_width(), 3)  # 1.96 * sqrt(0.75 * 0.25 / 3), with the sample variance
        0.49
        """
        values = np.array([h if hit else g for h, g in self.trace], dtype=float)
        if len(values) < 2:
            return float("nan")
        return float(1.96 * values.std(ddof=1) / math.sqrt(len(values)))

    def rolling(self, window: int) -> list[tuple[int, float, float]]:
        """(questions so far, HR@k, NDCG@k) over consecutive windows of ``window`` questions."""
        points = []
        for start in range(0, len(self.trace), window):
            chunk = self.trace[start : start + window]
            if chunk:
                points.append((start + len(chunk), sum(h for h, _ in chunk) / len(chunk), sum(g for _, g in chunk) / len(chunk)))
        return points
