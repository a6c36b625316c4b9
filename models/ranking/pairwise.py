"""Learning to rank from what shoppers chose among what they were shown.

Each choice gives pairs: the chosen item's features minus a skipped item's features is a
positive example for a logistic regression without intercept, so the model learns which
differences make an item preferred (RankNet with a linear scorer). River learns it online
with AdaGrad, after a running StandardScaler has put the features on one scale. It counts as
``learned`` once it has seen ``warmup`` pairs; until then its user ranks with a prior
(``LinearScorer.fixed``).

>>> prior = LinearScorer.fixed(("covisit", "popular"), {"popular": 1.0})
>>> int(prior.score(np.array([[3.0, 1.0], [0.0, 2.0]])).argmax())  # popularity alone
1
>>> ranker = PairwiseRanker(("covisit", "popular"), warmup=20)
>>> for _ in range(40):
...     ranker.learn_one({"covisit": 3.0, "popular": 1.0}, [{"covisit": 0.0, "popular": 2.0}])
>>> ranker.learned, int(ranker.scorer().score(np.array([[3.0, 1.0], [0.0, 2.0]])).argmax())
(True, 0)
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from river import linear_model, optim, preprocessing


@dataclass(frozen=True)
class LinearScorer:
    """``score(X) = ((X - offsets) * scales) @ weights``, one row per candidate: the ranker as arrays,
    so a request scores its candidates in a few vector operations instead of one River call each."""

    names: tuple[str, ...]
    offsets: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    learned: bool

    @classmethod
    def fixed(cls, names: Sequence[str], weights: Mapping[str, float]) -> "LinearScorer":
        """Hand-set weights on the raw features (names left out weigh nothing)."""
        names = tuple(names)
        return cls(names, np.zeros(len(names)), np.ones(len(names)), np.array([weights.get(n, 0.0) for n in names]), learned=False)

    def score(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.offsets) * self.scales) @ self.weights

    def contributions(self, row: np.ndarray) -> dict[str, float]:
        """How much each feature added to one candidate's score (for explaining a ranking)."""
        parts = (row - self.offsets) * self.scales * self.weights
        return {n: float(v) for n, v in zip(self.names, parts, strict=True) if v}


class PairwiseRanker:
    """An online pairwise ranker over named features; hyperparameters only here, as in River."""

    def __init__(
        self,
        features: Sequence[str],
        learning_rate: float = 0.02,  # chosen on the MovieLens validation window (docs/benchmarks.md)
        l2: float = 1e-4,
        warmup: int = 500,
    ) -> None:
        self.features = tuple(features)
        self.learning_rate = learning_rate
        self.l2 = l2
        self.warmup = warmup
        self.scaler = preprocessing.StandardScaler()
        # No intercept: a pair's label only depends on the difference of two items.
        self.model = linear_model.LogisticRegression(optimizer=optim.AdaGrad(learning_rate), l2=l2, intercept_lr=0.0)
        self.pairs = 0
        self.choices = 0

    @property
    def learned(self) -> bool:
        return self.pairs >= self.warmup

    def learn_one(self, chosen: Mapping[str, float], skipped: Sequence[Mapping[str, float]]) -> None:
        """One choice: ``chosen`` was preferred over each of ``skipped``."""
        if not skipped:
            return
        for row in (chosen, *skipped):
            self.scaler.learn_one(dict(row))
        top = self.scaler.transform_one(dict(chosen))
        for other in skipped:
            scaled = self.scaler.transform_one(dict(other))
            self.model.learn_one({f: top.get(f, 0.0) - scaled.get(f, 0.0) for f in self.features}, True)
            self.pairs += 1
        self.choices += 1

    def predict_one(self, x: Mapping[str, float]) -> float:
        """A score: higher ranks first (the log-odds that ``x`` is preferred over an average item)."""
        return float(self.scorer().score(np.array([[x.get(f, 0.0) for f in self.features]]))[0])

    def scorer(self, names: Sequence[str] | None = None) -> LinearScorer:
        """What the ranker has learned, as arrays over ``names`` (default: its own features);
        a name it does not know weighs nothing."""
        names = tuple(names or self.features)
        means = np.array([self.scaler.means.get(n, 0.0) for n in names])
        variances = np.array([self.scaler.vars.get(n, 0.0) for n in names])
        scales = np.divide(1.0, np.sqrt(variances), out=np.zeros_like(variances), where=variances > 0)  # River's rule
        weights = np.array([self.model.weights.get(n, 0.0) for n in names])
        return LinearScorer(names, means, scales, weights, learned=self.learned)
