"""The Faust app: an agent over `clicks` (keyed by user_id) joined with items from `products.indexed`.

The item side lives in Redis, not in a Faust table: clicks are partitioned by shopper and
items by product, so a table would have to be global (every worker reading the whole
changelog), while Redis gives every worker — and the recommender — the same items at once.
"""

import hashlib
import logging
import time

import faust
import redis
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from models.ranking.learners import Learners
from schemas import ContractError, ProductIndexed, RecommendationServed, decode
from schemas.topics import CLICKS, PRODUCTS_INDEXED, RECOMMENDATIONS_SERVED
from services.bus.config import faust_broker
from services.bus.dead_letters import dead_letter
from services.bus.producer import Producer
from services.profiles.handler import BatchResult, ClickHandler, RawMessage
from services.profiles.metrics import ProfilesMetrics
from services.profiles.positions import RangeReader, RangeReadFailed
from services.profiles.state import ProfileState
from services.settings import Settings
from state.checkpoints import CHECKPOINT_KEEP_S, dump

log = logging.getLogger(__name__)

GROUP_ID = "shelfsight-profiles"


def build_app(
    settings: Settings,
    state: ProfileState,
    learners: Learners,
    producer: Producer,
    metrics: ProfilesMetrics,
    secret: bytes,
    reader: RangeReader | None = None,
    worker: str = "main",
) -> faust.App:
    (settings.cache_dir / "faust").mkdir(parents=True, exist_ok=True)
    brokers, credentials = faust_broker(settings)
    app = faust.App(
        settings.group(GROUP_ID),
        broker=brokers,
        broker_credentials=credentials,
        store="memory://",
        datadir=str(settings.cache_dir / "faust" / "{conf.name}-data"),  # not the working directory
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.profiles_session_timeout_s,
        broker_heartbeat_interval=settings.profiles_session_timeout_s / 10,
        producer_max_request_size=1_000_000,
    )
    clicks_topic = app.topic(settings.topic(CLICKS.name), key_serializer="raw", value_serializer="raw")
    items_topic = app.topic(settings.topic(PRODUCTS_INDEXED.name), key_serializer="raw", value_serializer="raw")
    served_topic = app.topic(settings.topic(RECOMMENDATIONS_SERVED.name), key_serializer="raw", value_serializer="raw")
    clicks_dlq = settings.topic(CLICKS.dlq)
    items_dlq = settings.topic(PRODUCTS_INDEXED.dlq)
    served_dlq = settings.topic(RECOMMENDATIONS_SERVED.dlq)

    def to_dlq(topic: str, source: str):  # type: ignore[no-untyped-def]
        def send(message: RawMessage, reason: str) -> None:
            producer.send(
                topic,
                dead_letter(value=message.value, key=message.key, reason=reason, source_topic=source,
                            service="profiles", partition=message.partition, offset=message.offset),
            )
            metrics.events.labels("dead_letter").inc()

        return send

    def flush_dead_letters() -> None:
        left = producer.flush(30)
        if left:
            raise DeadLettersUndelivered(f"{left} dead letters not acknowledged by Kafka within 30 s")

    async def flush_async() -> None:
        flush_dead_letters()

    handler = ClickHandler(state, learners, state.params, to_dlq(clicks_dlq, settings.topic(CLICKS.name)),
                           flush_dead_letters=flush_dead_letters, reader=reader)

    async def one_by_one(stream, dlq: str, source: str, what: str, apply) -> None:  # type: ignore[no-untyped-def]
        """Apply each message; a bad one goes to ``dlq`` with its reason and the agent goes on."""
        async for event in stream.events():
            m = event.message
            raw = RawMessage(m.key, m.value, m.partition, m.offset)
            try:
                await apply(m)
            except ContractError as exc:
                to_dlq(dlq, source)(raw, exc.reason)
            except Exception as exc:  # never let one message stop the agent: Faust would drop it
                log.exception("%s failed", what)
                to_dlq(dlq, source)(raw, f"internal error: {exc!r}"[:500])

    async def keep_item(m) -> None:  # type: ignore[no-untyped-def]
        if m.value is None:  # tombstone: the product was delisted
            product_id = (m.key or b"").decode()
            if not product_id:
                raise ContractError("a tombstone without a key names no product")
            await _retrying(lambda: state.delete_item(product_id))
            return
        item = decode(ProductIndexed, m.value)
        await _retrying(lambda: state.put_indexed(item))
        metrics.items.inc()

    async def keep_served(m) -> None:  # type: ignore[no-untyped-def]
        """Served lists, kept per shopper until the clicks that follow them can be joined (see choices.py)."""
        record = decode(RecommendationServed, m.value)
        await _retrying(lambda: state.remember_served(record.user_id, m.value))
        metrics.served.inc()

    @app.agent(items_topic)
    async def items(stream):  # type: ignore[no-untyped-def]
        await one_by_one(stream, items_dlq, settings.topic(PRODUCTS_INDEXED.name), "item", keep_item)

    @app.agent(served_topic)
    async def served(stream):  # type: ignore[no-untyped-def]
        await one_by_one(stream, served_dlq, settings.topic(RECOMMENDATIONS_SERVED.name), "served list", keep_served)

    @app.agent(clicks_topic)
    async def clicks(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(settings.profiles_batch_size, within=settings.profiles_batch_wait_ms / 1000):
            batch = [RawMessage(e.message.key, e.message.value, e.message.partition, e.message.offset, e.message.topic)
                     for e in events]
            metrics.batch_consumed()
            started = time.perf_counter()
            try:
                result = await _retrying(lambda b=batch: handler.handle(b))
            except Exception:  # not bad input (that is dead-lettered inside): find the events it fails on
                log.exception("click batch failed; applying its events one by one")
                result = await one_at_a_time(batch)
            account(result)
            metrics.update_seconds.observe(time.perf_counter() - started)

    async def one_at_a_time(batch: list[RawMessage]) -> BatchResult:
        """Each event of a failed batch on its own: the ones that fail again go to the DLQ with the
        reason, the positions pass them (or the next batch would read them back as a gap), and the
        other shoppers' events of the batch are applied as usual."""
        total = BatchResult()
        for raw in batch:
            try:
                total.add(await _retrying(lambda one=[raw]: handler.handle(one)))
            except Exception as exc:
                log.exception("click event failed", extra={"partition": raw.partition, "offset": raw.offset})
                to_dlq(clicks_dlq, settings.topic(CLICKS.name))(raw, f"internal error: {type(exc).__name__}: {exc}")
                await _retrying(flush_async)
                await _retrying(lambda one=[raw]: handler.skip(one))
        return total

    def account(result: BatchResult) -> None:
        metrics.events.labels("applied").inc(result.applied)
        metrics.events.labels("replayed").inc(result.replayed)
        metrics.events.labels("parked").inc(result.parked)
        metrics.events.labels("unparked").inc(result.unparked)
        metrics.choices.inc(result.choices_learned)
        metrics.events.labels("duplicate").inc(result.duplicates)

    @app.timer(interval=settings.profiles_park_retry_s)
    async def parked() -> None:
        """Parked clicks move on even when no new click arrives on their partition."""
        try:
            account(await _retrying(handler.retry_parked))
            metrics.parked.set(await handler.parked_count())
        except Exception:  # the next tick tries again; a timer that raises would stop the worker
            log.exception("retrying parked clicks failed")

    @app.timer(interval=settings.learners_checkpoint_s)
    async def checkpoint() -> None:
        await checkpoint_learners(state, learners, secret, worker)
        producer.flush(5)

    return app


async def checkpoint_learners(state: ProfileState, learners: Learners, secret: bytes, worker: str = "main",
                              keep_s: float = CHECKPOINT_KEEP_S) -> bool:
    """Write this worker's learners checkpoint (with its digest, registered under the worker's
    name, kept ``keep_s`` after its last write); with Redis away, skip this one (the timer tries
    again next interval) instead of letting the error stop the timer and, with it, the worker."""
    blob = dump(learners, secret)
    keys = state.keys
    try:
        pipe = state.redis.pipeline(transaction=True)
        pipe.set(keys.learners(worker), blob, ex=int(keep_s))
        pipe.set(keys.learners_digest(worker), hashlib.sha256(blob).hexdigest(), ex=int(keep_s))
        now = time.time()
        pipe.zadd(keys.learners_workers, {worker: now})
        pipe.zremrangebyscore(keys.learners_workers, "-inf", now - keep_s)  # restarts name new workers: drop the gone
        await pipe.execute()
        return True
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("learners checkpoint skipped: redis unavailable", extra={"error": str(exc)})
        return False


class DeadLettersUndelivered(ConnectionError):
    """Kafka did not take the batch's dead letters: the batch is not written and is retried."""


# Redis or Kafka being away is never the events' fault: wait for them as long as it takes (the
# events stay unapplied and unacknowledged meanwhile; /healthz turns unhealthy when progress stops).
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, RangeReadFailed, DeadLettersUndelivered)


async def _retrying(operation):  # type: ignore[no-untyped-def]
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT),
        wait=wait_exponential(multiplier=0.1, max=5.0),
        before_sleep=lambda state: log.warning(
            "redis or kafka unavailable; retrying",
            extra={"error": str(state.outcome.exception()) if state.outcome else "", "attempt": state.attempt_number},
        ),
        reraise=True,
    ):
        with attempt:
            return await operation()
    return None
