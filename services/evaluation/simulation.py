"""`shelfsight evaluate-exploration DIR`: shoppers who react to what they are shown, to measure how
new products get their chance.

A log cannot measure exploration: its shoppers click what the log says, whatever they were
shown. Here, on a synthetic shop (``truth.json``: each shopper's favourite category), the
services' own code (as in the replay) first applies the log's history up to the new products'
listing; then simulated shoppers ask for recommendations and react:

- every product has an appeal: the catalogue's drawn from Beta(2, 6) (a quarter, on average),
  the new products' from Beta(1, 3) (the same on average, but some are loved and some are not);
- a shopper clicks a shown product of their favourite category with probability its appeal
  times the position's weight (1 / log2(position + 2)), another category's with 1 %; at most one
  click per list, the first that fires down the list;
- every shown product is reported as an impression, as the widget does, and the click names
  the list (``context.request_id``), so the services learn from both.

Each exploration policy (``SHELFSIGHT_EXPLORATION``: ``fixed``, ``bandit``) meets the same
shoppers in the same order with the same appeals and random draws. Per list: expected clicks
(1 − Π(1 − p) over the list), expected clicks on new products, and regret (the expected clicks
of the best list for that shopper — the k products of highest click probability they have not
clicked yet — minus those of the list shown).
"""

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from schemas import ClickEvent, encode
from services.evaluation.logs import Dataset
from services.evaluation.replay import Cadence, _Run
from services.profiles.handler import RawMessage
from services.recommender.engine import Query
from state.checkpoints import dump


@dataclass(frozen=True)
class SimulationPlan:
    steps: int = 2_000
    k: int = 10
    seconds_per_list: float = 20.0  # of the shop's clock between two shoppers' requests
    other_category: float = 0.01  # chance of clicking a shown product outside the favourite category
    seed: int = 0


@dataclass
class Outcome:
    """Per list: expected clicks, of them on new products, and regret."""

    clicks: list[float] = field(default_factory=list)
    new_clicks: list[float] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)
    new_shown: int = 0
    realised_clicks: int = 0

    def summary(self) -> dict[str, float]:
        def mean_and_half_width(values: list[float]) -> tuple[float, float]:
            array = np.asarray(values, dtype=float)
            return float(array.mean()), float(1.96 * array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan

        out: dict[str, float] = {}
        for name, values in (("clicks", self.clicks), ("new_clicks", self.new_clicks), ("regret", self.regret)):
            out[name], out[f"{name}_ci"] = mean_and_half_width(values)
        out["new_per_list"] = self.new_shown / max(1, len(self.clicks))
        out["realised_clicks"] = float(self.realised_clicks)
        return out


class ShopSimulation:
    """Shoppers with hidden tastes asking ``run``'s recommender and reacting to it."""

    def __init__(self, run: _Run, dataset: Dataset, plan: SimulationPlan) -> None:
        if dataset.truth is None:
            raise ValueError("the simulation needs a synthetic shop's truth.json")
        self.run, self.dataset, self.plan, self.truth = run, dataset, plan, dataset.truth
        draws = np.random.default_rng(plan.seed)
        products = sorted(dataset.products, key=lambda p: p.listed_at)
        self.opening = products[-1].listed_at.timestamp()  # the new products' listing
        self.new = {p.product_id for p in products if p.listed_at.timestamp() >= self.opening}
        self.ids = [p.product_id for p in products]
        self.appeal = np.array([draws.beta(1, 3) if i in self.new else draws.beta(2, 6) for i in self.ids])
        self.category = np.array([self.truth.categories.get(i, "") for i in self.ids])
        self.index = {i: n for n, i in enumerate(self.ids)}
        self.clicked: dict[str, set[str]] = {}
        self.rng = random.Random(plan.seed)
        self.cadence = Cadence(run.config.rate, run.replay.settings.learners_checkpoint_s, run.replay.settings.learners_refresh_s)
        self.events = 0

    def go(self) -> Outcome:
        self._load_history()
        shoppers = sorted(self.truth.tastes)
        outcome = Outcome()
        for step in range(self.plan.steps):
            user = self.rng.choice(shoppers)
            at = self.opening + 3600.0 + step * self.plan.seconds_per_list
            self._step(user, at, step, outcome)
        return outcome

    def _load_history(self) -> None:
        run = self.run
        products = sorted(self.dataset.products, key=lambda p: p.listed_at)
        for start in range(0, len(products), 64):
            batch = products[start : start + 64]
            run._index(batch, batch[-1].listed_at.timestamp())
        history = [e for e in self.dataset.events if e.occurred_at.timestamp() < self.opening]
        for start in range(0, len(history), 500):
            chunk = history[start : start + 500]
            self._apply(chunk, chunk[-1].occurred_at.timestamp())
        for event in history:
            if event.kind.value == "click":
                self.clicked.setdefault(event.user_id, set()).add(event.product_id)
        self._pace()

    def _step(self, user: str, at: float, step: int, outcome: Outcome) -> None:
        run, k = self.run, self.plan.k
        run.now = at
        answer = run.engine.recommend(Query(user, k, request_id=f"sim-{step}"))
        shown = [p.product_id for p in answer.items]
        chances = self._chances(user)
        weights = 1.0 / np.log2(np.arange(len(shown)) + 2.0)
        p = np.array([chances[self.index[i]] for i in shown]) * weights if shown else np.zeros(0)
        outcome.clicks.append(1.0 - float(np.prod(1.0 - p)))
        outcome.new_clicks.append(1.0 - float(np.prod([1.0 - q for i, q in zip(shown, p, strict=True) if i in self.new])))
        outcome.regret.append(self._best(user, chances, k) - outcome.clicks[-1])
        outcome.new_shown += sum(i in self.new for i in shown)
        events = [self._event(user, i, "impression", at, step, n) for n, i in enumerate(shown)]
        for product, chance in zip(shown, p, strict=True):
            if self.rng.random() < chance:
                events.append(self._event(user, product, "click", at + 5.0, step, len(events)))
                self.clicked.setdefault(user, set()).add(product)
                outcome.realised_clicks += 1
                break
        self._apply(events, at + 5.0)
        self._pace()

    def _chances(self, user: str) -> np.ndarray:
        """Each product's click probability for ``user`` at the top of a list (0 once clicked)."""
        chances = np.where(self.category == self.truth.tastes[user], self.appeal, self.plan.other_category)
        for product in self.clicked.get(user, ()):
            chances[self.index[product]] = 0.0
        return chances

    def _best(self, user: str, chances: np.ndarray, k: int) -> float:
        best = np.sort(chances)[::-1][:k] / np.log2(np.arange(k) + 2.0)
        return 1.0 - float(np.prod(1.0 - best))

    def _event(self, user: str, product: str, kind: str, at: float, step: int, n: int) -> ClickEvent:
        return ClickEvent.model_validate_json(
            json.dumps(
                {
                    "event_id": f"sim-{step}-{n}",
                    "user_id": user,
                    "product_id": product,
                    "kind": kind,
                    "occurred_at": datetime.fromtimestamp(at, UTC).isoformat(),
                    "session_id": f"{user}-sim",
                    "context": {"widget": "simulation", "position": min(n, 100), "request_id": f"sim-{step}"},
                }
            )
        )  # as a widget sends it: JSON

    def _apply(self, events: list[ClickEvent], at: float) -> None:
        """As the profiles worker applies them."""
        run = self.run
        run.now = max(run.now, at)
        raws = [RawMessage(e.user_id.encode(), encode(e).value, 0, self.events + n) for n, e in enumerate(events)]
        self.events += len(events)
        run.loop.run_until_complete(run.handler.handle(raws))

    def _pace(self) -> None:
        """The worker's checkpoints and serve's reloads at the shop's event rate."""
        checkpoint, reload = self.cadence.due(self.events)
        run = self.run
        if checkpoint:
            run.sync.set(run.keys.learners("main"), dump(run.learners, run.secret))
        if reload:
            run.cache.refresh()


def report(outcomes: dict[str, Outcome]) -> str:
    """A markdown table of the policies, and the bandit's gain over fixed places."""
    rows = {name: o.summary() for name, o in outcomes.items()}
    lines = [
        "| exploration | expected clicks per list | on new products | regret per list | new products per list | clicks |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['clicks']:.4f} ± {m['clicks_ci']:.4f} | {m['new_clicks']:.4f} ± {m['new_clicks_ci']:.4f} | "
            f"{m['regret']:.4f} ± {m['regret_ci']:.4f} | {m['new_per_list']:.2f} | {m['realised_clicks']:.0f} |"
        )
    return "\n".join(lines) + "\n\n" + json.dumps(rows, indent=1)
