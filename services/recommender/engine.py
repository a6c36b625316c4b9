"""The recommender itself: read the shopper, gather candidates, rank, diversify, explain.

It holds no Kafka or HTTP code: the responder, the API and the benchmarks all call
:meth:`Recommender.recommend` and :meth:`Recommender.similar`.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.profiles.learners import FEATURE_NAMES
from services.recommender.candidates import Candidate, CandidatePool, likeness, scaled, unit
from services.recommender.learned import Learned, sigmoid
from services.recommender.ranking import RankWeights, blend, mmr, spread
from services.recommender.reasons import explain, strongest
from services.recommender.shopper import Shopper, ShopperReader, Signals
from services.vectors.store import ProductStore, SearchFilters, VectorQuery, matches

# What a product card and the ranking need from the payload (the thumbnail stays behind).
CARD_FIELDS = ("title", "category", "price", "currency", "in_stock", "delisted", "listed_ts", "image_url", "has_image")


class UnknownProduct(LookupError):
    pass


@dataclass(frozen=True)
class Query:
    user_id: str
    k: int = 10
    filters: SearchFilters = field(default_factory=lambda: SearchFilters(in_stock=True))  # as in the contract
    context_product_id: str | None = None


@dataclass(frozen=True)
class Pick:
    product_id: str
    score: float
    reason: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Recommendations:
    items: list[Pick]
    candidates: int
    seconds: float


@dataclass(frozen=True)
class Tuning:
    """Sizes and knobs of one recommendation (the settings fill them in)."""

    weights: RankWeights = field(default_factory=RankWeights)
    mmr_lambda: float = 0.75
    new_for_s: float = 72 * 3600.0
    per_source: int = 24  # nearest neighbours asked of each Qdrant source
    affinity_items: int = 15
    behaviour_pool: int = 4  # at most this many times k candidates from Redis-side sources are looked up
    diversify_from: int = 4  # MMR looks at this many times k of the best-scored candidates
    new_boost: float = 0.05  # added to the score of a new product nobody has clicked yet
    looks_alike: float = 0.75  # likeness ((cosine + 1) / 2) from which "looks like …" is said


class Recommender:
    def __init__(
        self,
        store: ProductStore,
        reader: ShopperReader,
        learned: Callable[[], Learned],
        dims: int,
        tuning: Tuning | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._reader = reader
        self._learned = learned
        self._dims = dims  # of the fused space
        self.tuning = tuning or Tuning()
        self._clock = clock

    def recommend(self, query: Query) -> Recommendations:
        started = time.perf_counter()
        shopper, signals = self._reader.read(query.user_id)
        learned = self._learned()
        filters = query.filters.excluding(
            [*shopper.purchased, *shopper.recent, *shopper.dismissed, *([query.context_product_id] if query.context_product_id else [])]
        )
        pool = CandidatePool()
        context = self._context(query.context_product_id) if query.context_product_id else None
        self._from_qdrant(pool, shopper, signals, filters, context, query.context_product_id)
        self._from_behaviour(pool, shopper, signals, learned)
        self._complete(pool, filters, query.k * self.tuning.behaviour_pool)
        candidates = [c for c in pool.all() if c.payload is not None and not c.payload.get("delisted") and matches(c.payload, filters)]
        anchors = self._anchor_titles(shopper, signals, query.context_product_id)
        picks = self._rank(candidates, shopper, signals, learned, query.k, anchors)
        return Recommendations(picks, len(pool), time.perf_counter() - started)

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
        picks = [
            Pick(h.product_id, round(float(h.score), 6), explain("context", h.payload, title, self._is_new(h.payload)), h.payload)
            for h in hits
            if not h.payload.get("delisted")
        ]
        return Recommendations(picks, len(hits), time.perf_counter() - started)

    # -- candidates ---------------------------------------------------------------------

    def _context(self, product_id: str) -> np.ndarray | None:
        found = self._store.get([product_id], with_vectors=("fused",), fields=())
        return unit(np.asarray(found[0].vectors["fused"], dtype=np.float32)) if found else None

    def _from_qdrant(self, pool: CandidatePool, shopper: Shopper, signals: Signals, filters: SearchFilters,
                     context: np.ndarray | None, context_id: str | None) -> None:
        limit = self.tuning.per_source
        queries: list[tuple[str, VectorQuery]] = []
        common = {"limit": limit, "filters": filters, "fields": CARD_FIELDS, "with_vector": True}
        # Vectors from before a model change have other dimensions: they cannot be searched with.
        if shopper.vector is not None and shopper.vector.size == self._dims:
            queries.append(("taste", VectorQuery(vector=shopper.vector.tolist(), **common)))  # type: ignore[arg-type]
        usable = {i: v for i, v in signals.vectors.items() if v.size == self._dims}
        positives = [usable[i] for i in shopper.recent if i in usable][: self._reader.limits.anchors]
        negatives = [usable[i] for i in shopper.dismissed if i in usable]
        if positives:
            queries.append(("recent", VectorQuery(positives=tuple(v.tolist() for v in positives),
                                                  negatives=tuple(v.tolist() for v in negatives), **common)))  # type: ignore[arg-type]
        if context is not None:
            queries.append(("context", VectorQuery(vector=context.tolist(), **common)))  # type: ignore[arg-type]
        if not queries and not signals.trending:
            # Nobody has clicked anything yet: show a spread of the catalogue rather than nothing.
            probe = [1.0 / math.sqrt(self._dims)] * self._dims
            queries.append(("catalogue", VectorQuery(vector=probe, **common)))  # type: ignore[arg-type]
        results = self._store.query_many([q for _, q in queries])
        for (source, _), hits in zip(queries, results, strict=True):
            for hit in hits:
                score = likeness(min(1.0, hit.score))  # recommend scores are cosines too, but may round past 1
                anchor = context_id if source == "context" else None
                pool.offer(hit.product_id, score, source, anchor, hit.payload, hit.vector)

    def _from_behaviour(self, pool: CandidatePool, shopper: Shopper, signals: Signals, learned: Learned) -> None:
        for anchor, neighbours in signals.neighbours.items():
            for product_id, score in scaled(neighbours, 0.55, 0.95):
                pool.offer(product_id, score, "covisit", anchor)
        for product_id, score in learned.affinity.top(shopper.user_id, self.tuning.affinity_items):
            pool.offer(product_id, 0.3 + 0.5 * sigmoid(2.0 * score), "affinity")
        for category, rows in signals.trending_in.items():
            for product_id, score in scaled(rows, 0.45, 0.75):
                pool.offer(product_id, score, "trending_in", category)
        for product_id, score in scaled(signals.trending, 0.4, 0.7):
            pool.offer(product_id, score, "trending")

    def _complete(self, pool: CandidatePool, filters: SearchFilters, most: int) -> None:
        """Payloads and vectors of the best candidates no Qdrant query returned (one retrieve);
        the rest of them are dropped."""
        missing = [c for c in pool.all() if c.payload is None and c.product_id not in filters.exclude]
        if not missing:
            return
        missing.sort(key=lambda c: -c.retrieval)
        for c in missing[most:]:
            pool.drop(c.product_id)
        wanted = [c.product_id for c in missing[:most]]
        for product in self._store.get(wanted, with_vectors=("fused",), fields=CARD_FIELDS):
            candidate = pool.get(product.product_id)
            candidate.payload = product.payload
            candidate.vector = product.vectors.get("fused")

    def _anchor_titles(self, shopper: Shopper, signals: Signals, context_id: str | None) -> dict[str, str]:
        wanted = list(dict.fromkeys([*signals.neighbours, *(i for i in shopper.recent if i in signals.vectors),
                                     *([context_id] if context_id else [])]))
        if not wanted:
            return {}
        return {p.product_id: str(p.payload.get("title") or p.product_id) for p in self._store.get(wanted, fields=("title",))}

    # -- ranking --------------------------------------------------------------------------

    def _rank(self, candidates: list[Candidate], shopper: Shopper, signals: Signals, learned: Learned, k: int,
              anchors: dict[str, str]) -> list[Pick]:
        if not candidates:
            return []
        ids = [c.product_id for c in candidates]
        dims = self._dims
        blank = [0.0] * dims
        vectors = np.array([c.vector if c.vector is not None and len(c.vector) == dims else blank for c in candidates],
                           dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        if shopper.vector is not None and shopper.vector.size == dims:
            similarity = vectors @ shopper.vector
        else:
            similarity = np.zeros(len(candidates), dtype=np.float32)
        popularity = np.array(self._reader.popularity(ids))
        now = self._clock()
        since_last = now - shopper.updated_at if shopper.updated_at else 0.0
        features = np.column_stack(
            [
                similarity,
                np.array([shopper.category_share(str(c.payload.get("category", ""))) for c in candidates]),  # type: ignore[union-attr]
                np.log1p(np.maximum(popularity, 0.0)),
                np.log1p(np.array([max(0.0, float(c.payload.get("price") or 0.0)) for c in candidates])),  # type: ignore[union-attr]
                np.full(len(candidates), math.log1p(max(0.0, since_last))),
            ]
        )
        assert features.shape[1] == len(FEATURE_NAMES)
        click = learned.click.probabilities(features) if learned.click.trained else np.full(len(candidates), 0.5)
        affinity = 1.0 / (1.0 + np.exp(-2.0 * learned.affinity.scores(shopper.user_id, ids)))
        log_pop = np.log1p(np.maximum(popularity, 0.0))
        popular = log_pop / log_pop.max() if log_pop.max() > 0 else np.zeros(len(candidates))
        retrieval = np.array([c.retrieval for c in candidates])
        scores = blend(self.tuning.weights, retrieval, click, affinity, popular)
        # Visual cold start: a product nobody has clicked yet gets a small lift while it is new.
        fresh = np.array([self._is_new(c.payload or {}) for c in candidates])
        scores = scores + self.tuning.new_boost * (fresh & (popularity <= 0))

        shortlist = np.argsort(-scores)[: max(k * self.tuning.diversify_from, 20)]
        order = mmr(spread(scores[shortlist]), vectors[shortlist], k, self.tuning.mmr_lambda)
        anchor_vectors = {i: unit(signals.vectors[i]) for i in shopper.recent if i in signals.vectors and signals.vectors[i].size == dims}
        picks = []
        for position in order:
            n = int(shortlist[position])
            c = candidates[n]
            source, anchor = strongest(c.evidence, self.tuning.looks_alike)
            if source in {"taste", "recent"} and anchor_vectors:
                anchor = max(anchor_vectors, key=lambda i: float(anchor_vectors[i] @ vectors[n]))
            title = anchors.get(anchor) if anchor else None
            reason = explain(source, c.payload or {}, title or anchor, fresh[n])
            picks.append(Pick(c.product_id, round(float(scores[n]), 6), reason, c.payload or {}))
        return picks

    def _is_new(self, payload: dict[str, Any]) -> bool:
        listed = payload.get("listed_ts")
        return isinstance(listed, (int, float)) and self._clock() - float(listed) < self.tuning.new_for_s
