"""The ranking's features: one function computes them for every candidate of a request.

The same numbers serve twice. The recommender ranks with them, then logs them with the list
it served (``RecommendationServed``); the profiles worker trains the ranking on those logged
rows when the shopper chooses something (``services.profiles.choices``). Training never
recomputes a feature, so training and serving cannot drift apart.

Every feature is a candidate's raw evidence, not a score squeezed into a range by hand:

- co-visitation with the shopper's latest items, at three reaches (the newest item, the three
  newest, up to twenty with decaying weight) and as P(candidate | item) for the newest and the
  three newest;
- history pairs: items near each other in shoppers' histories, across sessions, normalised by
  how often both occur (cosine-like), at the same three reaches;
- the item-to-item model (EASE over whole histories): what everything the shopper ever touched
  says about the candidate, summed, and the same with older items weighing less;
- the crowd: decayed popularity as of now, interactions so far, the share of them that were
  choices (click, cart, purchase);
- the shopper and the item: category share, likeness to the taste vector and to recent items,
  the factorisation's score, price against the shopper's usual, product age, new and unclicked;
- which sources proposed it;
- ``position``: where it was shown. Logged for learning, always 0 when ranking, so the
  ranking learns position bias into this weight instead of mistaking it for relevance.

>>> e = Evidence.empty(2, now=86400.0 * 10, new_for_s=86400.0 * 3)
>>> e.covisit_last[:] = [3.0, 0.0]; e.listed_ts[:] = [0.0, 86400.0 * 9]; e.sources = [{"covisit"}, {"new"}]
>>> X = feature_matrix(e)
>>> X.shape == (2, len(FEATURES)), round(float(X[0, FEATURES.index("covisit_last")]), 3)
(True, 1.386)
>>> X[:, FEATURES.index("unclicked_new")].tolist(), X[:, FEATURES.index("from_new")].tolist()
([0.0, 1.0], [0.0, 1.0])
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from models.ranking import LinearScorer

SOURCES = ("covisit", "history", "items", "trending", "trending_in", "affinity", "taste", "recent", "context", "new", "catalogue", "looks")

Transform = Callable[["Evidence"], np.ndarray]


@dataclass(frozen=True)
class Feature:
    """One ranking feature, declared once: its name, the candidate source whose evidence it is
    (which reason it speaks for; None: no source's), and how it is computed from the evidence."""

    name: str
    source: str | None
    compute: Transform


def _relative(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else np.zeros_like(values)


def _age_s(e: "Evidence") -> np.ndarray:
    return np.where(np.isnan(e.listed_ts), np.inf, np.maximum(0.0, e.now - np.nan_to_num(e.listed_ts)))


def _price_gap(e: "Evidence") -> np.ndarray:
    if e.usual_log_price is None:
        return np.zeros(len(e.price))
    return np.log1p(np.maximum(0.0, e.price)) - e.usual_log_price


def _proposed_by(source: str) -> Transform:
    return lambda e: np.array([source in s for s in e.sources], dtype=float)


DECLARED: tuple[Feature, ...] = (
    Feature("covisit_last", "covisit", lambda e: np.log1p(e.covisit_last)),
    Feature("covisit_last3", "covisit", lambda e: np.log1p(e.covisit_last3)),
    Feature("covisit_recent", "covisit", lambda e: np.log1p(e.covisit_recent)),
    Feature("covisit_recent_rel", "covisit", lambda e: _relative(e.covisit_recent)),
    Feature("covisit_confidence", "covisit", lambda e: e.covisit_confidence),
    Feature("covisit_confidence3", "covisit", lambda e: e.covisit_confidence3),
    Feature("history_last", "history", lambda e: np.log1p(e.history_last)),
    Feature("history_last3", "history", lambda e: np.log1p(e.history_last3)),
    Feature("history_recent", "history", lambda e: np.log1p(10.0 * e.history_recent)),
    Feature("history_recent_rel", "history", lambda e: _relative(e.history_recent)),
    Feature("item_model", "items", lambda e: e.item_model),
    Feature("item_model_recent", "items", lambda e: e.item_model_recent),
    Feature("item_model_rel", "items", lambda e: _relative(e.item_model)),
    Feature("trending", "trending", lambda e: np.log1p(e.trending)),
    Feature("trending_rel", "trending", lambda e: _relative(e.trending)),
    Feature("interactions", "trending", lambda e: np.log1p(e.interactions)),
    Feature("choice_rate", "trending", lambda e: (e.choices + 1.0) / (e.interactions + 2.0)),
    Feature("category_share", "trending_in", lambda e: e.category_share),
    Feature("taste", "taste", lambda e: e.taste),
    Feature("likeness", "recent", lambda e: e.likeness),
    Feature("looks", "looks", lambda e: e.looks),
    Feature("affinity", "affinity", lambda e: e.affinity),
    Feature("price_gap", None, _price_gap),
    Feature("age_days", None, lambda e: np.log1p(np.minimum(_age_s(e), 3650 * 86400.0) / 86400.0)),
    Feature("unclicked_new", "new", lambda e: ((_age_s(e) < e.new_for_s) & (e.interactions <= 0)).astype(float)),
    *(Feature(f"from_{s}", s, _proposed_by(s)) for s in SOURCES),
    # Logged for learning, always 0 when ranking: the ranking learns position bias into this weight.
    Feature("position", None, lambda e: np.zeros(len(e.covisit_last))),
)

FEATURES: tuple[str, ...] = tuple(f.name for f in DECLARED)
SOURCE_OF: dict[str, str | None] = {f.name: f.source for f in DECLARED}

# How the ranking orders candidates until the learned ranker has seen enough choices
# (raw features, hand-set): behaviour around the shopper's own items first, then likeness,
# then the crowd. Chosen on the MovieLens validation window and the synthetic shop
# (docs/benchmarks.md).
PRIOR = {
    "covisit_recent_rel": 1.0,
    "history_recent_rel": 1.0,
    "item_model_rel": 1.0,
    "covisit_last": 0.3,
    "trending_rel": 0.3,
    "category_share": 0.3,
    "taste": 0.5,
    "likeness": 0.5,
    "looks": 0.5,
    "affinity": 0.1,
    "from_context": 1.0,
    "unclicked_new": 0.1,
}


def prior_scorer() -> LinearScorer:
    return LinearScorer.fixed(FEATURES, PRIOR)


def popularity_scorer() -> LinearScorer:
    """The shop's decayed popularity alone: what an experiment's weak control ranks by."""
    return LinearScorer.fixed(FEATURES, {"trending_rel": 1.0})


def position_value(position: int | None) -> float:
    """What the ``position`` feature logs for an item shown at ``position`` (0-based); None: not shown."""
    return 0.0 if position is None else 1.0 / math.log2(position + 2)


@dataclass
class Evidence:
    """Each candidate's raw evidence, one array entry per candidate (filled in by the engine)."""

    now: float
    new_for_s: float
    covisit_last: np.ndarray
    covisit_last3: np.ndarray
    covisit_recent: np.ndarray
    covisit_confidence: np.ndarray
    covisit_confidence3: np.ndarray
    history_last: np.ndarray
    history_last3: np.ndarray
    history_recent: np.ndarray
    item_model: np.ndarray  # B summed over the shopper's whole history
    item_model_recent: np.ndarray  # ... older items weighing less
    trending: np.ndarray  # decayed popularity as of now
    interactions: np.ndarray
    choices: np.ndarray
    impressions: np.ndarray  # times a widget reported it seen
    category_share: np.ndarray
    taste: np.ndarray  # cosine to the preference vector
    likeness: np.ndarray  # best cosine to a recent item
    looks: np.ndarray  # best cosine of its picture to a recent item's picture (0: not asked, or no picture)
    affinity: np.ndarray
    price: np.ndarray
    listed_ts: np.ndarray  # NaN where unknown
    usual_log_price: float | None = None
    sources: Sequence[set[str]] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int, now: float, new_for_s: float) -> "Evidence":
        arrays: dict[str, Any] = {f.name: np.zeros(n) for f in fields(cls) if f.type == "np.ndarray" or f.type is np.ndarray}
        arrays["listed_ts"] = np.full(n, np.nan)
        return cls(now=now, new_for_s=new_for_s, **arrays, sources=[set() for _ in range(n)])


def feature_matrix(e: Evidence) -> np.ndarray:
    """One row per candidate, one column per name in :data:`FEATURES` (``position`` is 0)."""
    n = len(e.covisit_last)
    return np.column_stack([f.compute(e) for f in DECLARED]) if n else np.zeros((0, len(FEATURES)))
