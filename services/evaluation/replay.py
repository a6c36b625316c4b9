"""Test-then-learn replay of a shop through the services' own code, scored against baselines.

The catalogue is indexed by the embedder's ``Indexer`` into a Qdrant Edge shard of its own and
into Redis the way the profiles worker's ``items`` agent does; every click goes through the
profiles worker's ``ClickHandler`` into the real Redis (under a key prefix of its own); every
recommendation comes from the ``Recommender`` with the ranking settings of ``serve``; each
served list is kept the way the ``served`` agent keeps it, so the ranking learns from the
choices that follow; the learners are checkpointed to Redis and reloaded by the recommender's
``LearnedCache`` every ``refresh_every`` lists, as the services do every few seconds.

Before each choice (click, cart, purchase) in the served part of the stream, the shopper's
top k is asked for. In the scored window, the answer is scored against the product actually
chosen, after dropping everything the shopper had already interacted with; the baselines
answer the same questions from the same events. Nothing about the answer is learned before
it is scored.
"""

import asyncio
import logging
import secrets
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from models.predictor import Predictor
from models.ranking import CoVisitation, DecayedPopularity, Popularity, RankingTally
from models.ranking.baselines import Baseline
from schemas import ClickEvent, ProductListed, RecommendationServed, encode
from services.embedder.fetch import ImageFetcher
from services.embedder.indexing import Indexer
from services.embedder.service import image_policy, store_taxonomy, url_policy
from services.evaluation.logs import Dataset, Truth
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.learners import CHOICE_KINDS, Learners, dump
from services.profiles.profile import ClickParams
from services.profiles.keys import Keys
from services.redis_clients import async_redis, sync_redis
from services.profiles.state import ProfileState
from services.recommender.engine import Query, Recommender
from services.recommender.features import FEATURES
from services.recommender.learned import LearnedCache
from services.recommender.service import tuning
from services.recommender.shopper import ShopperReader
from services.settings import Settings
from services.vectors.edge import EdgeProductStore

log = logging.getLogger(__name__)

SHELFSIGHT = "Shelfsight"


@dataclass(frozen=True)
class ReplayConfig:
    window: str = "test"  # "test": the last eval_size choices; "validation": the eval_size before them
    eval_size: int = 10_000
    warmup_size: int = 10_000  # choices before the window that are served (and learned from) but not scored
    k: int = 10
    recall_at: int = 100
    refresh_every: int = 100  # served lists between learner checkpoints
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

    def add(self, items: list[str], taste: str | None, truth: Truth, untouched_new: set[str]) -> None:
        self.lists += 1
        self.items += len(items)
        for item in items:
            matching = taste is not None and truth.categories.get(item) == taste
            self.on_taste += matching
            if item in untouched_new:
                self.new += 1
                self.new_matching += matching

    def summary(self) -> dict[str, float]:
        lists = max(1, self.lists)
        return {"new_per_list": self.new / lists, "new_matching_per_list": self.new_matching / lists,
                "on_taste": self.on_taste / max(1, self.items)}


@dataclass
class ReplayResult:
    dataset: str
    config: ReplayConfig
    settings: dict[str, object]
    tallies: dict[str, RankingTally]
    cold_start: dict[str, ColdStartTally]
    catalogue: int
    events: int
    served: int
    seconds: float
    latency_ms: list[float] = field(default_factory=list)
    dead_letters: int = 0
    dropped: int = 0  # already-seen items the services returned, dropped before scoring
    ranker: dict[str, object] = field(default_factory=dict)
    scored_span: tuple[str, str] = ("", "")


def windows(events: list[ClickEvent], config: ReplayConfig) -> tuple[set[int], set[int]]:
    """(scored event indexes, served event indexes): choices only, counted from the end."""
    choices = [n for n, e in enumerate(events) if e.kind.value in CHOICE_KINDS]
    end = len(choices) if config.window == "test" else max(0, len(choices) - config.eval_size)
    start = max(0, end - config.eval_size)
    scored = choices[start:end]
    served = choices[max(0, start - config.warmup_size) : end]
    return set(scored), set(served)


class Replay:
    def __init__(self, settings: Settings, predictor: Predictor, dataset: Dataset, config: ReplayConfig) -> None:
        self.settings, self.predictor, self.dataset, self.config = settings, predictor, dataset, config
        self.baselines: list[Baseline] = [Popularity(), DecayedPopularity(7 * 86400.0), CoVisitation(5)]

    def run(self, progress: bool = True) -> ReplayResult:
        workdir = Path(tempfile.mkdtemp(prefix="shelfsight-eval-"))
        s = self.settings  # the same Redis layout as the services
        keys = Keys(f"{s.redis_prefix}eval-{uuid.uuid4().hex[:8]}:", s.redis_shards, s.redis_cluster)
        sync = sync_redis(s.redis_url, s.redis_cluster)
        loop = asyncio.new_event_loop()
        aclient = async_redis(s.redis_url, s.redis_cluster)
        store = EdgeProductStore(workdir / "qdrant")
        pool = ThreadPoolExecutor(self.settings.embedder_decode_threads, thread_name_prefix="decode")
        try:
            store.ensure_collection(self.predictor.dims)
            return _Run(self, keys, sync, loop, aclient, store, pool).go(progress)
        finally:
            pool.shutdown(wait=True)
            store.close()
            for batch in _chunks(list(sync.scan_iter(f"{keys.prefix}*", count=1000)), 1000):
                sync.unlink(*batch)
            loop.run_until_complete(aclient.aclose())
            loop.close()
            sync.close()
            shutil.rmtree(workdir, ignore_errors=True)


class _Run:
    """One replay's moving parts, wired as the services wire them."""

    def __init__(self, replay: Replay, keys: Keys, sync: redis.Redis, loop: asyncio.AbstractEventLoop,
                 aclient: aioredis.Redis, store: EdgeProductStore, pool: ThreadPoolExecutor) -> None:
        settings, config = replay.settings, replay.config
        self.replay, self.config, self.loop, self.sync, self.keys = replay, config, loop, sync, keys
        self.now = 0.0
        params = ClickParams(neighbours=settings.covisit_neighbours)
        self.state = ProfileState(aclient, keys, params)
        self.learners = Learners(seed=config.seed, ranker_warmup=settings.ranking_warmup_pairs,
                                 max_shoppers=settings.learners_max_shoppers, max_items=settings.learners_max_items,
                                 max_model_items=settings.item_model_items)
        self.letters: list[str] = []
        self.handler = ClickHandler(self.state, self.learners, params, lambda _m, reason: self.letters.append(reason),
                                    clock=lambda: self.now, item_wait_s=0, seed=config.seed)
        self.secret = secrets.token_bytes(32)
        self.cache = LearnedCache(sync, keys, self.secret, refit_s=0.0)  # the replay's clock is the stream's: fit at every reload
        self.engine = Recommender(store, ShopperReader(sync, keys, half_life_s=params.half_life_s), lambda: self.cache.current,
                                  replay.predictor.dims["fused"], tuning(settings), clock=lambda: self.now, on_served=self._keep)
        self.indexer = Indexer(replay.predictor, store, ImageFetcher(url_policy(settings)), pool, image_policy(settings),
                               clock=lambda: datetime.fromtimestamp(self.now, UTC), taxonomy=store_taxonomy(settings, store))
        self.vectors: dict[str, np.ndarray] = {}

    def _keep(self, served: RecommendationServed) -> None:
        """What the profiles worker's ``served`` agent does with each served list."""
        self.loop.run_until_complete(self.state.remember_served(served.user_id, encode(served).value))

    def go(self, progress: bool) -> ReplayResult:
        replay, config = self.replay, self.config
        dataset = replay.dataset
        started = time.perf_counter()
        events = dataset.events
        scored, served = windows(events, config)
        products = sorted(dataset.products, key=lambda p: p.listed_at)
        first_event = events[0].occurred_at.timestamp() if events else 0.0
        names = [SHELFSIGHT, *(b.name for b in replay.baselines)]
        tallies = {n: RankingTally(config.k, config.recall_at) for n in names}
        cold = {n: ColdStartTally() for n in names} if dataset.truth is not None else {}
        seen: dict[str, set[str]] = defaultdict(set)
        touched: set[str] = set()
        listed_mid_stream: set[str] = set()
        pending: list[RawMessage] = []
        result = ReplayResult(dataset.name, config, _settings_used(replay.settings), tallies, cold, len(products), len(events),
                              0, 0.0)
        listed = 0
        scored_times = [events[n].occurred_at for n in sorted(scored)]
        if scored_times:
            result.scored_span = (scored_times[0].isoformat(), scored_times[-1].isoformat())
        for n, event in enumerate(tqdm(events, desc="replay", unit="event", disable=not progress, mininterval=1.0)):
            at = event.occurred_at.timestamp()
            while listed < len(products) and products[listed].listed_at.timestamp() <= at:
                batch = []
                while listed < len(products) and products[listed].listed_at.timestamp() <= at and len(batch) < 64:
                    batch.append(products[listed])
                    listed += 1
                self._flush(pending)
                self._index(batch, max(at, batch[-1].listed_at.timestamp()))
                listed_mid_stream.update(p.product_id for p in batch if p.listed_at.timestamp() > first_event)
            if n in served:
                self._flush(pending)
                self.now = at
                if result.served % config.refresh_every == 0:
                    self._refresh()
                t0 = time.perf_counter()
                answer = self.engine.recommend(Query(event.user_id, config.k, request_id=f"eval-{n}"))
                result.latency_ms.append((time.perf_counter() - t0) * 1000)
                result.served += 1
                if n in scored:
                    rated = seen[event.user_id]
                    shown = [p.product_id for p in answer.items if p.product_id not in rated]
                    result.dropped += len(answer.items) - len(shown)
                    lists = {SHELFSIGHT: (shown, [p for p in answer.ranked if p not in rated])}
                    for b in replay.baselines:
                        ranked = b.rank(event.user_id, config.recall_at, rated, at)
                        lists[b.name] = (ranked[: config.k], ranked)
                    untouched_new = listed_mid_stream - touched
                    taste = dataset.truth.tastes.get(event.user_id) if dataset.truth else None
                    for name, (top, pool) in lists.items():
                        tallies[name].add(top, event.product_id, pool, self._vectors(top))
                        if dataset.truth is not None:
                            cold[name].add(top[: config.k], taste, dataset.truth, untouched_new)
            pending.append(RawMessage(event.user_id.encode(), encode(event).value, 0, n))
            if len(pending) >= config.batch_size:
                self._flush(pending)
            if event.kind.value not in {"impression", "dismiss"}:
                for b in replay.baselines:
                    b.learn_one(event.user_id, event.product_id, at)
                seen[event.user_id].add(event.product_id)
                touched.add(event.product_id)
        self._flush(pending)
        result.seconds = time.perf_counter() - started
        result.dead_letters = len(self.letters)
        result.ranker = self._ranker_summary()
        return result

    def _index(self, batch: list[ProductListed], at: float) -> None:
        self.now = at
        outcomes = self.indexer.index(batch, self.indexer.decode_all(batch))
        for outcome in outcomes:
            if outcome.indexed is not None:
                self.loop.run_until_complete(self.state.put_indexed(outcome.indexed))
                self.vectors[outcome.product_id] = np.asarray(outcome.indexed.vectors["fused"], dtype=np.float32)

    def _flush(self, pending: list[RawMessage]) -> None:
        if not pending:
            return
        last = self.replay.dataset.events[pending[-1].offset]
        self.now = max(self.now, last.occurred_at.timestamp())
        self.loop.run_until_complete(self.handler.handle(list(pending)))
        pending.clear()

    def _refresh(self) -> None:
        """A learners checkpoint, and the recommender's reload of it (``LearnedCache``), as in the services."""
        self.sync.set(self.keys.learners("main"), dump(self.learners, self.secret))
        self.cache.refresh()

    def _vectors(self, items: list[str]) -> np.ndarray | None:
        rows = [self.vectors[i] for i in items if i in self.vectors]
        return np.array(rows) if len(rows) >= 2 else None

    def _ranker_summary(self) -> dict[str, object]:
        ranker = self.learners.ranker
        if ranker is None:
            return {"choices": 0, "pairs": 0, "learned": False}
        scorer = ranker.scorer(FEATURES)
        weights = {n: round(float(w), 4) for n, w in zip(FEATURES, scorer.weights, strict=True) if abs(w) > 1e-6}
        return {"choices": ranker.choices, "pairs": ranker.pairs, "learned": ranker.learned,
                "weights": dict(sorted(weights.items(), key=lambda kv: -abs(kv[1])))}


def _settings_used(settings: Settings) -> dict[str, object]:
    fields = ("ranking", "ranking_warmup_pairs", "covisit_neighbours", "item_model_items", "mmr_lambda", "explore_slots", "explore_margin",
              "new_product_hours")
    return {f: getattr(settings, f) for f in fields}


def _chunks(items: list, size: int):  # type: ignore[no-untyped-def]
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = ["ColdStartTally", "Replay", "ReplayConfig", "ReplayResult", "SHELFSIGHT", "windows"]
