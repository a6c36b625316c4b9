"""Assembling and running the profiles worker: `shelfsight profiles`."""

import logging
import os
import socket
import threading
import time

from models.ranking.learners import Learners
from schemas.topics import CLICKS
from services.bus.broker import require_broker
from services.bus.config import consumer_config, producer_config
from services.bus.consume import group_lag
from services.bus.producer import Producer
from services.errors import UserError
from services.ops.http import OpsServer, start_ops
from services.profiles.app import GROUP_ID, build_app
from services.profiles.health import progress_health
from services.profiles.metrics import ProfilesMetrics
from services.profiles.positions import KafkaRangeReader
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from services.redis_clients import (
    CONNECT_ERRORS,
    async_redis,
    check_kind,
    redis_problem,
    sync_redis,
)
from services.settings import Settings
from state.checkpoints import CheckpointRejected, checkpoint_names, load
from state.keys import Keys
from state.layout import LayoutMismatch, check_layout
from state.secret import state_secret

log = logging.getLogger(__name__)


def restore_learners(settings: Settings, keys: Keys, secret: bytes) -> Learners:
    """Start from the most trained checkpoint any worker left (a restarted worker has a new
    name, and partitions move between workers, so "its own" checkpoint means little)."""
    try:
        client = sync_redis(settings.redis_url, settings.redis_cluster)
    except CONNECT_ERRORS as exc:
        raise UserError(redis_problem(exc, settings.redis_url, settings.redis_cluster)) from None
    try:
        check_kind(client, settings.redis_cluster)
        check_layout(client, keys)
        names = checkpoint_names(client, keys, time.time())
        blobs = [b for b in client.mget([keys.learners(n) for n in names]) if b is not None]
    except CONNECT_ERRORS as exc:
        raise UserError(redis_problem(exc, settings.redis_url, settings.redis_cluster)) from None
    except LayoutMismatch as exc:
        raise UserError(str(exc)) from None
    finally:
        client.close()
    fresh = Learners(
        ranker_warmup=settings.ranking_warmup_pairs,
        max_shoppers=settings.learners_max_shoppers,
        max_items=settings.learners_max_items,
        max_model_items=settings.item_model_items,
    )
    candidates = []
    for blob in blobs:
        if not isinstance(blob, bytes):
            continue
        try:
            candidates.append(load(blob, secret))
        except CheckpointRejected as exc:
            log.warning("learners checkpoint ignored", extra={"reason": str(exc)})
    if not candidates:
        return fresh
    learners = max(candidates, key=lambda c: c.events)
    learners.ranker_warmup = settings.ranking_warmup_pairs
    learners.bound(settings.learners_max_shoppers, settings.learners_max_items, settings.item_model_items)
    log.info("learners restored", extra={"events_seen": learners.events, "checkpoints": len(candidates)})
    return learners


def worker_name() -> str:
    """This worker's name among the profiles workers: where its learners checkpoint goes."""
    return f"{socket.gethostname()}-{os.getpid()}"


def run_profiles(settings: Settings) -> int:
    import faust

    require_broker(settings)
    keys = Keys.of(settings)
    secret = state_secret(settings)
    learners = restore_learners(settings, keys, secret)
    params = ClickParams.of(settings)
    state = ProfileState(async_redis(settings.redis_url, settings.redis_cluster), keys, params)
    metrics = ProfilesMetrics()
    producer = Producer(producer_config(settings))
    reader = KafkaRangeReader(consumer_config(settings, group_id="unused"))
    app = build_app(settings, state, learners, producer, metrics, secret, reader, worker_name())
    ops = _start_ops(settings, metrics)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # SIGTERM/SIGINT: stop agents, commit, close
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        producer.flush(30)
        reader.close()
        if ops:
            ops.stop()
    return 0


def _start_ops(settings: Settings, metrics: ProfilesMetrics) -> OpsServer | None:
    if not settings.profiles_metrics_port:
        return None
    last = {"at": time.monotonic(), "lag": 0}

    def refresh_lag() -> None:
        while True:
            try:
                last["lag"] = group_lag(settings, settings.topic(CLICKS.name), settings.group(GROUP_ID))
                metrics.lag.set(last["lag"])
                last["at"] = time.monotonic()
            except Exception:  # a lag probe must not take the worker down
                log.debug("lag probe failed", exc_info=True)
            time.sleep(10)

    threading.Thread(target=refresh_lag, name="lag", daemon=True).start()

    def health() -> dict[str, object]:
        consumed_age = time.time() - metrics.last_batch_at
        return progress_health(int(last["lag"]), time.monotonic() - last["at"], consumed_age, settings.profiles_stall_s)

    return start_ops(settings.profiles_metrics_port, settings.metrics_host, metrics.registry, health, "SHELFSIGHT_PROFILES_METRICS_PORT")
