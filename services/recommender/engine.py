"""The recommender itself: read the shopper, gather candidates, rank, diversify, explore, explain, log.

It holds no Kafka or HTTP code: the responder, the API, the benchmarks and the evaluation
replay all call :meth:`Recommender.recommend` and :meth:`Recommender.similar`. Every served
list goes to ``on_served`` with the features it was ranked by (the API and the responder
publish it on ``recommendations.served``; the ranking learns from it).
"""

import math
import random
import time
import uuid
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from models.ranking import LinearScorer
from schemas import RecommendationServed
from schemas.experiments import ExperimentTag, Teams, VariantSpec
from services.experiments.assignment import Assignment
from services.experiments.interleaving import team_draft
from services.recommender.candidates import Candidate, CandidatePool, CoVisits, unit, without_sources
from services.recommender.features import FEATURES, SOURCE_OF, Evidence, feature_matrix, popularity_scorer, position_value, prior_scorer
from services.recommender.just_posted import JustPosted
from services.recommender.learned import Learned
from services.recommender.ranking import mmr, spread
from services.recommender.reasons import credited, explain
from services.recommender.shopper import Shopper, ShopperReader, Signals
from services.vectors.store import ProductStore, SearchFilters, VectorQuery, matcher
from state.values import KIND_WEIGHTS

# What a product card and the ranking need from the payload (the thumbnail stays behind).
CARD_FIELDS = ("title", "category", "category_source", "price", "currency", "in_stock", "delisted", "listed_ts", "image_url", "has_image")
POSITION = FEATURES.index("position")
# A dismissed product against a recent one, as the profile weighs a dismissal against a click.
_DISMISSED = -KIND_WEIGHTS["dismiss"] / KIND_WEIGHTS["click"]


class UnknownProduct(LookupError):
    pass


@dataclass(frozen=True)
class Query:
    user_id: str
    k: int = 10
    filters: SearchFilters = field(default_factory=lambda: SearchFilters(in_stock=True))  # as in the contract
    context_product_id: str | None = None
    request_id: str | None = None  # echoed in the served log; made up when None
    experiment: ExperimentTag | None = None  # the variant the shopper is in: named on the served list
    arm: VariantSpec | None = None  # the variant whose list this is (its ranking, knobs, sources); None: the tuning's
    challenger: VariantSpec | None = None  # interleaving: the variant team-drafted against ``arm``
    experiments: bool = True  # False: never assigned (a caller not known to act for the shopper)


@dataclass(frozen=True)
class Pick:
    product_id: str
    score: float
    reason: str
    payload: dict[str, Any]
    source: str = ""  # the candidate source its reason names


@dataclass(frozen=True)
class Recommendations:
    items: list[Pick]
    candidates: int
    seconds: float
    request_id: str = ""
    ranked: list[str] = field(default_factory=list)  # every candidate, best first (recall is measured on it)
    ranker: str = "prior"
    sources: dict[str, frozenset[str]] = field(default_factory=dict)  # candidate → the sources that proposed it
    experiment: ExperimentTag | None = None
    model_version: str | None = None  # the catalogue version it was made from (None: the engine was given none)


@dataclass(frozen=True)
class Tuning:
    """Sizes and knobs of one recommendation (the settings fill them in)."""

    ranking: str = "learned"  # "learned": the pairwise ranker once it has learned enough; "prior": hand-set weights only
    mmr_lambda: float = 0.75
    new_for_s: float = 72 * 3600.0
    per_source: int = 24  # nearest neighbours asked of each Qdrant source
    covisit_items: int = 150  # candidates taken from each of co-visitation and history pairs
    affinity_items: int = 15
    item_model_items: int = 50  # candidates taken from the item-to-item model
    diversify_from: int = 4  # MMR looks at this many times k of the best-scored candidates
    explore_slots: int = 2  # at most this many places of a list go to new products nobody has clicked yet …
    explore_margin: float = 0.05  # … that look more like the shopper's taste than the average candidate by this much
    exploration: str = "fixed"  # "fixed": those places, always; "bandit": new products earn places by Thompson sampling
    explore_prior: float = 10.0  # the bandit's prior, in impressions at the shop's click-through rate
    looks_alike: float = 0.5  # cosine (of pictures, or of fused vectors) from which likeness is said
    looks_items: int = 12  # products asked for per recent picture in the picture space, among all and among the new
    served_candidates: int = 200  # candidates logged with their features for the ranking to learn from


Sink = Callable[[RecommendationServed], None]
# The engine of a model version by name, held while the request runs on it (None: not open).
Versions = Callable[[str], AbstractContextManager["Recommender | None"]]


class Recommender:
    def __init__(
        self,
        store: ProductStore,
        reader: ShopperReader,
        learned: Callable[[], Learned],
        dims: int,
        tuning: Tuning | None = None,
        clock: Callable[[], float] = time.time,
        on_served: Sink | None = None,
        pictures: bool = True,
        posted: JustPosted | None = None,
        model_version: Callable[[], str | None] = lambda: None,
        assign: Callable[[str], Assignment | None] = lambda _user: None,
        guard: Callable[[str, ExperimentTag, float, bool], None] = lambda _user, _tag, _seconds, _ok: None,
        saved: Callable[[str], Learned | None] = lambda _name: None,
        versions: "Versions" = lambda _name: nullcontext(None),
        copies: bool = True,
    ) -> None:
        """``pictures``: whether the store has a picture space (``image`` vectors) to search;
        ``posted``: what this process's API accepted a moment ago (read over Redis); ``assign``:
        a shopper's variant in the running experiment and its ranking (``RunningExperiments``);
        ``guard``: told each experiment request's time and success, for the variants' guardrails;
        ``saved``: the learners saved under a name, for a variant that ranks with them;
        ``versions``: the engine of another model version, for a variant served from it, held while
        the request uses it (None: not open);
        ``copies``: whether the tastes and product copies in Redis are in ``store``'s space (False
        for a staged version: they are worked out from the store at each request)."""
        self._store = store
        self._reader = reader
        self._learned = learned
        self._dims = dims  # of the fused space
        self.tuning = tuning or Tuning()
        self._clock = clock
        self._on_served = on_served
        self._pictures = pictures
        self.posted = posted or JustPosted()
        self._model_version = model_version  # the live one, named on every served list
        self._assign = assign
        self._guard = guard
        self._saved = saved
        self._versions = versions
        self._copies = copies
        self._prior = prior_scorer()
        self._popularity = popularity_scorer()  # an experiment's deliberately weak variant

    def follow_model(self, dims: int) -> None:
        """The live model version changed (``shelfsight reembed``): fused vectors now have ``dims`` values."""
        self._dims = dims

    def serving_from(self, store: ProductStore, dims: int, model_version: str, reader: ShopperReader) -> "Recommender":
        """An engine like this one, for a staged model version's collection: its lists are this
        shop's (learners, tuning, served log), made from ``store``'s vectors. It assigns nobody: the
        engine that assigned the shopper calls it (``versions``)."""
        return Recommender(
            store,
            reader,
            self._learned,
            dims,
            self.tuning,
            self._clock,
            self._on_served,
            self._pictures,
            self.posted,
            model_version=lambda: model_version,
            saved=self._saved,
            copies=False,
        )

    def recommend(self, query: Query) -> Recommendations:
        started = time.perf_counter()
        if query.experiment is None and query.experiments:
            assigned = self._assign(query.user_id)
            if assigned is not None:
                query = replace(query, experiment=assigned.tag, arm=assigned.arm, challenger=assigned.challenger)
        if query.experiment is None:
            return self._recommend(query, started)
        wanted = query.arm.model if query.arm is not None else None
        with nullcontext(self) if wanted is None or wanted == self._model_version() else self._versions(wanted) as engine:
            if engine is None:
                # Not open here (yet, or it could not be): the shopper still gets a list, the live
                # version's, credited to no variant; the variant's error rate shows what it missed.
                self._guard(query.user_id, query.experiment, time.perf_counter() - started, False)
                return self._recommend(replace(query, experiment=None, arm=None, challenger=None), started)
            try:
                result = engine._recommend(query, started)
            except Exception:
                self._guard(query.user_id, query.experiment, time.perf_counter() - started, False)  # the variant's error rate
                raise
        self._guard(query.user_id, query.experiment, result.seconds, True)
        return result

    def _recommend(self, query: Query, started: float) -> Recommendations:
        shopper, signals = self._reader.read(query.user_id, self._clock(), self.posted.of(query.user_id))
        if not self._copies:
            shopper, signals = self._in_own_space(shopper, signals)
        # Time is measured by the shop's clock (the latest event applied), not the wall: ages, what is
        # new, popularity and the served list's time then agree with the events, however far behind.
        now = signals.as_of
        learned = self._learned_of(query.arm)
        tuning = self._tuning_of(query.arm)
        context_id = query.context_product_id
        filters = query.filters.excluding(
            [*shopper.purchased, *shopper.recent, *shopper.seen, *shopper.dismissed, *([context_id] if context_id else [])]
        )
        pool = CandidatePool()
        context = self._context(context_id) if context_id else None
        covisits = CoVisits.gather(
            shopper.recent[: self._reader.limits.covisit_anchors], signals.neighbours, signals.history, signals.anchor_interactions
        )
        self._from_qdrant(pool, shopper, signals, filters, context, context_id, now, tuning.explore_slots > 0)
        self._from_behaviour(pool, shopper, signals, covisits, learned)
        self._complete(pool, filters)
        passes = matcher(filters)
        candidates = [c for c in pool.all() if c.payload is not None and not c.payload.get("delisted") and passes(c.payload)]
        if query.arm is not None and query.arm.without:
            candidates = without_sources(candidates, frozenset(query.arm.without))
        if not candidates:
            return Recommendations(
                [], len(pool), time.perf_counter() - started, query.request_id or "", model_version=self._model_version()
            )
        scorer = self._scorer(learned, tuning.ranking)
        vectors = self._unit_vectors(candidates)
        evidence = self._evidence(candidates, vectors, shopper, signals, covisits, learned, now)
        features = feature_matrix(evidence)
        scores = scorer.score(features)
        request_id = query.request_id or f"r-{uuid.uuid4().hex}"
        order = self._choose(candidates, vectors, features, scores, query.k, evidence, request_id, tuning)
        credit = _credit_by_source(scorer, features[order])
        teams = None
        if query.arm is not None and query.challenger is not None:
            order, credit, teams = self._interleave(
                (query.arm.name, query.challenger), order, scorer, candidates, vectors, features, evidence, request_id
            )
        picks = self._explain(order, candidates, vectors, scores, credit, shopper, signals, context_id, now)
        ranked = [candidates[i].product_id for i in np.argsort(-scores, kind="stable")]
        ranker = "learned" if scorer.learned else ("popularity" if scorer is self._popularity else "prior")
        if self._on_served is not None:
            served = self._served(request_id, query.user_id, order, candidates, features, scores, ranker, now)
            if query.experiment is not None:
                drafted = (
                    Teams(control=query.arm.name, challenger=query.challenger.name, teams=teams)
                    if query.arm and query.challenger and teams
                    else None
                )
                served = served.model_copy(update={"experiment": query.experiment, "interleaving": drafted})
            self._on_served(served)
        sources = {c.product_id: frozenset(c.evidence) for c in candidates}
        return Recommendations(
            picks, len(pool), time.perf_counter() - started, request_id, ranked, ranker, sources, query.experiment, self._model_version()
        )

    def _in_own_space(self, shopper: Shopper, signals: Signals) -> tuple[Shopper, Signals]:
        """A staged version's space has no tastes or product copies in Redis (the profiles worker keeps
        the live version's): the vectors of the shopper's recent and dismissed products come from its
        store, and the taste is their sum: each recent product counted as a click, each dismissed one
        against it as the profile weighs a dismissal (-3 to a click's 2), without the profile's decay
        over days."""
        wanted = list(dict.fromkeys([*shopper.recent, *shopper.dismissed]))
        if not wanted:
            return replace(shopper, vector=None), replace(signals, vectors={})
        found = {
            p.product_id: unit(np.asarray(p.vectors["fused"], dtype=np.float32))
            for p in self._store.get(wanted, with_vectors=("fused",), fields=())
            if "fused" in p.vectors
        }
        taste = None
        liked = [found[i] for i in shopper.recent if i in found]
        if liked:
            disliked = [found[i] for i in shopper.dismissed if i in found]
            taste = unit(np.sum(liked, axis=0) - (_DISMISSED * np.sum(disliked, axis=0) if disliked else 0.0)).astype(np.float32)
        return replace(shopper, vector=taste), replace(signals, vectors=found)

    def _interleave(
        self,
        against: tuple[str, VariantSpec],
        first: list[int],
        scorer: LinearScorer,
        candidates: list[Candidate],
        vectors: np.ndarray,
        features: np.ndarray,
        evidence: Evidence,
        request_id: str,
    ) -> tuple[list[int], list[dict[str, float]], list[str]]:
        """Team-draft the first variant's list with the second's (same candidates, same features;
        each its own ranking, knobs and ranker, from its saved learners if it names some): (merged
        order, each place's credit by the scorer of the team that placed it, the teams)."""
        first_team, challenger = against
        second_team, tuning = challenger.name, self._tuning_of(challenger)
        other = self._scorer(self._learned_of(challenger), tuning.ranking)  # the same features: its own ranker
        second = self._choose(candidates, vectors, features, other.score(features), len(first), evidence, request_id, tuning)
        merged, teams = team_draft(
            first, second, len(first), random.Random(zlib.crc32(f"{request_id}/teams".encode())), (first_team, second_team)
        )
        credit = [
            _credit_by_source(other if team == second_team else scorer, features[[i]])[0] for i, team in zip(merged, teams, strict=True)
        ]
        return merged, credit, teams

    def similar(self, product_id: str, k: int = 10, filters: SearchFilters | None = None) -> Recommendations:
        """Products that look like ``product_id`` (image space when it has a picture, else fused)."""
        started = time.perf_counter()
        found = self._store.get([product_id], with_vectors=True, fields=CARD_FIELDS)
        if not found:
            raise UnknownProduct(product_id)
        product = found[0]
        using = "image" if "image" in product.vectors else "fused"
        wanted = (filters or SearchFilters()).excluding([product_id])
        (hits,) = self._store.query_many(
            [VectorQuery(vector=list(product.vectors[using]), using=using, limit=k, filters=wanted, fields=CARD_FIELDS)]
        )
        title = product.payload.get("title", product_id)
        now = self._clock()
        source = "context_looks" if using == "image" else "context"
        picks = [
            Pick(
                h.product_id,
                round(float(h.score), 6),
                explain(source, h.payload, title, self._is_new(h.payload, now, None)),
                h.payload,
                source,
            )
            for h in hits
            if not h.payload.get("delisted")
        ]
        return Recommendations(picks, len(hits), time.perf_counter() - started)

    # -- candidates ---------------------------------------------------------------------

    def _context(self, product_id: str) -> np.ndarray | None:
        found = self._store.get([product_id], with_vectors=("fused",), fields=())
        return unit(np.asarray(found[0].vectors["fused"], dtype=np.float32)) if found else None

    def _from_qdrant(
        self,
        pool: CandidatePool,
        shopper: Shopper,
        signals: Signals,
        filters: SearchFilters,
        context: np.ndarray | None,
        context_id: str | None,
        now: float,
        explore: bool,
    ) -> None:
        """``explore``: whether the list has places for new products (the "new" source is asked)."""
        limit = self.tuning.per_source
        queries: list[tuple[str, VectorQuery, str | None]] = []  # (source, query, the anchor its hits are like)
        common = {"limit": limit, "filters": filters, "fields": CARD_FIELDS, "with_vector": True}
        # Vectors from before a model change have other dimensions: they cannot be searched with.
        taste = shopper.vector if shopper.vector is not None and shopper.vector.size == self._dims else None
        if taste is not None:
            queries.append(("taste", VectorQuery(vector=taste.tolist(), **common), None))  # type: ignore[arg-type]
            if explore:
                fresh = {**common, "filters": SearchFilters(**{**filters.__dict__, "listed_after": now - self.tuning.new_for_s})}
                queries.append(("new", VectorQuery(vector=taste.tolist(), **fresh), None))  # type: ignore[arg-type]
        usable = {i: v for i, v in signals.vectors.items() if v.size == self._dims}
        positives = [usable[i] for i in shopper.recent if i in usable][: self._reader.limits.anchors]
        negatives = [usable[i] for i in shopper.dismissed if i in usable]
        if positives:
            queries.append(
                (
                    "recent",
                    VectorQuery(positives=tuple(v.tolist() for v in positives), negatives=tuple(v.tolist() for v in negatives), **common),  # type: ignore[arg-type]
                    None,
                )
            )
        queries += self._picture_queries(shopper, filters, now)
        if context is not None:
            queries.append(("context", VectorQuery(vector=context.tolist(), **common), context_id))  # type: ignore[arg-type]
        if not queries and not signals.trending:
            # Nobody has clicked anything yet: show a spread of the catalogue rather than nothing.
            probe = [1.0 / math.sqrt(self._dims)] * self._dims
            queries.append(("catalogue", VectorQuery(vector=probe, **common), None))  # type: ignore[arg-type]
        if not queries:
            return
        results = self._store.query_many([q for _, q, _ in queries])
        for (source, _, anchor), hits in zip(queries, results, strict=True):
            for hit in hits:
                # A picture query's vectors are pictures: the fused one is fetched with the others (_complete).
                vector = hit.vector if source != "looks" else None
                pool.offer(hit.product_id, source, min(1.0, hit.score), anchor, hit.payload, vector)

    def _picture_queries(self, shopper: Shopper, filters: SearchFilters, now: float) -> list[tuple[str, VectorQuery, str | None]]:
        """``looks``: products whose picture is nearest each recent item's picture, among all and
        among the new ones (for the exploration budget), whatever their titles say."""
        anchors = shopper.recent[: self._reader.limits.anchors]
        if not anchors or not self.tuning.looks_items or not self._pictures:
            return []
        pictures = {
            p.product_id: p.vectors["image"] for p in self._store.get(anchors, with_vectors=("image",), fields=()) if "image" in p.vectors
        }
        fresh = SearchFilters(**{**filters.__dict__, "listed_after": now - self.tuning.new_for_s})
        return [
            (
                "looks",
                VectorQuery(
                    vector=list(pictures[anchor]), using="image", limit=self.tuning.looks_items, filters=wanted, fields=CARD_FIELDS
                ),
                anchor,
            )
            for anchor in anchors
            if anchor in pictures
            for wanted in (filters, fresh)
        ]

    def _from_behaviour(self, pool: CandidatePool, shopper: Shopper, signals: Signals, covisits: CoVisits, learned: Learned) -> None:
        n = self.tuning.covisit_items
        for product_id, score in covisits.top(covisits.recent, n):
            pool.offer(product_id, "covisit", score, covisits.best.get(product_id))
        for product_id, score in covisits.top(covisits.history_recent, n):
            pool.offer(product_id, "history", score, covisits.best.get(product_id))
        for product_id, score in learned.item_model.top(shopper.history, self.tuning.item_model_items):
            pool.offer(product_id, "items", score)
        for product_id, score in learned.affinity.top(shopper.user_id, self.tuning.affinity_items):
            pool.offer(product_id, "affinity", score)
        for category, rows in signals.trending_in.items():
            for product_id, score in rows:
                pool.offer(product_id, "trending_in", score, category)
        for product_id, score in signals.trending:
            pool.offer(product_id, "trending", score)

    def _complete(self, pool: CandidatePool, filters: SearchFilters) -> None:
        """Payloads and fused vectors of the candidates no fused-space query returned (one retrieve)."""
        missing = [c.product_id for c in pool.all() if c.payload is None or c.vector is None]
        for product_id in missing:
            if product_id in filters.exclude:
                pool.drop(product_id)
        wanted = [p for p in missing if p in pool]
        if not wanted:
            return
        for product in self._store.get(wanted, with_vectors=("fused",), fields=CARD_FIELDS):
            candidate = pool.get(product.product_id)
            candidate.payload = candidate.payload or product.payload
            candidate.vector = product.vectors.get("fused")

    # -- ranking --------------------------------------------------------------------------

    def _learned_of(self, arm: VariantSpec | None) -> Learned:
        """The live learners, or those a variant ranks with (saved under a name)."""
        saved = self._saved(arm.learners) if arm is not None and arm.learners else None
        return saved if saved is not None else self._learned()

    def _tuning_of(self, arm: VariantSpec | None) -> Tuning:
        """The shop's tuning, with what an experiment's variant sets for itself."""
        if arm is None:
            return self.tuning
        return replace(self.tuning, ranking=arm.ranking, **arm.knobs)  # type: ignore[arg-type]

    def _scorer(self, learned: Learned, ranking: str) -> LinearScorer:
        if ranking == "learned" and learned.ranker is not None and learned.ranker.learned:
            return learned.ranker
        return self._popularity if ranking == "popularity" else self._prior

    def _unit_vectors(self, candidates: list[Candidate]) -> np.ndarray:
        dims = self._dims
        blank = [0.0] * dims
        vectors = np.array([c.vector if c.vector is not None and len(c.vector) == dims else blank for c in candidates], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)

    def _evidence(
        self,
        candidates: list[Candidate],
        vectors: np.ndarray,
        shopper: Shopper,
        signals: Signals,
        covisits: CoVisits,
        learned: Learned,
        now: float,
    ) -> Evidence:
        ids = [c.product_id for c in candidates]
        e = Evidence.empty(len(candidates), now, self.tuning.new_for_s)
        stats = self._reader.stats(ids, signals.decay_now)
        e.trending, e.interactions, e.choices, e.impressions = stats.trending, stats.interactions, stats.choices, stats.impressions
        spread_of = np.sqrt(np.maximum(1.0, e.interactions))
        for n, c in enumerate(candidates):
            pid = c.product_id
            e.covisit_last[n] = covisits.last.get(pid, 0.0)
            e.covisit_last3[n] = covisits.last3.get(pid, 0.0)
            e.covisit_recent[n] = covisits.recent.get(pid, 0.0)
            e.covisit_confidence[n] = covisits.confidence.get(pid, 0.0)
            e.covisit_confidence3[n] = covisits.confidence3.get(pid, 0.0)
            e.history_last[n] = covisits.history_last.get(pid, 0.0) / spread_of[n]
            e.history_last3[n] = covisits.history_last3.get(pid, 0.0) / spread_of[n]
            e.history_recent[n] = covisits.history_recent.get(pid, 0.0) / spread_of[n]
            payload = c.payload or {}
            e.category_share[n] = shopper.category_share(str(payload.get("category", "")))
            e.price[n] = max(0.0, float(payload.get("price") or 0.0))
            listed = payload.get("listed_ts")
            e.listed_ts[n] = float(listed) if isinstance(listed, (int, float)) else np.nan
        e.sources = [c.sources for c in candidates]
        if shopper.vector is not None and shopper.vector.size == self._dims:
            e.taste = vectors @ shopper.vector
        anchors = [
            unit(signals.vectors[i])
            for i in shopper.recent[: self._reader.limits.anchors]
            if i in signals.vectors and signals.vectors[i].size == self._dims
        ]
        if anchors:
            e.likeness = (vectors @ np.array(anchors).T).max(axis=1)
        e.looks = np.array([c.evidence.get("looks", (0.0, None))[0] for c in candidates], dtype=float)
        e.affinity = learned.affinity.scores(shopper.user_id, ids).astype(float)
        e.item_model, e.item_model_recent = learned.item_model.scores(shopper.history, ids)
        e.usual_log_price = shopper.usual_log_price
        return e

    def _choose(
        self,
        candidates: list[Candidate],
        vectors: np.ndarray,
        features: np.ndarray,
        scores: np.ndarray,
        k: int,
        evidence: Evidence,
        request_id: str,
        tuning: Tuning,
    ) -> list[int]:
        """Indexes into ``candidates``: MMR over the best-scored, then the exploration budget."""
        shortlist = np.argsort(-scores, kind="stable")[: max(k * tuning.diversify_from, 20)]
        order = [int(shortlist[i]) for i in mmr(spread(scores[shortlist]), vectors[shortlist], k, tuning.mmr_lambda)]
        # A new product earns a place by looking like the shopper's taste, in the fused space or by
        # its picture alone (a listing whose title says nothing is placed by its picture).
        taste = features[:, FEATURES.index("taste")]
        looks = features[:, FEATURES.index("looks")]
        unclicked = features[:, FEATURES.index("unclicked_new")] > 0
        typical = float(taste[~unclicked].mean()) if (~unclicked).any() else float(taste.mean())
        fit = np.maximum(taste - typical - tuning.explore_margin, looks - tuning.looks_alike)
        # The bandit needs click-through: without a widget reporting impressions, the fixed places.
        if tuning.exploration == "bandit" and evidence.impressions.sum() > 0:
            young = _listed_within(evidence, tuning.new_for_s)
            return explore_by_sampling(
                order,
                [int(i) for i in np.flatnonzero(young & (fit >= 0))],
                evidence.choices,
                evidence.impressions,
                k // 2,
                tuning.explore_prior,
                _rng(request_id),
            )
        slots = min(tuning.explore_slots, k // 4)
        if not slots:
            return order
        # Products nobody has clicked yet cannot earn behavioural evidence unless they are shown:
        # a bounded number of places go to those that look like the shopper's taste.
        eligible = [int(i) for i in np.argsort(-fit, kind="stable") if unclicked[i] and fit[i] >= 0]
        explorable = set(eligible)
        keep = [i for i in order if i in explorable]
        extra = [i for i in eligible if i not in order][: max(0, slots - len(keep))]
        if extra:
            others = [i for i in order if i not in explorable][: k - len(keep) - len(extra)]
            order = sorted(others + keep, key=order.index) + extra
        return order

    def _explain(
        self,
        order: list[int],
        candidates: list[Candidate],
        vectors: np.ndarray,
        scores: np.ndarray,
        credit: list[dict[str, float]],
        shopper: Shopper,
        signals: Signals,
        context_id: str | None,
        now: float,
    ) -> list[Pick]:
        dims = self._dims
        anchor_vectors = {i: unit(signals.vectors[i]) for i in shopper.recent if i in signals.vectors and signals.vectors[i].size == dims}
        named = {i for n in order for _, a in candidates[n].evidence.values() if a for i in [a]}
        named |= set(anchor_vectors) | ({context_id} if context_id else set())
        titles = self._titles(named)
        picks = []
        for n, contributions in zip(order, credit, strict=True):
            c = candidates[n]
            payload = c.payload or {}
            is_new = self._is_new(payload, now, signals.catalogue_since)
            source, anchor = credited(c.evidence, contributions, self.tuning.looks_alike)
            if source in {"taste", "recent", "new"} and anchor_vectors:
                anchor = max(anchor_vectors, key=lambda i: float(anchor_vectors[i] @ vectors[n]))
            reason = explain(source, payload, titles.get(anchor) if anchor else None, is_new)
            picks.append(Pick(c.product_id, round(float(scores[n]), 6), reason, payload, source))
        return picks

    def _titles(self, product_ids: set[str]) -> dict[str, str]:
        if not product_ids:
            return {}
        return {p.product_id: str(p.payload.get("title") or p.product_id) for p in self._store.get(list(product_ids), fields=("title",))}

    def _is_new(self, payload: dict[str, Any], now: float, catalogue_since: float | None) -> bool:
        """Listed lately, and not as part of the catalogue the shop started with."""
        listed = payload.get("listed_ts")
        if not isinstance(listed, (int, float)) or now - float(listed) >= self.tuning.new_for_s:
            return False
        return catalogue_since is None or float(listed) - catalogue_since >= self.tuning.new_for_s

    def _served(
        self,
        request_id: str,
        user_id: str,
        order: list[int],
        candidates: list[Candidate],
        features: np.ndarray,
        scores: np.ndarray,
        ranker: str,
        now: float,
    ) -> RecommendationServed:
        shown = set(order)
        rest = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in shown]
        rows = (order + rest)[: max(len(order), self.tuning.served_candidates)]
        logged = features[rows].astype("<f4")
        for position in range(len(order)):
            logged[position, POSITION] = position_value(position)
        return RecommendationServed(
            request_id=request_id,
            user_id=user_id,
            served_at=datetime.fromtimestamp(now, UTC),
            shown=len(order),
            products=[candidates[i].product_id for i in rows],
            feature_names=list(FEATURES),
            features=logged.tobytes(),
            ranker=ranker,
            model_version=self._model_version(),
        )


def _credit_by_source(scorer: LinearScorer, rows: np.ndarray) -> list[dict[str, float]]:
    """Per row: how much each source's features added to the score (the scorer is linear)."""
    parts = (rows - scorer.offsets) * scorer.scales * scorer.weights
    sources = [SOURCE_OF[name] for name in scorer.names]
    credit = []
    for row in parts:
        by_source: dict[str, float] = {}
        for source, value in zip(sources, row, strict=True):
            if source is not None:
                by_source[source] = by_source.get(source, 0.0) + float(value)
        credit.append(by_source)
    return credit


def _listed_within(e: Evidence, seconds: float) -> np.ndarray:
    age = np.where(np.isnan(e.listed_ts), np.inf, e.now - np.nan_to_num(e.listed_ts))
    return age < seconds


def _rng(request_id: str) -> np.random.Generator:
    """The same request draws the same samples (a retried request gets the same list)."""
    return np.random.default_rng(zlib.crc32(request_id.encode()))


def explore_by_sampling(
    order: list[int], arms: list[int], clicks: np.ndarray, impressions: np.ndarray, places: int, prior: float, rng: np.random.Generator
) -> list[int]:
    """Thompson sampling for new products' places. Each product's click-through is Beta(α + clicks,
    β + impressions − clicks), with α/(α+β) the shop's rate over these candidates and α+β = ``prior``;
    each new product (``arms``) takes a place among the last ``places`` of ``order`` from a product
    that is not new when its sampled rate beats that product's. A new product shoppers take to
    keeps winning places; one they skip loses them; one nobody has seen wins some, by chance.

    >>> clicks, shown = np.array([30.0, 30.0, 0.0, 9.0, 0.0]), np.array([100.0, 100.0, 0.0, 10.0, 60.0])
    >>> explore_by_sampling([0, 1], arms=[3, 4], clicks=clicks, impressions=shown, places=1, prior=10.0,
    ...                     rng=np.random.default_rng(0))
    [0, 3]
    """
    if not arms or places <= 0:
        return order
    seen = np.maximum(impressions, clicks)
    reported = seen > 0
    rate = (clicks[reported].sum() + 1.0) / (seen[reported].sum() + 2.0)
    alpha, beta = prior * rate, prior * (1.0 - rate)
    sampled = rng.beta(alpha + clicks, beta + np.maximum(0.0, seen - clicks))
    arms_set = set(arms)
    order = list(order)
    tail = [i for i in order[-places:] if i not in arms_set]
    for arm in sorted((a for a in arms if a not in order), key=lambda a: -sampled[a]):
        if not tail:
            break
        weakest = min(tail, key=lambda i: sampled[i])
        if sampled[arm] <= sampled[weakest]:
            break
        order[order.index(weakest)] = arm
        tail.remove(weakest)
    return order
