"""`shelfsight evaluate-experiments DIR`: do live experiments find what they should, and how much
traffic do they need? Through the running services, on a synthetic shop whose shoppers' tastes
are known.

`serve` and `profiles` run as processes (``services.evaluation.live``); the shop's catalogue and
history go in over POST /v1/events. Then, per scenario, an experiment is created in the run's
Redis as `shelfsight experiments create` would, and simulated shoppers shop:

- a shopper (drawn at random from the shop's) asks for 10 recommendations over HTTP;
- every product has an appeal drawn once from Beta(2, 6), and every shopper an eagerness drawn
  once from Gamma(0.5, 2) (mean 1: most shoppers rarely click, a few click a lot, as in real
  shops); a shown product of the shopper's favourite category is clicked with probability
  min(1, eagerness × appeal) × 1 / log2(position + 2), another category's with eagerness × 1 %;
  at most one click per list, the first that fires down the list;
- the impressions and the click (naming the list) are posted as the widget posts them;
- every ``every`` lists the report is read over GET /v1/experiments/{id}, as an operator would,
  and the run stops at the first decision or after ``lists``.

Scenarios: A/A (the same ranking twice: no winner should be declared), A/B and interleaving of
the prior ranking against popularity alone (a ranking that ignores the shopper: a large loss), and
against the prior choosing for variety alone after the first place (a small loss). The figure of merit is the lists
each needed to decide.
"""

import json
import math
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import redis
from scipy import stats

from schemas.experiments import ExperimentSpec, Ranking, VariantSpec
from services.evaluation.live import Api, LiveRun, running
from services.evaluation.logs import Dataset
from services.evaluation.replay import ReplayConfig
from services.redis_clients import sync_redis
from services.settings import Settings
from state import experiments as stored
from state.keys import Keys

OTHER_CATEGORY = 0.01


@dataclass(frozen=True)
class Scenario:
    key: str  # what `--only` names
    name: str
    mode: Literal["ab", "interleave"]
    control: Ranking
    challenger: Ranking
    expect: str  # "no decision yet" (A/A) or "worse"
    knobs: tuple[tuple[str, float], ...] = ()  # the challenger's own ranking settings

    def variants(self) -> list[VariantSpec]:
        return [
            VariantSpec(name="control", share=0.5, ranking=self.control),
            VariantSpec.model_validate({"name": "challenger", "share": 0.5, "ranking": self.challenger, **dict(self.knobs)}),
        ]


# A small loss as well as a large one: a list made for variety alone after its first place (MMR's
# λ at 0, against the shop's 0.75) shows fewer products of the shopper's favourite category. At
# λ 0.3 and 0.1 the loss was too small for either test to find within 2,400 lists (one run each).
WIDER = (("mmr_lambda", 0.0),)
SCENARIOS = (
    Scenario("aa", "A/A: prior against prior", "ab", "prior", "prior", "no decision yet"),
    Scenario("aa-interleaved", "A/A: prior against prior, interleaved", "interleave", "prior", "prior", "no decision yet"),
    Scenario("ab-popularity", "A/B: popularity alone against prior", "ab", "prior", "popularity", "worse"),
    Scenario("interleaved-popularity", "interleaving: popularity alone against prior", "interleave", "prior", "popularity", "worse"),
    Scenario("ab-variety", "A/B: variety alone (mmr_lambda 0) against prior", "ab", "prior", "prior", "worse", WIDER),
    Scenario(
        "interleaved-variety", "interleaving: variety alone (mmr_lambda 0) against prior", "interleave", "prior", "prior", "worse", WIDER
    ),
)


@dataclass
class Outcome:
    scenario: Scenario
    seed: int
    lists: int = 0  # served when the run stopped
    decided_at: int | None = None  # lists when the decision came
    decision: str = "no decision yet"
    clicks: int = 0
    readings: list[dict[str, object]] = field(default_factory=list)

    @property
    def right(self) -> bool:
        return self.decision == self.scenario.expect


@dataclass(frozen=True)
class Plan:
    lists: int = 6000  # per run that should decide, at most
    aa_lists: int = 400  # per A/A run: it never should, so it runs this long
    every: int = 5  # lists between two readings of the report
    aa_runs: int = 5
    runs: int = 3  # of each of the other scenarios
    seed: int = 0
    eager: bool = True  # shoppers differ in how readily they click (False: all alike)
    only: tuple[str, ...] = ()  # the scenarios' keys to run (empty: all)


class ExperimentRun:
    """The simulated shoppers of one deployment, across scenarios."""

    def __init__(self, dataset: Dataset, api: Api, client: redis.Redis, keys: Keys, seed: int, eager: bool = True) -> None:
        assert dataset.truth is not None
        self.tastes = dict(dataset.truth.tastes)
        self.categories = dict(dataset.truth.categories)
        rng = random.Random(seed)
        self.appeal = {p.product_id: rng.betavariate(2, 6) for p in dataset.products}
        self.shoppers = sorted(self.tastes)
        self.eagerness = {s: rng.gammavariate(0.5, 2.0) if eager else 1.0 for s in self.shoppers}
        self.api, self.client, self.keys = api, client, keys

    def run(self, scenario: Scenario, seed: int, plan: Plan, report: Callable[[str], dict[str, object]]) -> Outcome:
        experiment_id = f"sim-{uuid.uuid4().hex[:10]}"
        spec = ExperimentSpec(experiment_id=experiment_id, mode=scenario.mode, variants=scenario.variants())
        client = self.client
        stored.create(client, self.keys, spec, datetime.now(UTC))
        outcome = Outcome(scenario, seed)
        rng = random.Random(seed)
        try:
            self._wait_assigned(experiment_id)
            cap = plan.aa_lists if scenario.expect == "no decision yet" else plan.lists
            while outcome.lists < cap:
                outcome.clicks += self._one_list(rng)
                outcome.lists += 1
                if outcome.lists % plan.every == 0 and self._read(outcome, report(experiment_id)):
                    break
        finally:
            stored.stop(client, self.keys, experiment_id, datetime.now(UTC))
        return outcome

    def _wait_assigned(self, experiment_id: str, timeout: float = 30.0) -> None:
        """Until `serve` has read the new experiment (within its poll)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.api.answer(self.shoppers[0], 10)
            if (answer.get("experiment") or {}).get("experiment_id") == experiment_id:
                return
            time.sleep(0.5)
        raise TimeoutError(f"serve did not take up experiment {experiment_id} within {timeout:.0f} s")

    def _one_list(self, rng: random.Random) -> int:
        shopper = rng.choice(self.shoppers)
        answer = self.api.answer(shopper, 10)
        items = [i["product_id"] for i in answer.get("items", [])]
        now = datetime.now(UTC).isoformat()
        events = [_event(shopper, p, "impression", n, answer["request_id"], now) for n, p in enumerate(items)]
        taste = self.tastes[shopper]
        for n, product in enumerate(items):
            base = self.appeal.get(product, 0.25) if self.categories.get(product) == taste else OTHER_CATEGORY
            if rng.random() < min(1.0, self.eagerness[shopper] * base) / math.log2(n + 2):
                events.append(_event(shopper, product, "click", n, answer["request_id"], now))
                break
        self.api.post(events)
        return len(events) - len(items)

    def _read(self, outcome: Outcome, report: dict[str, object]) -> bool:
        found = report.get("interleaving") or (report.get("comparisons") or [{}])[0]  # type: ignore[index]
        decision = str(found.get("decision", "no decision yet"))  # type: ignore[union-attr]
        outcome.readings.append({"lists": outcome.lists, "p": found.get("p_value_running"), "decision": decision})  # type: ignore[union-attr]
        if decision != "no decision yet":
            outcome.decision, outcome.decided_at = decision, outcome.lists
            return True
        return False


def _event(user: str, product: str, kind: str, position: int, request_id: str, at: str) -> dict[str, object]:
    return {
        "event_id": f"sim-{uuid.uuid4().hex}",
        "user_id": user,
        "product_id": product,
        "kind": kind,
        "occurred_at": at,
        "session_id": f"s-{user}",
        "context": {"widget": "simulation", "position": position, "request_id": request_id},
    }


def run_experiments(
    settings: Settings,
    checkpoint: Path,
    dataset: Dataset,
    plan: Plan,
    progress: bool,
    each: Callable[[list[Outcome]], None] = lambda _so_far: None,
) -> list[Outcome]:
    """Every scenario through one deployment of `serve` and `profiles`; ``each`` is given the
    outcomes so far after every run (a long evaluation keeps what it has measured if stopped)."""
    with running(settings, checkpoint, rate=50.0) as (where, services):
        loader = LiveRun(dataset, ReplayConfig(rate=1000.0), where, services)
        loader.load_history(dataset.events, progress)  # the shop's whole log first: the learned state a shop has
        keys = Keys.of(where.settings)
        client = sync_redis(settings.redis_url, settings.redis_cluster)
        run = ExperimentRun(dataset, loader.api, client, keys, plan.seed, plan.eager)

        def report(experiment_id: str) -> dict[str, object]:
            return loader.api.get_json(f"/v1/experiments/{experiment_id}")

        outcomes = []
        for scenario in (s for s in SCENARIOS if not plan.only or s.key in plan.only):
            for n in range(plan.aa_runs if scenario.expect == "no decision yet" else plan.runs):
                outcome = run.run(scenario, plan.seed * 1000 + n, plan, report)
                outcomes.append(outcome)
                each(outcomes)
                if progress:
                    print(f"  {scenario.name} #{n}: {outcome.decision} after {outcome.lists} lists", flush=True)
        loader.api.close()
        return outcomes


def summary(outcomes: list[Outcome], plan: Plan) -> str:
    """A markdown table: per scenario, runs that decided as expected and the lists they needed;
    then the A/A false-positive rate and, per loss, interleaving's lists against A/B's."""
    lines = [
        f"Through `serve` and `profiles` as processes; at most {plan.lists} lists a run ({plan.aa_lists} for A/A), "
        f"the report read every {plan.every}.",
        "",
        "| scenario | runs | as expected | lists to decide (each run) | mean [95 % interval] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for scenario in SCENARIOS:
        mine = [o for o in outcomes if o.scenario == scenario]
        if not mine:
            continue
        needed = ", ".join(str(o.decided_at) if o.decided_at is not None else f">{o.lists}" for o in mine)
        mean = _mean_interval([o.decided_at or o.lists for o in mine]) if scenario.expect != "no decision yet" else "–"
        if mean != "–" and any(o.decided_at is None for o in mine):
            mean = f"at least {mean}"  # undecided runs count at their cap
        lines.append(f"| {scenario.name} | {len(mine)} | {sum(o.right for o in mine)} | {needed} | {mean} |")
    return "\n".join([*lines, "", *_false_positives(outcomes), *_traffic_ratios(outcomes, plan.seed)])


def _mean_interval(values: list[int]) -> str:
    """Mean ± 1.96 standard errors over the runs."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{mean:.0f} [{mean - 1.96 * se:.0f}, {mean + 1.96 * se:.0f}]"


def _false_positives(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for scenario in (s for s in SCENARIOS if s.expect == "no decision yet"):
        runs = [o for o in outcomes if o.scenario == scenario]
        if not runs:
            continue
        wrong = sum(not o.right for o in runs)
        low = float(stats.beta.ppf(0.025, wrong, len(runs) - wrong + 1)) if wrong else 0.0
        high = float(stats.beta.ppf(0.975, wrong + 1, len(runs) - wrong)) if wrong < len(runs) else 1.0
        lines.append(
            f"- {scenario.name}: {wrong} of {len(runs)} runs declared a winner: "
            f"false-positive rate {wrong / len(runs):.3f} [{low:.3f}, {high:.3f}] (Clopper–Pearson)."
        )
    return lines


def _traffic_ratios(outcomes: list[Outcome], seed: int) -> list[str]:
    """Per loss, interleaving's mean lists to decide over A/B's, with a bootstrap interval over the
    runs. A run that did not decide counts at its cap: an undecided A/B run makes the ratio an
    upper bound."""
    lines = []
    for ab in (s for s in SCENARIOS if s.mode == "ab" and s.expect == "worse"):
        il = next(
            (
                s
                for s in SCENARIOS
                if s.mode == "interleave" and (s.control, s.challenger, s.knobs) == (ab.control, ab.challenger, ab.knobs)
            ),
            None,
        )
        a = [o.decided_at or o.lists for o in outcomes if o.scenario == ab]
        b = [o.decided_at or o.lists for o in outcomes if o.scenario == il]
        if not a or not b:
            continue
        rng = random.Random(seed)
        draws = sorted(statistics.fmean(rng.choices(b, k=len(b))) / statistics.fmean(rng.choices(a, k=len(a))) for _ in range(2000))
        capped = any(o.decided_at is None for o in outcomes if o.scenario == ab)
        lines.append(
            f"- {ab.name.split(': ', 1)[1]}: interleaving needed {'at most ' if capped else ''}"
            f"{statistics.fmean(b) / statistics.fmean(a):.2f}× the lists of A/B [{draws[50]:.2f}, {draws[1949]:.2f}] (bootstrap over runs)"
            + (": A/B runs that did not decide count at their cap." if capped else ".")
        )
    return lines


def as_json(outcomes: list[Outcome]) -> str:
    return json.dumps(
        [
            {
                "scenario": o.scenario.name,
                "seed": o.seed,
                "lists": o.lists,
                "decided_at": o.decided_at,
                "decision": o.decision,
                "clicks": o.clicks,
                "readings": o.readings,
            }
            for o in outcomes
        ],
        indent=2,
    )
