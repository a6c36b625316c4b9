"""Assembling and running the embedder: `shelfsight embedder`."""

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from confluent_kafka import Consumer

from models.checkpoint import CheckpointError
from models.images.decoding import ImagePolicy
from models.predictor import Predictor
from services.bus.broker import require_broker
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.embedder.fetch import ImageFetcher, UrlPolicy
from services.embedder.indexing import Indexer
from services.embedder.inference import PredictorPool, predictor_pool
from services.embedder.metrics import EmbedderMetrics
from services.embedder.taxonomy import StoreTaxonomy, TaxonomyConfig, restore_taxonomy
from services.embedder.worker import GROUP_ID, EmbedderWorker
from services.errors import UserError
from services.ops.http import OpsServer, start_ops
from services.settings import Settings, comma_list
from services.vectors.factory import open_store
from services.vectors.store import ProductStore, StoreMismatch

log = logging.getLogger(__name__)


def image_policy(settings: Settings) -> ImagePolicy:
    return ImagePolicy(max_bytes=settings.image_max_bytes, max_pixels=settings.image_max_pixels)


_TOTAL_TIMEOUTS = 6  # a fetch's deadline, in SHELFSIGHT_IMAGE_TIMEOUT_S: 30 s by default


def url_policy(settings: Settings) -> UrlPolicy:
    hosts = frozenset(comma_list(settings.image_allowed_hosts))
    return UrlPolicy(
        allow_http=settings.image_allow_http,
        allow_file=settings.image_file_root is not None,
        file_root=settings.image_file_root,
        allowed_hosts=hosts,
        allow_private=settings.image_allow_private,
        connect_timeout=settings.image_timeout_s,
        read_timeout=settings.image_timeout_s,
        # The whole fetch, every try included: room for a slow connect and a few slow reads on
        # each try, yet a bound on how long a trickling host holds a decode thread.
        total_timeout=_TOTAL_TIMEOUTS * settings.image_timeout_s,
        max_bytes=settings.image_max_bytes,
        attempts=settings.image_fetch_attempts,
    )


def store_taxonomy(settings: Settings, store: ProductStore) -> StoreTaxonomy | None:
    """The store head, restored from the labelled products already stored; None when turned off."""
    if not settings.store_head:
        return None
    return restore_taxonomy(
        store, TaxonomyConfig(unsure_below=settings.store_head_unsure_below, max_examples=settings.store_head_max_examples)
    )


def load_predictor(settings: Settings) -> Predictor:
    if not (settings.checkpoint / "model_card.json").exists():
        raise UserError(
            f"no model checkpoint at {settings.checkpoint}: train one with `make model` "
            "(or `shelfsight train`) and/or set SHELFSIGHT_MODEL_DIR"
        )
    try:
        return Predictor.load(
            settings.checkpoint, device=settings.device, image_policy=image_policy(settings), mirror_average=settings.mirror_average
        )
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def open_product_store(settings: Settings, predictor: Predictor) -> ProductStore:
    try:
        return open_store(settings, predictor.dims)
    except StoreMismatch as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:  # ShardLocked
        raise UserError(str(exc)) from None


@dataclass
class Embedder:
    worker: EmbedderWorker
    predictor: Predictor
    store: ProductStore
    pool: ThreadPoolExecutor
    ops: OpsServer | None
    owns_store: bool = True  # inside `serve` the store is shared with the API, which closes it
    models: PredictorPool | None = None  # the model processes; None: the model runs in this process

    def release(self) -> None:
        """Close the decode threads and the model processes (also for an embedder never run)."""
        self.pool.shutdown(wait=True)
        if self.models is not None:
            self.models.close()

    def run(self, stop: threading.Event) -> None:
        try:
            self.worker.run(stop)
        finally:
            self.release()
            if self.owns_store:
                self.store.close()
            if self.ops:
                self.ops.stop()


def _health(worker: EmbedderWorker, predictor: Predictor) -> Callable[[], dict[str, object]]:
    def health() -> dict[str, object]:
        idle = time.monotonic() - worker.last_progress
        return {
            "healthy": idle < 60,
            "seconds_since_last_poll": round(idle, 1),
            "indexed": worker.indexed_total,
            "model_version": predictor.model_version,
        }

    return health


def build_embedder(
    settings: Settings,
    predictor: Predictor | None = None,
    store: ProductStore | None = None,
    group: str = GROUP_ID,
    publish_indexed: bool = True,
    metrics: EmbedderMetrics | None = None,
    models: PredictorPool | None = None,
) -> Embedder:
    """An embedder of ``predictor``'s version into ``store``, following products.listed as consumer
    group ``group`` (logical: the settings add their prefix); see EmbedderWorker for ``publish_indexed``.
    ``models``: model processes to run ``predictor`` (default: as SHELFSIGHT_EMBEDDER_PROCESSES says)."""
    require_broker(settings)
    predictor = predictor or load_predictor(settings)
    owns_store = store is None
    store = store or open_product_store(settings, predictor)
    pool = ThreadPoolExecutor(settings.embedder_decode_threads, thread_name_prefix="decode")
    if models is None:
        models = predictor_pool(predictor, settings.embedder_processes)
    try:
        indexer = Indexer(
            predictor,
            store,
            ImageFetcher(url_policy(settings)),
            pool,
            image_policy(settings),
            taxonomy=store_taxonomy(settings, store),
            models=models,
        )
        consumer = Consumer(consumer_config(settings, settings.group(group)))
        metrics = metrics or EmbedderMetrics()
        worker = EmbedderWorker(settings, indexer, consumer, Producer(producer_config(settings)), metrics, group, publish_indexed)
        ops = start_ops(
            settings.embedder_metrics_port,
            settings.metrics_host,
            metrics.registry,
            _health(worker, predictor),
            "SHELFSIGHT_EMBEDDER_METRICS_PORT",
        )
    except BaseException:
        pool.shutdown(wait=False)
        if models is not None:
            models.close()  # model processes left running would outlive this embedder
        raise
    return Embedder(worker, predictor, store, pool, ops, owns_store, models)


def run_until_signalled(settings: Settings) -> int:
    """SIGTERM or SIGINT: finish the batch in hand, commit, close. When `shelfsight reembed`
    switches the live model version, the same: then run the new version, in its own group."""
    from services.embedder.versions import live_settings
    from services.redis_clients import redis_client
    from state.catalogue import read_alias
    from state.keys import Keys

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client = redis_client(settings)
    keys = Keys.of(settings)
    while not stop.is_set():
        run_settings, group, revision = live_settings(settings, client)
        embedder = build_embedder(run_settings, group=group)
        log.info("embedder ready", extra={"model": embedder.predictor.model_version, "group": group})
        switched = threading.Event()

        def watch(revision: int = revision, switched: threading.Event = switched) -> None:
            while not stop.wait(settings.catalogue_poll_s) and not switched.is_set():
                try:
                    alias = read_alias(client, keys)
                except Exception as exc:  # Redis away or an unreadable document: the embedder goes on, and reads it again
                    log.warning("could not read the catalogue alias", extra={"error": str(exc)[:300]})
                    continue
                if alias is not None and alias.revision != revision:
                    log.info("the live model version changed; switching", extra={"model": alias.live.name})
                    break
            switched.set()

        watcher = threading.Thread(target=watch, name="catalogue", daemon=True)
        watcher.start()
        try:
            embedder.run(switched)
        finally:
            switched.set()
            watcher.join(settings.catalogue_poll_s + 10)
        log.info("embedder stopped", extra={"indexed": embedder.worker.indexed_total})
    return 0
