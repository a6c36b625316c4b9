"""`shelfsight serve`: the process that owns the product store and serves from it.

In embedded mode (Qdrant Edge) one process may open the shard, so this one runs the
embedder (writing), the Kafka request responder and the HTTP API (reading) side by side,
and keeps the shard's vector index built as products arrive (``services/vectors/upkeep.py``).
With SHELFSIGHT_QDRANT_URL the embedder can run apart (`--no-embedder` here).
"""

import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from schemas import RecommendationServed, encode
from schemas.experiments import ExperimentTag
from schemas.topics import RECOMMENDATIONS_SERVED
from services.bus.broker import require_broker
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.embedder.metrics import EmbedderMetrics
from services.embedder.versions import base_version
from services.errors import UserError
from services.experiments.report import read_report
from services.experiments.running import RunningExperiments
from services.recommender.catalogue import LiveCatalogue, Version, first_version
from services.recommender.engine import Recommender, Sink, Tuning, Versions
from services.recommender.http.app import ApiParts, build_api
from services.recommender.http.live import LiveUpdates
from services.recommender.http.timeouts import server_config
from services.recommender.learned import ItemModelShape, LearnedCache
from services.recommender.metrics import RecommenderMetrics
from services.recommender.responder import GROUP_ID, Responder
from services.recommender.shopper import ShopperReader
from services.recommender.staged import StagedVersions
from services.redis_clients import async_redis, redis_client
from services.settings import Settings
from services.vectors.store import ProductStore
from services.vectors.switchable import SwitchableStore
from services.vectors.upkeep import UpkeepPolicy
from state.catalogue import read_alias
from state.experiments import load_all, record_request
from state.keys import Keys
from state.secret import state_secret
from state.served import remember as remember_served

log = logging.getLogger(__name__)


def tuning(settings: Settings) -> Tuning:
    return Tuning(
        ranking=settings.ranking,
        mmr_lambda=settings.mmr_lambda,
        new_for_s=settings.new_product_hours * 3600.0,
        explore_slots=settings.explore_slots,
        explore_margin=settings.explore_margin,
        exploration=settings.exploration,
    )


def item_model_shape(settings: Settings) -> ItemModelShape:
    return ItemModelShape(exact_items=settings.item_model_items, rank=settings.item_model_rank)


def upkeep_policy(settings: Settings) -> UpkeepPolicy:
    return UpkeepPolicy(settings.index_rebuild_after, settings.index_quiet_s, settings.index_max_wait_s)


def build_recommender(
    settings: Settings,
    store: ProductStore,
    dims: int,
    client: redis.Redis,
    on_served: Sink | None = None,
    model_version: Callable[[], str | None] = lambda: None,
    unversioned: Callable[[], str | None] = lambda: None,
    versions: Versions = lambda _name: nullcontext(None),
) -> tuple[Recommender, LearnedCache]:
    keys = Keys.of(settings)
    learned = LearnedCache(
        client,
        keys,
        state_secret(settings),
        settings.learners_refresh_s,
        refit_s=settings.item_model_refit_s,
        shape=item_model_shape(settings),
        saved_check_s=settings.experiments_poll_s,  # saved learners serve experiments: followed at their cadence
    )
    reader = ShopperReader(client, keys, model_version=model_version, unversioned=unversioned)
    experiments = RunningExperiments(client, keys, settings.experiments_poll_s)
    engine = Recommender(
        store,
        reader,
        lambda: learned.current,
        dims,
        tuning(settings),
        on_served=on_served,
        model_version=model_version,
        assign=experiments.assign,
        guard=guardrails(client, keys),
        saved=learned.saved,
        versions=versions,
    )
    return engine, learned


def guardrails(client: redis.Redis, keys: Keys) -> Callable[[str, ExperimentTag, float, bool], None]:
    """Each experiment request's time and outcome into its variant's guardrails; Redis away costs
    the guardrails a request, never the request itself."""

    def record(user: str, tag: ExperimentTag, seconds: float, ok: bool) -> None:
        try:
            record_request(client, keys, user, tag, seconds, ok)
        except redis.RedisError as error:
            log.warning("experiment guardrails not recorded", extra={"error": str(error)[:200]})

    return record


def served_publisher(
    settings: Settings, producer: Producer, metrics: RecommenderMetrics, client: redis.Redis | None = None, keys: Keys | None = None
) -> Sink:
    """Served lists onto ``recommendations.served`` (keyed by shopper), for the ranking to learn from,
    and straight into the shopper's served lists in Redis (``client``): the choice that follows at
    once — a quick shopper, a store loading its events — must find its list, and through Kafka the
    list could reach the worker after the click. Fire and forget: a list that cannot be logged costs
    a training example, never an answer.

    At most ``SHELFSIGHT_SERVED_LOG_PER_S`` lists a second, for all shoppers together: each is
    about 40 KB, so without a bound anyone able to call the API could make it write a
    flood to Kafka. Lists over the budget are counted, not logged."""
    from services.recommender.http.limits import Buckets

    topic = settings.topic(RECOMMENDATIONS_SERVED.name)
    rate = settings.served_log_per_s
    budget = Buckets(rate, max(1.0, rate)) if rate > 0 else None  # bursts of one second's worth

    def publish(served: RecommendationServed) -> None:
        if budget is None or budget.take("all"):
            metrics.served_unlogged.labels("over_rate").inc()
            return
        try:
            message = encode(served)
            producer.client.produce(topic, key=message.key, value=message.value, headers=message.headers)
            producer.client.poll(0)
            if client is not None and keys is not None:
                remember_served(client, keys, served.user_id, message.value, request_id=served.request_id, experiment=served.experiment)
        except Exception as exc:  # a full queue (broker away), Redis away or an oversize list must not fail or block the answer
            metrics.served_unlogged.labels("failed").inc()
            log.warning("served list not logged", extra={"error": str(exc)[:200]})

    return publish


@dataclass
class Serving:
    """Everything `serve` runs."""

    settings: Settings
    catalogue: LiveCatalogue  # the model version served, its store and writers
    staged: StagedVersions  # the versions experiments' variants are served from besides it
    engine: Recommender
    learned: LearnedCache
    responder: Responder
    api: ApiParts
    served_log: Producer
    failures: list[str]  # parts that died: /healthz says so until the process is gone
    client: redis.Redis

    def start_background(self, on_failure: Callable[[str], None] = lambda _reason: None) -> "Running":
        """Start the responder, the embedder, the index upkeep and the catalogue follower. If one
        stops on an error, ``on_failure`` is told: `serve` then stops as a whole, so an orchestrator
        restarts it, rather than keep answering from a process with a dead part behind a green light."""
        learned = self.learned.start()
        running = Running(self, threading.Event(), learned, on_failure)
        running.responder = running.supervised("responder", self.responder.run, running.stop_responder)
        running.responder.start()
        self.catalogue.start_writers(running.supervised)
        running.follower = running.supervised("catalogue", self.catalogue.follow(running.supervised), running.stop_follower)
        running.follower.start()
        running.staged = running.supervised("experiment-versions", self.staged.follow, running.stop_staged)
        running.staged.start()
        return running

    def health(self) -> dict[str, object]:
        now = time.monotonic()
        version = self.catalogue.current
        report: dict[str, object] = {
            "model_version": version.name,
            "responder_seconds_since_poll": round(now - self.responder.last_poll, 1),
            "learner_events": self.learned.current.events,
            "live_updates": self.api.live.ready.is_set(),
        }
        healthy = now - self.responder.last_poll < 60
        if version.embedder is not None:
            idle = now - version.embedder.worker.last_progress
            report |= {"embedder_seconds_since_poll": round(idle, 1), "indexed": version.embedder.worker.indexed_total}
            healthy = healthy and idle < 60
        try:
            self.client.ping()
        except redis.RedisError:
            healthy = False
            report["redis"] = "unreachable"
        if version.upkeep is not None:
            report["index_upkeep"] = version.upkeep.report()
        if self.catalogue.problem:
            report["catalogue_problem"] = self.catalogue.problem  # still serving: the current version
        if self.staged.names:
            report["experiment_versions"] = self.staged.names
        if self.staged.problem:
            report["experiment_versions_problem"] = self.staged.problem  # those variants' shoppers get the live version's lists
        if self.failures:
            healthy = False
            report["failed"] = self.failures[0]
        return {"healthy": healthy, **report}


@dataclass
class Running:
    serving: Serving
    stop_responder: threading.Event
    learned: LearnedCache
    on_failure: Callable[[str], None]
    failure: str | None = None  # the part that died, and why
    responder: threading.Thread | None = None
    follower: threading.Thread | None = None
    stop_follower: threading.Event = field(default_factory=threading.Event)
    staged: threading.Thread | None = None
    stop_staged: threading.Event = field(default_factory=threading.Event)

    def supervised(self, name: str, run: Callable[[threading.Event], None], stop: threading.Event) -> threading.Thread:
        def guarded() -> None:
            try:
                run(stop)
            except BaseException as exc:  # whatever it was, the process must not limp on
                log.exception("part of serve failed; stopping serve", extra={"part": name})
                self._failed(f"{name} failed: {exc!r}"[:300])
                return
            if not stop.is_set():
                self._failed(f"{name} stopped unexpectedly")

        return threading.Thread(target=guarded, name=name, daemon=True)

    def _failed(self, reason: str) -> None:
        self.failure = reason
        self.serving.failures.append(reason)
        self.on_failure(reason)

    def stop(self) -> None:
        # No switch from now on; readers next, then the index build (cancelled) and the embedder;
        # the store they share is closed last.
        self.stop_follower.set()
        if self.follower is not None:
            self.follower.join(300)  # a switch in hand waits for the old embedder's batch
        self.stop_staged.set()
        if self.staged is not None:
            self.staged.join(300)  # it closes the versions it opened, their embedders committed
        self.stop_responder.set()
        if self.responder is not None:
            self.responder.join(30)
        self.learned.stop()
        self.serving.served_log.flush(5)
        self.serving.catalogue.stop_writers()
        self.serving.catalogue.close()


def staged_versions(settings: Settings, client: redis.Redis, engine: Recommender, live: Version) -> StagedVersions:
    """The versions experiments serve variants from: each with an engine like ``engine`` on its own
    collection, and an embedder whose metrics join the live one's."""
    keys = Keys.of(settings)

    def make_engine(version: Version, reads: ProductStore) -> Recommender:
        reader = ShopperReader(client, keys, model_version=lambda: version.name)  # the profiles worker's copies are not of its space
        return engine.serving_from(reads, version.predictor.dims["fused"], version.name, reader)

    metrics = live.embedder.worker.metrics if live.embedder is not None else EmbedderMetrics()
    base = base_version(settings)
    return StagedVersions(settings, client, base, make_engine, upkeep_policy(settings), metrics)


def build_serving(settings: Settings, with_embedder: bool = True) -> Serving:
    from services.recommender.http.guards import check_serving

    check_serving(settings)  # before anything connects: an API open by mistake never starts
    require_broker(settings)
    client = redis_client(settings)
    version = first_version(settings, client, upkeep_policy(settings), with_embedder)
    # The embedder writes through the version's vector cache too, so nothing it caches goes stale.
    reads = SwitchableStore(version.reads)
    served_log = Producer(producer_config(settings))
    metrics = RecommenderMetrics()
    engine, learned = build_recommender(
        settings,
        reads,
        version.predictor.dims["fused"],
        client,
        served_publisher(settings, served_log, metrics, client, Keys.of(settings)),
        lambda: catalogue.model_version,  # read at request time, once the catalogue below exists
        lambda: catalogue.unversioned,
        lambda name: staged.lease(name),
    )
    alias = read_alias(client, Keys.of(settings))
    catalogue = LiveCatalogue(settings, client, version, engine, reads, upkeep_policy(settings), alias.unversioned if alias else None)
    staged = staged_versions(settings, client, engine, version)
    registries: tuple[CollectorRegistry, ...] = (version.embedder.worker.metrics.registry,) if version.embedder else ()
    responder = Responder(
        settings,
        engine,
        Consumer(consumer_config(settings, settings.group(GROUP_ID))),
        Producer(producer_config(settings)),
        metrics,
        lambda: catalogue.model_version,
    )
    keys = Keys.of(settings)
    # A plain client even on a Cluster: a PUBLISH reaches the subscribers of every node.
    live = LiveUpdates(async_redis(settings.redis_url), keys.updates_channel)
    parts = ApiParts(
        settings,
        engine,
        reads,
        Producer(producer_config(settings)),
        live,
        metrics,
        registries,
        model_version=lambda: catalogue.model_version,
        experiment_report=lambda experiment_id, metric: read_report(client, keys, experiment_id, metric),
        experiments=lambda: load_all(client, keys),
    )
    serving = Serving(settings, catalogue, staged, engine, learned, responder, parts, served_log, [], client)
    parts.health = serving.health
    return serving


def single_threaded_blas() -> Any:
    """One BLAS thread per calling thread, for this process; returns the limiter (``restore_original_limits``).

    Requests run on several threads at once and each multiplies small matrices (features, MMR,
    the item model). With OpenBLAS's own pool of a thread per core on top, its threads spin
    waiting for work and took 61 % of the API's CPU under load (83 against 33 ms a request at
    20 requests/s, bench/serve.py, docs/benchmarks.md). torch keeps its own threads (OpenMP),
    so the embedder in ``serve`` is not affected; the item model's fit, on the reloading thread,
    runs on one core and leaves the other to the requests."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def run_serve(settings: Settings, with_embedder: bool = True) -> int:
    import uvicorn

    single_threaded_blas()
    serving = build_serving(settings, with_embedder)
    server = uvicorn.Server(server_config(build_api(serving.api), settings))

    def fail(reason: str) -> None:
        server.should_exit = True  # uvicorn notices within a tick and shuts down gracefully

    running = serving.start_background(fail)
    # uvicorn re-raises the signal that stopped it once it is done; with these in place that
    # lands here instead of killing the process before the embedder has flushed and committed.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    log.info("serving", extra={"url": f"http://{settings.api_host}:{settings.api_port}/", "embedder": with_embedder})
    try:
        server.run()  # SIGINT/SIGTERM: stop accepting, finish requests, return
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    finally:
        running.stop()
    if not server.started:
        raise UserError(f"the API could not listen on {settings.api_host}:{settings.api_port}; set SHELFSIGHT_API_PORT")
    if running.failure:
        log.error("serve stopped because a part failed", extra={"reason": running.failure})
        return 1
    log.info("stopped")
    return 0
