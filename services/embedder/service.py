"""Assembling and running the embedder: `shelfsight embedder`."""

import logging
import signal
import threading
import time
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

    def run(self, stop: threading.Event) -> None:
        try:
            self.worker.run(stop)
        finally:
            self.pool.shutdown(wait=True)
            if self.owns_store:
                self.store.close()
            if self.ops:
                self.ops.stop()


def build_embedder(settings: Settings, predictor: Predictor | None = None, store: ProductStore | None = None) -> Embedder:
    require_broker(settings)
    predictor = predictor or load_predictor(settings)
    owns_store = store is None
    store = store or open_product_store(settings, predictor)
    pool = ThreadPoolExecutor(settings.embedder_decode_threads, thread_name_prefix="decode")
    indexer = Indexer(
        predictor, store, ImageFetcher(url_policy(settings)), pool, image_policy(settings), taxonomy=store_taxonomy(settings, store)
    )
    consumer = Consumer(consumer_config(settings, settings.group(GROUP_ID)))
    metrics = EmbedderMetrics()
    worker = EmbedderWorker(settings, indexer, consumer, Producer(producer_config(settings)), metrics)

    def health() -> dict[str, object]:
        idle = time.monotonic() - worker.last_progress
        return {
            "healthy": idle < 60,
            "seconds_since_last_poll": round(idle, 1),
            "indexed": worker.indexed_total,
            "model_version": predictor.model_version,
        }

    ops = start_ops(settings.embedder_metrics_port, settings.metrics_host, metrics.registry, health, "SHELFSIGHT_EMBEDDER_METRICS_PORT")
    return Embedder(worker, predictor, store, pool, ops, owns_store)


def run_until_signalled(settings: Settings) -> int:
    """SIGTERM or SIGINT: finish the batch in hand, commit, close."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    embedder = build_embedder(settings)
    log.info("embedder ready", extra={"model": embedder.predictor.model_version})
    embedder.run(stop)
    log.info("embedder stopped", extra={"indexed": embedder.worker.indexed_total})
    return 0
