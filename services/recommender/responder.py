"""Recommendations over Kafka: requests in on ``recommendations.requests``, answers on each
request's ``reply_topic`` (a logical name: the topic prefix applies), correlated by ``request_id``.

A request that breaks the contract gets an error response (when its ``request_id`` can be
read at all) and a dead letter; offsets are committed only after the answers are delivered.
Reply topics are ``recommendations.responses`` or start with ``SHELFSIGHT_REPLY_TOPIC_PREFIX``
(a requester cannot make the responder write into ``clicks``); a request naming one that does not exist
is dead-lettered at once instead of being retried for ever, which would block its partition.
"""

import logging
import re
import threading
import time
from collections.abc import Callable

import pydantic_core
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from schemas import ContractError, RecommendationRequest, decode, encode
from schemas.base import ID_PATTERN
from schemas.limits import LIMITS
from schemas.topics import RECOMMENDATION_REQUESTS, RECOMMENDATION_RESPONSES
from services.bus.dead_letters import dead_letter
from services.bus.producer import Producer
from services.recommender import answers
from services.recommender.engine import Query, Recommender
from services.recommender.metrics import RecommenderMetrics
from services.settings import Settings

log = logging.getLogger(__name__)

GROUP_ID = "shelfsight-recommender"
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def reply_allowed(topic: str, prefix: str) -> bool:
    """Whether a request may have its answer written to ``topic`` (logical name): the shared
    responses topic or one under the configured prefix, never another service's topic.

    >>> [reply_allowed(t, "recommendations.responses.") for t in ("recommendations.responses", "recommendations.responses.web", "clicks")]
    [True, True, False]
    """
    return topic == RECOMMENDATION_RESPONSES.name or (topic.startswith(prefix) and len(topic) > len(prefix))
_ID = re.compile(ID_PATTERN)


class ReplyTopics:
    """Which reply topics exist, from the broker's metadata; a missing one is asked again after ``recheck_s``
    (it may be created meanwhile)."""

    def __init__(self, producer: Producer, recheck_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self._producer = producer
        self._recheck_s = recheck_s
        self._timeout_s = timeout_s
        self._known: set[str] = set()
        self._missing: dict[str, float] = {}

    def exists(self, topic: str) -> bool:
        if topic in self._known:
            return True
        checked = self._missing.get(topic)
        if checked is not None and time.monotonic() - checked < self._recheck_s:
            return False
        try:
            found = self._producer.client.list_topics(topic, timeout=self._timeout_s).topics.get(topic)
        except KafkaException as exc:  # no answer: assume it exists; delivery will tell
            log.warning("topic metadata unavailable", extra={"topic": topic, "error": str(exc)})
            return True
        if found is not None and found.error is None:
            self._known.add(topic)
            self._missing.pop(topic, None)
            return True
        self._missing[topic] = time.monotonic()
        return False


class Responder:
    def __init__(self, settings: Settings, engine: Recommender, consumer: Consumer, producer: Producer,
                 metrics: RecommenderMetrics, model_version: Callable[[], str | None] = lambda: None) -> None:
        self._reply_topics = ReplyTopics(producer)
        self._settings = settings
        self._engine = engine
        self._consumer = consumer
        self._producer = producer
        self._metrics = metrics
        self._model_version = model_version
        self.answered = 0
        self.last_poll = time.monotonic()

    def run(self, stop: threading.Event, batch: int = 100) -> None:
        source = self._settings.topic(RECOMMENDATION_REQUESTS.name)
        self._consumer.subscribe([source])
        try:
            while not stop.is_set():
                messages = self._consumer.consume(batch, timeout=0.2)
                self.last_poll = time.monotonic()
                good = [m for m in messages if not self._broken(m)]
                if not good:
                    continue
                failures: list[str] = []
                for message in good:
                    self._answer(message, failures)
                if self._producer.flush(30) or failures:
                    # Not delivered: leave the offsets, so the requests are read again.
                    log.error("answers not delivered; requests will be retried", extra={"errors": failures[:3]})
                    self._rewind(good)
                    continue
                self._consumer.commit(asynchronous=False)
        finally:
            self._producer.flush(10)
            self._consumer.close()

    def _broken(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": str(error)})
        return True

    def _answer(self, message: Message, failures: list[str]) -> None:
        started = time.perf_counter()
        source = self._settings.topic(RECOMMENDATION_REQUESTS.name)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        def refuse(reason: str) -> None:
            self._producer.send(
                self._settings.topic(RECOMMENDATION_REQUESTS.dlq),
                dead_letter(value=message.value(), key=message.key(), reason=reason, source_topic=source,
                            service="recommender", partition=message.partition(), offset=message.offset()),
                delivered,
            )
            self._metrics.requests.labels("kafka", "invalid").inc()

        try:
            request = decode(RecommendationRequest, message.value())
        except ContractError as exc:
            refuse(exc.reason)
            request_id, user_id, reply_topic = _salvage(message.value(), self._settings.reply_topic_prefix)
            if request_id is not None and self._reply_topics.exists(self._settings.topic(reply_topic)):
                self._send(reply_topic, answers.error(request_id, user_id, "invalid_request", exc.reason), delivered)
            return
        if not reply_allowed(request.reply_topic, self._settings.reply_topic_prefix):
            reason = (f"reply_topic {request.reply_topic} is not allowed: leave it out, or name a topic starting with "
                      f"{self._settings.reply_topic_prefix} (SHELFSIGHT_REPLY_TOPIC_PREFIX)")
            refuse(reason)
            self._send(RECOMMENDATION_RESPONSES.name, answers.error(request.request_id, request.user_id, "invalid_request", reason),
                       delivered)
            return
        if not self._reply_topics.exists(self._settings.topic(request.reply_topic)):
            refuse(f"reply_topic {request.reply_topic} does not exist: create it, or leave reply_topic out "
                   f"to get the answer on {RECOMMENDATION_RESPONSES.name}")
            return
        try:
            result = self._engine.recommend(
                Query(request.user_id, request.k, answers.search_filters(request.filters), request.context_product_id,
                      request.request_id)
            )
            reply = answers.response(request.request_id, request.user_id, result.items, self._model_version())
            outcome = "ok"
        except Exception as exc:  # a failing store or Redis must not stop the responder; the caller learns why
            log.exception("recommendation failed")
            reply = answers.error(request.request_id, request.user_id, "unavailable", f"recommendations unavailable: {exc!r}")
            outcome = "error"
        self._send(request.reply_topic, reply, delivered)
        self._metrics.requests.labels("kafka", outcome).inc()
        self._metrics.latency.labels("kafka").observe(time.perf_counter() - started)
        self.answered += 1

    def _send(self, reply_topic: str, reply, delivered) -> None:  # type: ignore[no-untyped-def]
        self._producer.send(self._settings.topic(reply_topic), encode(reply), delivered)

    def _rewind(self, messages: list[Message]) -> None:
        from confluent_kafka import TopicPartition

        first: dict[tuple[str, int], int] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            first[key] = min(first.get(key, m.offset()), m.offset())
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.warning("rewind failed", extra={"error": str(exc)})


def _is_id(value: object) -> bool:
    return isinstance(value, str) and len(value) <= LIMITS.id_chars and _ID.match(value) is not None


def _salvage(value: bytes | None, prefix: str) -> tuple[str | None, str, str]:
    """request_id, user_id and reply_topic of an invalid request, where they can be trusted."""
    default = RECOMMENDATION_RESPONSES.name
    try:
        raw = pydantic_core.from_json(value or b"")  # bounded nesting, unlike json.loads
    except ValueError:
        return None, "", default
    if not isinstance(raw, dict):
        return None, "", default
    request_id = raw.get("request_id")
    user_id = raw.get("user_id")
    reply_topic = raw.get("reply_topic")
    return (
        request_id if _is_id(request_id) else None,
        user_id if _is_id(user_id) else "",
        reply_topic if isinstance(reply_topic, str) and _TOPIC.match(reply_topic) and reply_allowed(reply_topic, prefix) else default,
    )
