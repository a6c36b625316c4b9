"""Joining a shopper's choice with the list it was chosen from: the ranking's training examples.

The recommender logs every served list with the features of its candidates
(``RecommendationServed``); the profiles worker keeps a shopper's latest lists in Redis. When
the shopper then clicks, carts or buys a product that was a candidate, the product's row is
the chosen one and rows of candidates passed over are the skipped ones: items that were shown
(and, when the widget reported impressions, actually seen) and a sample of the candidates
that ranked lower.

>>> served = ServedList("r1", 100.0, 2, ["a", "b", "c", "d"], ("x",), np.arange(4, dtype=np.float32)[:, None])
>>> chosen, skipped = choice(served, "c", impressed=None, negatives=3, rng=random.Random(0))
>>> chosen, sorted(s["x"] for s in skipped)
({'x': 2.0}, [0.0, 1.0, 3.0])
>>> choice(served, "zzz", impressed=None, negatives=3, rng=random.Random(0)) is None
True
"""

import base64
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from schemas import RecommendationServed


@dataclass(frozen=True)
class ServedList:
    request_id: str
    served_at: float
    shown: int  # the first ``shown`` products were in the answer, in order
    products: list[str]
    names: tuple[str, ...]
    rows: np.ndarray  # one row of features per product
    experiment: tuple[str, str] | None = None  # (experiment id, variant) that ranked it
    teams: tuple[str, str, tuple[str, ...]] | None = None  # interleaving: (control, challenger, team of each shown product)

    @classmethod
    def from_json(cls, value: bytes) -> "ServedList":
        """From a ``RecommendationServed`` the worker already validated when it stored it (no second validation)."""
        raw = json.loads(value)
        names = tuple(raw["feature_names"])
        rows = np.frombuffer(base64.urlsafe_b64decode(raw["features"]), dtype="<f4").reshape(len(raw["products"]), len(names))
        served_at = datetime.fromisoformat(raw["served_at"]).timestamp()
        tag, drafted = raw.get("experiment"), raw.get("interleaving")
        experiment = (str(tag["experiment_id"]), str(tag["variant"])) if tag else None
        teams = (str(drafted["control"]), str(drafted["challenger"]), tuple(drafted["teams"])) if drafted else None
        if teams is not None and (len(teams[2]) != int(raw["shown"]) or not set(teams[2]) <= set(teams[:2])):
            teams = None  # not as the contract has it: no team gets credit rather than the wrong one
        return cls(raw["request_id"], served_at, int(raw["shown"]), list(raw["products"]), names, rows, experiment, teams)

    @classmethod
    def from_contract(cls, served: RecommendationServed) -> "ServedList":
        rows = np.frombuffer(served.features, dtype="<f4").reshape(len(served.products), len(served.feature_names))
        tag, drafted = served.experiment, served.interleaving
        experiment = (tag.experiment_id, tag.variant) if tag else None
        teams = (drafted.control, drafted.challenger, tuple(drafted.teams)) if drafted else None
        products = list(served.products)
        return cls(
            served.request_id, served.served_at.timestamp(), served.shown, products, tuple(served.feature_names), rows, experiment, teams
        )

    def row(self, n: int) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.names, self.rows[n], strict=True)}


def pick_list(lists: Sequence[ServedList], request_id: str | None, at: float, max_age_s: float) -> ServedList | None:
    """The list a choice at time ``at`` was made from: the one its click names, else the newest
    served before it (with a few seconds' grace for clocks) and no older than ``max_age_s``."""
    if request_id is not None:
        for served in lists:
            if served.request_id == request_id:
                return served
    candidates = [s for s in lists if s.served_at <= at + 5.0 and at - s.served_at <= max_age_s]
    return max(candidates, key=lambda s: s.served_at, default=None)


def showed(lists: Sequence[ServedList], request_id: str | None, product: str, at: float, window_s: float) -> ServedList | None:
    """The list a choice of ``product`` at ``at`` is credited to: the one its click names, if it
    showed the product; else the newest that showed it within ``window_s`` before (a few seconds'
    grace for clocks). Candidates below the fold were not shown and earn no credit.

    >>> a = ServedList("a", 100.0, 1, ["p1", "p2"], ("x",), np.zeros((2, 1), dtype=np.float32))
    >>> b = ServedList("b", 200.0, 2, ["p2", "p3"], ("x",), np.zeros((2, 1), dtype=np.float32))
    >>> [showed([b, a], None, p, 250.0, 600.0) for p in ("p1", "p3", "p9")] == [a, b, None]
    True
    >>> showed([b, a], "a", "p2", 250.0, 600.0) is None, showed([b, a], None, "p1", 800.0, 600.0) is None
    (True, True)
    """
    if request_id is not None:
        named = next((s for s in lists if s.request_id == request_id), None)
        if named is not None:
            return named if product in named.products[: named.shown] and at - named.served_at <= window_s else None
    fits = [s for s in lists if s.served_at <= at + 5.0 and at - s.served_at <= window_s and product in s.products[: s.shown]]
    return max(fits, key=lambda s: s.served_at, default=None)


def choice(
    served: ServedList, chosen: str, impressed: set[str] | None, negatives: int, rng: random.Random, shown_negatives: int | None = None
) -> tuple[dict[str, float], list[dict[str, float]]] | None:
    """(chosen row, skipped rows), or None when ``chosen`` was not among the candidates.

    Up to ``shown_negatives`` (default: half) of the skipped rows are shown items passed over (only
    those reported as seen, when impressions came in), the rest a random sample of the lower
    candidates: shown items are the informative negatives, the sample keeps the ranking honest
    below the fold.
    """
    try:
        n = served.products.index(chosen)
    except ValueError:
        return None
    shown = [i for i in range(served.shown) if i != n and (impressed is None or served.products[i] in impressed)]
    below = [i for i in range(served.shown, len(served.products)) if i != n]
    take_shown = shown[: max(negatives // 2 if shown_negatives is None else shown_negatives, negatives - len(below))]
    rest = rng.sample(below, min(len(below), negatives - len(take_shown)))
    skipped = [served.row(i) for i in take_shown + rest]
    return (served.row(n), skipped) if skipped else None
