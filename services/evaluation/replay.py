"""Test-then-learn replay of a shop through the services' own code, scored against baselines.

The catalogue is indexed by the embedder's ``Indexer`` into a Qdrant Edge shard of its own and
into Redis the way the profiles worker's ``items`` agent does; every click goes through the
profiles worker's ``ClickHandler`` into the real Redis (under a key prefix of its own); every
recommendation comes from the ``Recommender`` with the ranking settings of ``serve``; each
served list is kept the way the ``served`` agent keeps it, so the ranking learns from the
choices that follow.

The services' cadence is kept too, at the event rate the replay is told (``rate``, events
per second, the shop's): the events in the served part are taken to arrive ``1/rate`` seconds
apart, the worker checkpoints its learners every ``SHELFSIGHT_LEARNERS_CHECKPOINT_S`` of that
clock, ``serve`` reloads them every ``SHELFSIGHT_LEARNERS_REFRESH_S`` (half a period later: on
average, a reload comes that long after a checkpoint) and fits its item-to-item model again at
most every ``SHELFSIGHT_ITEM_MODEL_REFIT_S``. A busy shop's recommendations lag more events
behind its clicks than a quiet one's, and the replay sees the same lag. The events before the
served part are history, loaded before the shop opens: the learners are checkpointed and
reloaded once when it ends.

What is asked and how it is scored is ``scoring.py``'s, shared with the live run (``live.py``).
"""

import asyncio
import logging
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from models.predictor import Predictor
from models.ranking import RankingTally
from models.ranking.learners import Learners
from schemas import ProductListed, RecommendationServed, encode
from services.embedder.fetch import ImageFetcher
from services.embedder.indexing import Indexer
from services.embedder.service import image_policy, store_taxonomy, url_policy
from services.evaluation.logs import Dataset
from services.evaluation.scoring import SHELFSIGHT, ColdStartTally, ReplayConfig, Scoreboard, SourceTally, windows
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from services.recommender.engine import Query, Recommender
from services.recommender.features import FEATURES
from services.recommender.learned import LearnedCache
from services.recommender.service import item_model_shape, tuning
from services.recommender.shopper import ShopperReader
from services.redis_clients import async_redis, sync_redis
from services.settings import Settings
from services.vectors.edge import EdgeProductStore
from state.checkpoints import dump
from state.keys import Keys

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    mode: str = "in-process replay of the services' code"
    sources: SourceTally = field(default_factory=SourceTally)


class Replay:
    def __init__(self, settings: Settings, predictor: Predictor, dataset: Dataset, config: ReplayConfig) -> None:
        self.settings, self.predictor, self.dataset, self.config = settings, predictor, dataset, config

    def run(self, progress: bool = True) -> ReplayResult:
        return self.with_services(lambda run: run.go(progress))

    def with_services(self, use: Callable[["_Run"], T]) -> T:
        """``use`` the services' parts wired for this dataset (a Qdrant Edge shard and Redis keys
        of the run's own, removed afterwards): the replay, or a simulation of shoppers."""
        workdir = Path(tempfile.mkdtemp(prefix="shelfsight-eval-"))
        s = self.settings  # the same Redis layout as the services
        keys = Keys(f"{s.redis_prefix}eval-{uuid.uuid4().hex[:8]}:", s.redis_shards, s.redis_cluster)
        sync = sync_redis(s.redis_url, s.redis_cluster)
        loop = asyncio.new_event_loop()
        aclient = async_redis(s.redis_url, s.redis_cluster)
        # The shard as `serve` would create it (a replay's own folder, so nothing else of the settings').
        store = EdgeProductStore(
            workdir / "qdrant", quantization=s.qdrant_quantization, oversampling=s.qdrant_oversampling, search_ef=s.qdrant_search_ef
        )
        pool = ThreadPoolExecutor(self.settings.embedder_decode_threads, thread_name_prefix="decode")
        try:
            store.ensure_collection(self.predictor.dims)
            return use(_Run(self, keys, sync, loop, aclient, store, pool))
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

    def __init__(
        self,
        replay: Replay,
        keys: Keys,
        sync: redis.Redis,
        loop: asyncio.AbstractEventLoop,
        aclient: aioredis.Redis,
        store: EdgeProductStore,
        pool: ThreadPoolExecutor,
    ) -> None:
        settings, config = replay.settings, replay.config
        self.replay, self.config, self.loop, self.sync, self.keys = replay, config, loop, sync, keys
        self.now = 0.0
        params = ClickParams.of(settings)
        self.state = ProfileState(aclient, keys, params)
        self.learners = Learners(
            seed=config.seed,
            ranker_warmup=settings.ranking_warmup_pairs,
            max_shoppers=settings.learners_max_shoppers,
            max_items=settings.learners_max_items,
            max_model_items=settings.item_model_items,
        )
        self.letters: list[str] = []
        self.handler = ClickHandler(
            self.state,
            self.learners,
            params,
            lambda _m, reason: self.letters.append(reason),
            clock=lambda: self.now,
            item_wait_s=0,
            seed=config.seed,
        )
        self.secret = secrets.token_bytes(32)
        self.cadence = Cadence(config.rate, settings.learners_checkpoint_s, settings.learners_refresh_s)
        self.cache = LearnedCache(
            sync, keys, self.secret, refit_s=settings.item_model_refit_s, clock=lambda: self.cadence.now, shape=item_model_shape(settings)
        )
        self.engine = Recommender(
            store,
            ShopperReader(sync, keys, half_life_s=params.half_life_s),
            lambda: self.cache.current,
            replay.predictor.dims["fused"],
            tuning(settings),
            clock=lambda: self.now,
            on_served=self._keep,
        )
        self.indexer = Indexer(
            replay.predictor,
            store,
            ImageFetcher(url_policy(settings)),
            pool,
            image_policy(settings),
            clock=lambda: datetime.fromtimestamp(self.now, UTC),
            taxonomy=store_taxonomy(settings, store),
        )
        self.vectors: dict[str, np.ndarray] = {}

    def _keep(self, served: RecommendationServed) -> None:
        """What the profiles worker's ``served`` agent does with each served list."""
        self.loop.run_until_complete(self.state.remember_served(served.user_id, encode(served).value, served.request_id, served.experiment))

    def go(self, progress: bool) -> ReplayResult:
        replay, config = self.replay, self.config
        dataset = replay.dataset
        started = time.perf_counter()
        events = dataset.events
        board = Scoreboard(dataset, config)
        products = sorted(dataset.products, key=lambda p: p.listed_at)
        pending: list[RawMessage] = []
        result = ReplayResult(
            dataset.name,
            config,
            _settings_used(replay.settings),
            board.tallies,
            board.cold,
            len(products),
            len(events),
            0,
            0.0,
            scored_span=board.scored_span(),
            sources=board.sources,
        )
        listed = 0
        for n, event in enumerate(tqdm(events, desc="replay", unit="event", disable=not progress, mininterval=1.0)):
            at = event.occurred_at.timestamp()
            while listed < len(products) and products[listed].listed_at.timestamp() <= at:
                batch = products[listed : listed + 64]
                batch = [p for p in batch if p.listed_at.timestamp() <= at]
                listed += len(batch)
                self._flush(pending)
                self._index(batch, max(at, batch[-1].listed_at.timestamp()))
                board.listed(batch)
            if n >= board.opening:
                self._keep_pace(n - board.opening, pending)
            if n in board.served:
                self._flush(pending)
                self.now = at
                t0 = time.perf_counter()
                answer = self.engine.recommend(Query(event.user_id, config.k, request_id=f"eval-{n}"))
                result.latency_ms.append((time.perf_counter() - t0) * 1000)
                result.served += 1
                if n in board.scored:
                    board.score(event, [p.product_id for p in answer.items], answer.ranked, self._vectors, answer, answer.items)
            pending.append(RawMessage(event.user_id.encode(), encode(event).value, 0, n))
            if len(pending) >= config.batch_size:
                self._flush(pending)
            board.learn(event)
        self._flush(pending)
        result.seconds = time.perf_counter() - started
        result.dead_letters = len(self.letters)
        result.dropped = board.dropped
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

    def _keep_pace(self, arrived: int, pending: list[RawMessage]) -> None:
        """The worker's checkpoints and serve's reloads that fall due before event number ``arrived``
        of the served part (the first: the shop opens, both happen)."""
        checkpoint, reload = self.cadence.due(arrived)
        if checkpoint:
            self._flush(pending)
            self.sync.set(self.keys.learners("main"), dump(self.learners, self.secret))
        if reload:
            self.cache.refresh()

    def _vectors(self, items: list[str]) -> np.ndarray | None:
        rows = [self.vectors[i] for i in items if i in self.vectors]
        return np.array(rows) if len(rows) >= 2 else None

    def _ranker_summary(self) -> dict[str, object]:
        return ranker_summary(self.learners)


def ranker_summary(learners: Learners) -> dict[str, object]:
    """What the learned ranking learned: choices joined with their lists, pairs, weights."""
    ranker = learners.ranker
    if ranker is None:
        return {"choices": 0, "pairs": 0, "learned": False}
    scorer = ranker.scorer(FEATURES)
    weights = {n: round(float(w), 4) for n, w in zip(FEATURES, scorer.weights, strict=True) if abs(w) > 1e-6}
    return {
        "choices": ranker.choices,
        "pairs": ranker.pairs,
        "learned": ranker.learned,
        "weights": dict(sorted(weights.items(), key=lambda kv: -abs(kv[1]))),
    }


class Cadence:
    """The services' clocks, run on event counts: event ``n`` of the served part arrives at
    ``n / rate`` s; the worker checkpoints every ``checkpoint_s``, ``serve`` reloads every
    ``refresh_s``, half a period after the checkpoints' phase.

    >>> cadence = Cadence(rate=10.0, checkpoint_s=30.0, refresh_s=10.0)
    >>> [cadence.due(n) for n in (0, 1, 50, 149, 150, 300, 349, 350)]
    [(True, True), (False, False), (False, True), (False, False), (False, True), (True, True), (False, False), (False, True)]
    """

    def __init__(self, rate: float, checkpoint_s: float, refresh_s: float) -> None:
        if rate <= 0:
            raise ValueError("the event rate must be positive")
        self.rate, self.checkpoint_s, self.refresh_s = rate, checkpoint_s, refresh_s
        self.now = 0.0
        self._next_checkpoint: float | None = None
        self._next_reload: float | None = None

    def due(self, arrived: int) -> tuple[bool, bool]:
        """(checkpoint, reload): which fall due at event ``arrived``."""
        self.now = arrived / self.rate
        if self._next_checkpoint is None or self._next_reload is None:
            self._next_checkpoint, self._next_reload = self.checkpoint_s, self.refresh_s / 2
            return True, True
        checkpoint = self.now >= self._next_checkpoint
        reload = self.now >= self._next_reload
        if checkpoint:
            self._next_checkpoint = (self.now // self.checkpoint_s + 1) * self.checkpoint_s
        if reload:
            self._next_reload = ((self.now - self.refresh_s / 2) // self.refresh_s + 1) * self.refresh_s + self.refresh_s / 2
        return checkpoint, reload


def _settings_used(settings: Settings) -> dict[str, object]:
    fields = (
        "ranking",
        "ranking_warmup_pairs",
        "covisit_neighbours",
        "covisit_max_pairs",
        "item_model_items",
        "item_model_rank",
        "item_model_refit_s",
        "learners_checkpoint_s",
        "learners_refresh_s",
        "mmr_lambda",
        "explore_slots",
        "explore_margin",
        "new_product_hours",
    )
    return {f: getattr(settings, f) for f in fields}


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = ["SHELFSIGHT", "Cadence", "ColdStartTally", "Replay", "ReplayConfig", "ReplayResult", "windows"]
