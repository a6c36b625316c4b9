"""What an evaluation asks and how every answer is scored, the same in every mode (the in-process
replay and the live run through the services): the stream's windows, the questions, the
baselines' answers, and the tallies.

Before each choice (click, cart, purchase) in the served part of the stream, the shopper's
top k is asked for. In the scored window, the answer is scored against the product actually
chosen, after dropping everything the shopper had already interacted with; the baselines
answer the same questions from the same events. Nothing about the answer is learned before
it is scored.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.ranking import CoVisitation, DecayedPopularity, Popularity, RankingTally
from models.ranking.baselines import Baseline
from models.ranking.learners import CHOICE_KINDS
from schemas import ClickEvent, ProductListed
from services.evaluation.logs import Dataset, Truth
from services.recommender.engine import Pick, Recommendations

SHELFSIGHT = "Shelfsight"


@dataclass(frozen=True)
class ReplayConfig:
    window: str = "test"  # "test": the last eval_size choices; "validation": the eval_size before them
    eval_size: int = 10_000
    warmup_size: int = 10_000  # choices before the window that are served (and learned from) but not scored
    k: int = 10
    recall_at: int = 100
    rate: float = 15.0  # events per second in the served part: sets how many events the services' cadence spans
    batch_size: int = 500  # events per handler call where nothing is served in between
    seed: int = 0


@dataclass
class ColdStartTally:
    """How lists treat products nobody had touched yet, and the shopper's hidden taste."""

    lists: int = 0
    items: int = 0
    on_taste: int = 0
    new: int = 0
    new_matching: int = 0
    new_questions: int = 0  # choices of a product listed after the stream began
    new_hits: int = 0  # ... found in the top k
    first_shown: dict[str, float] = field(default_factory=dict)  # new product → hours from its listing to its first top k
    listed: dict[str, float] = field(default_factory=dict)  # new product → when it was listed

    def add(
        self, items: list[str], taste: str | None, truth: Truth, untouched_new: set[str], chosen: str | None = None, at: float = 0.0
    ) -> None:
        self.lists += 1
        self.items += len(items)
        for item in items:
            matching = taste is not None and truth.categories.get(item) == taste
            self.on_taste += matching
            if item in untouched_new:
                self.new += 1
                self.new_matching += matching
            if item in self.listed and item not in self.first_shown:
                self.first_shown[item] = max(0.0, at - self.listed[item]) / 3600
        if chosen is not None and chosen in self.listed:
            self.new_questions += 1
            self.new_hits += chosen in items

    def summary(self) -> dict[str, float]:
        lists = max(1, self.lists)
        hours = sorted(self.first_shown.values())
        return {
            "new_per_list": self.new / lists,
            "new_matching_per_list": self.new_matching / lists,
            "on_taste": self.on_taste / max(1, self.items),
            "new_hr": self.new_hits / self.new_questions if self.new_questions else float("nan"),
            "new_shown": len(hours) / len(self.listed) if self.listed else float("nan"),
            "hours_to_first_shown": hours[len(hours) // 2] if hours else float("nan"),
        }


@dataclass
class SourceTally:
    """Per candidate source: how often it proposes the product chosen next, how many top-k places
    go to products it proposed, and how many of them name it in their reason."""

    questions: int = 0
    places: int = 0
    hits: int = 0
    found: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    placed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    named: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    named_hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, answer: Recommendations, shown: list[Pick], chosen: str) -> None:
        self.questions += 1
        for source in answer.sources.get(chosen, ()):
            self.found[source] += 1
        for pick in shown:
            self.places += 1
            self.named[pick.source] += 1
            for source in answer.sources.get(pick.product_id, ()):
                self.placed[source] += 1
            if pick.product_id == chosen:
                self.hits += 1
                self.named_hits[pick.source] += 1

    def summary(self) -> dict[str, dict[str, float]]:
        sources = sorted(set(self.found) | set(self.placed) | set(self.named), key=lambda s: -self.placed.get(s, 0))
        q, places, hits = max(1, self.questions), max(1, self.places), max(1, self.hits)
        return {
            s: {
                "finds_choice": self.found.get(s, 0) / q,
                "places": self.placed.get(s, 0) / places,
                "named": self.named.get(s, 0) / places,
                "named_hits": self.named_hits.get(s, 0) / hits,
            }
            for s in sources
        }


def windows(events: list[ClickEvent], config: ReplayConfig) -> tuple[set[int], set[int]]:
    """(scored event indexes, served event indexes): choices only, counted from the end."""
    choices = [n for n, e in enumerate(events) if e.kind.value in CHOICE_KINDS]
    end = len(choices) if config.window == "test" else max(0, len(choices) - config.eval_size)
    start = max(0, end - config.eval_size)
    scored = choices[start:end]
    served = choices[max(0, start - config.warmup_size) : end]
    return set(scored), set(served)


class Scoreboard:
    """Every recommender's answers to the questions of one stream, and what each shopper had seen."""

    def __init__(self, dataset: Dataset, config: ReplayConfig) -> None:
        self.dataset, self.config = dataset, config
        self.baselines: list[Baseline] = [Popularity(), DecayedPopularity(7 * 86400.0), CoVisitation(5)]
        names = [SHELFSIGHT, *(b.name for b in self.baselines)]
        self.tallies = {n: RankingTally(config.k, config.recall_at) for n in names}
        self.cold = {n: ColdStartTally() for n in names} if dataset.truth is not None else {}
        self.sources = SourceTally()
        self.scored, self.served = windows(dataset.events, config)
        self.opening = min(self.served) if self.served else len(dataset.events)  # the first event of the served part
        self.dropped = 0  # already-seen items Shelfsight returned, dropped before scoring
        self._seen: dict[str, set[str]] = defaultdict(set)
        self._touched: set[str] = set()
        self._listed_mid_stream: set[str] = set()
        self._first_event = dataset.events[0].occurred_at.timestamp() if dataset.events else 0.0

    def scored_span(self) -> tuple[str, str]:
        times = [self.dataset.events[n].occurred_at for n in sorted(self.scored)]
        return (times[0].isoformat(), times[-1].isoformat()) if times else ("", "")

    def listed(self, products: list[ProductListed]) -> None:
        mid_stream = {p.product_id: p.listed_at.timestamp() for p in products if p.listed_at.timestamp() > self._first_event}
        self._listed_mid_stream.update(mid_stream)
        for tally in self.cold.values():
            tally.listed.update(mid_stream)

    def score(
        self,
        event: ClickEvent,
        items: list[str],
        ranked: list[str],
        vectors: Callable[[list[str]], np.ndarray | None],
        answer: Recommendations | None = None,
        picks: list[Pick] | None = None,
    ) -> None:
        """Shelfsight's answer (``items`` shown, ``ranked`` its candidates best first) and the
        baselines' to the question before ``event``; ``answer`` and ``picks``, where the answer
        came from in-process, also count its candidate sources."""
        config, at = self.config, event.occurred_at.timestamp()
        rated = self._seen[event.user_id]
        shown = [p for p in items if p not in rated]
        self.dropped += len(items) - len(shown)
        if answer is not None and picks is not None:
            self.sources.add(answer, [p for p in picks if p.product_id not in rated], event.product_id)
        lists = {SHELFSIGHT: (shown, [p for p in ranked if p not in rated])}
        for b in self.baselines:
            best = b.rank(event.user_id, config.recall_at, rated, at)
            lists[b.name] = (best[: config.k], best)
        untouched_new = self._listed_mid_stream - self._touched
        truth = self.dataset.truth
        taste = truth.tastes.get(event.user_id) if truth else None
        for name, (top, pool) in lists.items():
            self.tallies[name].add(top, event.product_id, pool, vectors(top))
            if truth is not None:
                self.cold[name].add(top[: config.k], taste, truth, untouched_new, event.product_id, at)

    def learn(self, event: ClickEvent) -> None:
        """What the baselines learn of ``event``, and what the shopper has now seen."""
        if event.kind.value in {"impression", "dismiss"}:
            return
        for b in self.baselines:
            b.learn_one(event.user_id, event.product_id, event.occurred_at.timestamp())
        self._seen[event.user_id].add(event.product_id)
        self._touched.add(event.product_id)
