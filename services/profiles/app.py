"""The Faust app: an agent over `clicks` (keyed by user_id) joined with items from `products.indexed`.

The item side lives in Redis, not in a Faust table: clicks are partitioned by shopper and
items by product, so a table would have to be global (every worker reading the whole
changelog), while Redis gives every worker — and the recommender — the same items at once.
"""

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import faust
import redis
from faust.types import EventT, Message, StreamT
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from models.ranking.learners import Learners
from schemas import ContractError, ProductIndexed, RecommendationServed, decode
from schemas.topics import CLICKS, PRODUCTS_INDEXED, RECOMMENDATIONS_SERVED, Topic
from services.bus.config import faust_broker
from services.bus.dead_letters import dead_letter
from services.bus.producer import Producer
from services.profiles.handler import BatchResult, ClickHandler, DeadLetterSink, RawMessage
from services.profiles.metrics import ProfilesMetrics
from services.profiles.positions import RangeReader, RangeReadFailed
from services.profiles.state import ProfileState
from services.settings import Settings
from state.checkpoints import CHECKPOINT_KEEP_S, dump

log = logging.getLogger(__name__)

GROUP_ID = "shelfsight-profiles"

T = TypeVar("T")


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
    """The worker: agents over products.indexed and recommendations.served keeping what clicks
    are joined with, the clicks agent around one click handler, the parked-clicks timer, and
    the learners checkpoint timer."""
    app = _faust_app(settings)
    letters = _DeadLetters(settings, producer, metrics)
    handler = ClickHandler(state, learners, state.params, letters.sender(CLICKS), flush_dead_letters=letters.flush, reader=reader)
    _add_joined_agents(app, settings, state, metrics, letters)
    _add_clicks_agent(app, settings, _ClickBatches(handler, letters, metrics))

    @app.timer(interval=settings.learners_checkpoint_s)
    async def checkpoint() -> None:
        await checkpoint_learners(state, learners, secret, worker)
        producer.flush(5)

    return app


def _faust_app(settings: Settings) -> faust.App:
    (settings.cache_dir / "faust").mkdir(parents=True, exist_ok=True)
    brokers, credentials = faust_broker(settings)
    return faust.App(
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


def _raw_topic(app: faust.App, settings: Settings, topic: Topic) -> faust.TopicT:
    return app.topic(settings.topic(topic.name), key_serializer="raw", value_serializer="raw")


class _DeadLetters:
    """The worker's dead-letter topics: a refused message goes to its topic's DLQ with the reason, and is counted."""

    def __init__(self, settings: Settings, producer: Producer, metrics: ProfilesMetrics) -> None:
        self._settings = settings
        self._producer = producer
        self._metrics = metrics
        self._refused: list[str] = []  # what Kafka said of dead letters it did not take, since the last flush

    def sender(self, topic: Topic) -> DeadLetterSink:
        """Sends messages of ``topic`` to its dead-letter topic."""
        dlq, source = self._settings.topic(topic.dlq), self._settings.topic(topic.name)

        def send(message: RawMessage, reason: str) -> None:
            self._producer.send(
                dlq,
                dead_letter(
                    value=message.value,
                    key=message.key,
                    reason=reason,
                    source_topic=source,
                    service="profiles",
                    partition=message.partition,
                    offset=message.offset,
                ),
                self._delivered,
            )
            self._metrics.events.labels("dead_letter").inc()

        return send

    def _delivered(self, error: object, _message: object) -> None:
        if error is not None:
            self._refused.append(str(error))

    def flush(self) -> None:
        """Wait until Kafka has every dead letter sent so far; raises when it has not within 30 s, or
        refused one (the batch is then tried again: a dead letter is never dropped silently)."""
        left = self._producer.flush(30)
        refused, self._refused = self._refused, []
        if left or refused:
            raise DeadLettersUndelivered(f"{left} dead letters not acknowledged by Kafka within 30 s; refused: {refused[:1]}")

    async def flush_async(self) -> None:
        self.flush()


def _add_joined_agents(app: faust.App, settings: Settings, state: ProfileState, metrics: ProfilesMetrics, letters: _DeadLetters) -> None:
    """The agents that keep what clicks are joined with: items, and the shoppers' served lists."""

    @app.agent(_raw_topic(app, settings, PRODUCTS_INDEXED))
    async def items(stream: StreamT) -> None:
        await _one_by_one(stream, letters.sender(PRODUCTS_INDEXED), "item", partial(_keep_item, state, metrics))

    @app.agent(_raw_topic(app, settings, RECOMMENDATIONS_SERVED))
    async def served(stream: StreamT) -> None:
        await _one_by_one(stream, letters.sender(RECOMMENDATIONS_SERVED), "served list", partial(_keep_served, state, metrics))


async def _one_by_one(stream: StreamT, send_dead_letter: DeadLetterSink, what: str, apply: Callable[[Message], Awaitable[None]]) -> None:
    """Apply each message; a bad one goes to the dead-letter topic with its reason and the agent goes on."""
    async for event in stream.events():
        message = event.message
        raw = RawMessage(message.key, message.value, message.partition, message.offset)
        try:
            await apply(message)
        except ContractError as exc:
            send_dead_letter(raw, exc.reason)
        except Exception as exc:  # never let one message stop the agent: Faust would drop it
            log.exception("%s failed", what)
            send_dead_letter(raw, f"internal error: {exc!r}"[:500])


async def _keep_item(state: ProfileState, metrics: ProfilesMetrics, message: Message) -> None:
    if message.value is None:  # tombstone: the product was delisted
        product_id = (message.key or b"").decode()
        if not product_id:
            raise ContractError("a tombstone without a key names no product")
        await _retrying(lambda: state.delete_item(product_id))
        return
    item = decode(ProductIndexed, message.value)
    await _retrying(lambda: state.put_indexed(item))
    metrics.items.inc()


async def _keep_served(state: ProfileState, metrics: ProfilesMetrics, message: Message) -> None:
    """Served lists, kept per shopper until the clicks that follow them can be joined (see choices.py)."""
    record = decode(RecommendationServed, message.value)
    value = message.value  # not None: decode() refuses a message without one
    await _retrying(lambda: state.remember_served(record.user_id, value, record.request_id, record.experiment))  # type: ignore[arg-type]
    metrics.served.inc()


def _add_clicks_agent(app: faust.App, settings: Settings, batches: "_ClickBatches") -> None:
    """The clicks agent, in batches, and the timer that moves parked clicks on."""

    @app.agent(_raw_topic(app, settings, CLICKS))
    async def clicks(stream: StreamT) -> None:
        # StreamT does not declare take_events; the faust.Stream every agent is given has it.
        batching = stream.take_events(settings.profiles_batch_size, within=settings.profiles_batch_wait_ms / 1000)  # type: ignore[attr-defined]
        async for events in batching:
            await batches.apply(events)

    @app.timer(interval=settings.profiles_park_retry_s)
    async def parked() -> None:
        """Parked clicks move on even when no new click arrives on their partition."""
        await batches.retry_parked()


class _ClickBatches:
    """What the clicks agent does with each batch, and the parked-clicks timer with parked clicks."""

    def __init__(self, handler: ClickHandler, letters: _DeadLetters, metrics: ProfilesMetrics) -> None:
        self._handler = handler
        self._letters = letters
        self._dead_letter = letters.sender(CLICKS)
        self._metrics = metrics

    async def apply(self, events: list[EventT]) -> None:
        batch = [
            RawMessage(event.message.key, event.message.value, event.message.partition, event.message.offset, event.message.topic)
            for event in events
        ]
        self._metrics.batch_consumed()
        started = time.perf_counter()
        try:
            result = await _retrying(partial(self._handler.handle, batch))
        except Exception:  # not bad input (that is dead-lettered inside): find the events it fails on
            log.exception("click batch failed; applying its events one by one")
            result = await self._one_at_a_time(batch)
        self._account(result)
        self._metrics.update_seconds.observe(time.perf_counter() - started)

    async def _one_at_a_time(self, batch: list[RawMessage]) -> BatchResult:
        """Each event of a failed batch on its own: the ones that fail again go to the DLQ with the
        reason, the positions pass them (or the next batch would read them back as a gap), and the
        other shoppers' events of the batch are applied as usual."""
        total = BatchResult()
        for raw in batch:
            try:
                total.add(await _retrying(partial(self._handler.handle, [raw])))
            except Exception as exc:
                log.exception("click event failed", extra={"partition": raw.partition, "offset": raw.offset})
                self._dead_letter(raw, f"internal error: {type(exc).__name__}: {exc}")
                await _retrying(self._letters.flush_async)
                await _retrying(partial(self._handler.skip, [raw]))
        return total

    async def retry_parked(self) -> None:
        try:
            self._account(await _retrying(self._handler.retry_parked))
            self._metrics.parked.set(await self._handler.parked_count())
        except Exception:  # the next tick tries again; a timer that raises would stop the worker
            log.exception("retrying parked clicks failed")

    def _account(self, result: BatchResult) -> None:
        metrics = self._metrics
        metrics.events.labels("applied").inc(result.applied)
        metrics.events.labels("replayed").inc(result.replayed)
        metrics.events.labels("parked").inc(result.parked)
        metrics.events.labels("unparked").inc(result.unparked)
        metrics.choices.inc(result.choices_learned)
        metrics.events.labels("duplicate").inc(result.duplicates)


CHECKPOINT_PIECE = 1 << 20  # bytes of a learners checkpoint sent a command
# KEYS: staging, checkpoint, digest, workers; ARGV: digest, ttl, worker, now, gone before (restarts
# name new workers: the registry drops those that stopped checkpointing).
_PUT_CHECKPOINT = """
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[5])
"""
STAGING_TTL_S = 3600  # a checkpoint left half-written by a worker that died goes within the hour


async def checkpoint_learners(
    state: ProfileState, learners: Learners, secret: bytes, worker: str = "main", keep_s: float = CHECKPOINT_KEEP_S
) -> bool:
    """Write this worker's learners checkpoint (with its digest, registered under the worker's
    name, kept ``keep_s`` after its last write); with Redis away, skip this one (the timer tries
    again next interval) instead of letting the error stop the timer and, with it, the worker."""
    blob = dump(learners, secret)
    keys = state.keys
    staging, piece = keys.learners_staging(worker), memoryview(blob)
    try:
        # In pieces, renamed into place with its digest: one command of tens of MB stalls the
        # event loop for seconds (asyncio copies what the socket has not taken yet at every send).
        await state.redis.set(staging, piece[:CHECKPOINT_PIECE], ex=STAGING_TTL_S)
        for start in range(CHECKPOINT_PIECE, len(blob), CHECKPOINT_PIECE):
            await state.redis.append(staging, piece[start : start + CHECKPOINT_PIECE])
        # One script (the keys share the {learners} tag): a cluster client refuses RENAME in a pipeline.
        digest, now = hashlib.sha256(blob).hexdigest(), time.time()
        learners_keys = (staging, keys.learners(worker), keys.learners_digest(worker), keys.learners_workers)
        await state.redis.eval(_PUT_CHECKPOINT, 4, *learners_keys, digest, int(keep_s), worker, repr(now), repr(now - keep_s))
        return True
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("learners checkpoint skipped: redis unavailable", extra={"error": str(exc)})
        return False
    except redis.ResponseError as exc:  # the staging key lost on the way (a Redis restarted without it)
        log.warning("learners checkpoint skipped: its pieces were lost", extra={"error": str(exc)})
        return False


class DeadLettersUndelivered(ConnectionError):
    """Kafka did not take the batch's dead letters: the batch is not written and is retried."""


# Redis or Kafka being away is never the events' fault: wait for them as long as it takes (the
# events stay unapplied and unacknowledged meanwhile; /healthz turns unhealthy when progress stops).
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, RangeReadFailed, DeadLettersUndelivered)


async def _retrying(operation: Callable[[], Awaitable[T]]) -> T:
    """``operation``, tried again for as long as Redis or Kafka is away; any other error is raised."""
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
    raise AssertionError("unreachable: every attempt either returns or re-raises")
