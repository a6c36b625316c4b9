"""Recommendations over Kafka: requests in on ``recommendations.requests``, answers on each
request's ``reply_topic`` (a logical name: the topic prefix applies), correlated by ``request_id``.

Every message is handled on its own, and none can stop the responder:

- a request that breaks the contract gets an error response (when its ``request_id`` can be
  read at all) and a dead letter; the reason it is given is made printable and bounded;
- a request older than ``SHELFSIGHT_REQUEST_MAX_AGE_S`` is answered ``expired`` without being
  computed (after an outage, a backlog of abandoned requests costs nothing);
- a failure while answering (a store or Redis away, a bug) is answered ``unavailable`` with a
  generic message; the details go to the log, never to the requester;
- anything that escapes all that is dead-lettered as an internal error, and the responder goes on.

Offsets are committed only after the answers and dead letters are delivered. An answer Kafka
keeps refusing (its topic deleted since, say) is retried a few times, then its request is
dead-lettered, so one request never blocks its partition for ever. Reply topics are
``recommendations.responses`` or start with ``SHELFSIGHT_REPLY_TOPIC_PREFIX`` (a requester cannot
make the responder write into ``clicks``); a request naming one that does not exist is
dead-lettered at once.
"""

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeGuard, TypeVar

import pydantic_core
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from schemas import (
    ContractError,
    RecommendationRequest,
    RecommendationResponse,
    decode,
    encode,
)
from schemas.base import ID_PATTERN, printable
from schemas.limits import LIMITS
from schemas.topics import RECOMMENDATION_REQUESTS, RECOMMENDATION_RESPONSES
from services.bus.dead_letters import dead_letter
from services.bus.messages import position
from services.bus.producer import Producer
from services.recommender import answers
from services.recommender.engine import Query, Recommender
from services.recommender.metrics import RecommenderMetrics
from services.settings import Settings

log = logging.getLogger(__name__)

GROUP_ID = "shelfsight-recommender"
UNAVAILABLE = "recommendations are unavailable right now; retry later"
DELIVERY_ATTEMPTS = 5  # tries of a batch whose answers Kafka refuses, before those requests are dead-lettered
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_ID = re.compile(ID_PATTERN)


def reply_allowed(topic: str, prefix: str) -> bool:
    """Whether a request may have its answer written to ``topic`` (logical name): the shared
    responses topic or one under the configured prefix, never another service's topic.

    >>> [reply_allowed(t, "recommendations.responses.") for t in ("recommendations.responses", "recommendations.responses.web", "clicks")]
    [True, True, False]
    """
    return topic == RECOMMENDATION_RESPONSES.name or (topic.startswith(prefix) and len(topic) > len(prefix))


class ReplyTopics:
    """Which reply topics exist, from the broker's metadata; a missing one is asked again after ``recheck_s``
    (it may be created meanwhile). Both memories are bounded: requesters choose the names.

    >>> class Meta:
    ...     def list_topics(self, topic, timeout): return type("M", (), {"topics": {}})()
    >>> topics = ReplyTopics(type("P", (), {"client": Meta()})(), max_topics=2)
    >>> [topics.exists(f"t{n}") for n in range(3)], len(topics._missing)
    ([False, False, False], 2)
    """

    def __init__(self, producer: Producer, recheck_s: float = 30.0, timeout_s: float = 5.0, max_topics: int = 10_000) -> None:
        self._producer = producer
        self._recheck_s = recheck_s
        self._timeout_s = timeout_s
        self._max = max_topics
        self._known: OrderedDict[str, None] = OrderedDict()
        self._missing: OrderedDict[str, float] = OrderedDict()

    def exists(self, topic: str) -> bool:
        if topic in self._known:
            self._known.move_to_end(topic)
            return True
        checked = self._missing.get(topic)
        if checked is not None and time.monotonic() - checked < self._recheck_s:
            return False
        try:
            found = self._producer.client.list_topics(topic, timeout=self._timeout_s).topics.get(topic)
        except KafkaException as exc:  # no answer: assume it exists; delivery will tell
            log.warning("topic metadata unavailable", extra={"topic": topic, "error": str(exc)})
            return True
        self._missing.pop(topic, None)
        if found is not None and found.error is None:
            _remember(self._known, topic, None, self._max)
            return True
        _remember(self._missing, topic, time.monotonic(), self._max)
        return False


_V = TypeVar("_V")


def _remember(memory: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


class Responder:
    def __init__(
        self,
        settings: Settings,
        engine: Recommender,
        consumer: Consumer,
        producer: Producer,
        metrics: RecommenderMetrics,
        model_version: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reply_topics = ReplyTopics(producer)
        self._settings = settings
        self._engine = engine
        self._consumer = consumer
        self._producer = producer
        self._metrics = metrics
        self._model_version = model_version
        self._clock = clock
        self._source = settings.topic(RECOMMENDATION_REQUESTS.name)
        self.answered = 0
        self.last_poll = time.monotonic()

    def run(self, stop: threading.Event, batch: int = 100) -> None:
        self._consumer.subscribe([self._source])
        try:
            while not stop.is_set():
                messages = self._consumer.consume(batch, timeout=0.2)
                self.last_poll = time.monotonic()
                good = [m for m in messages if not self._broken(m)]
                if good:
                    self._handle(good, stop)
        finally:
            self._producer.flush(10)
            self._consumer.close()

    def _handle(self, messages: list[Message], stop: threading.Event) -> None:
        """Answer a batch and commit it; a batch Kafka will not take is answered again, then given up on."""
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            failures: dict[int, str] = {}
            for n, message in enumerate(messages):
                self._answer_safely(message, _recorder(failures, n))
            if not self._producer.flush(30) and not failures:
                self._consumer.commit(asynchronous=False)
                return
            log.error("answers not delivered; retrying the batch", extra={"errors": list(failures.values())[:3], "attempt": attempt})
            if stop.is_set() or attempt == DELIVERY_ATTEMPTS:
                break
            stop.wait(min(5.0, 0.5 * 2**attempt))
        if not failures or stop.is_set():  # Kafka itself away (a flush timed out), or stopping: read them again later
            self._rewind(messages)
            return
        for n, reason in failures.items():
            self._refuse(messages[n], f"answer not delivered after {DELIVERY_ATTEMPTS} tries: {reason}", lambda _err: None)
        if self._producer.flush(30):
            self._rewind(messages)
            return
        self._consumer.commit(asynchronous=False)

    def _broken(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return False
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": str(error)})
        return True

    def _answer_safely(self, message: Message, failed: Callable[[str], None]) -> None:
        try:
            self._answer(message, failed)
        except Exception:  # whatever it was, this message must not stop the responder, nor be read for ever
            log.exception("request could not be handled", extra={"partition": message.partition(), "offset": message.offset()})
            self._refuse(message, "internal error while answering (see the recommender's log)", failed)

    def _refuse(self, message: Message, reason: str, failed: Callable[[str], None]) -> None:
        letter = dead_letter(
            value=message.value(),
            key=message.key(),
            reason=reason,
            source_topic=self._source,
            service="recommender",
            partition=message.partition(),
            offset=message.offset(),
        )
        self._producer.send(self._settings.topic(RECOMMENDATION_REQUESTS.dlq), letter, _on_error(failed))
        self._metrics.requests.labels("kafka", "invalid").inc()

    def _answer(self, message: Message, failed: Callable[[str], None]) -> None:
        started = time.perf_counter()
        try:
            request = decode(RecommendationRequest, message.value())
        except ContractError as exc:
            reason = printable(exc.reason)
            self._refuse(message, reason, failed)
            request_id, user_id, reply_topic = _salvage(message.value(), self._settings.reply_topic_prefix)
            if request_id is not None and self._reply_topics.exists(self._settings.topic(reply_topic)):
                self._send(reply_topic, answers.error(request_id, user_id, "invalid_request", reason), failed)
            return
        prefix = self._settings.reply_topic_prefix
        if not reply_allowed(request.reply_topic, prefix):
            reason = (
                f"reply_topic {request.reply_topic} is not allowed: leave it out, or name a topic starting with "
                f"{prefix} (SHELFSIGHT_REPLY_TOPIC_PREFIX)"
            )
            self._refuse(message, reason, failed)
            self._send(RECOMMENDATION_RESPONSES.name, answers.error(request.request_id, request.user_id, "invalid_request", reason), failed)
            return
        if not self._reply_topics.exists(self._settings.topic(request.reply_topic)):
            self._refuse(
                message,
                f"reply_topic {request.reply_topic} does not exist: create it, or leave reply_topic out "
                f"to get the answer on {RECOMMENDATION_RESPONSES.name}",
                failed,
            )
            return
        reply, outcome = self._reply(request)
        self._send(request.reply_topic, reply, failed)
        self._metrics.requests.labels("kafka", outcome).inc()
        self._metrics.latency.labels("kafka").observe(time.perf_counter() - started)
        self.answered += 1

    def _reply(self, request: RecommendationRequest) -> tuple[RecommendationResponse, str]:
        age = self._clock() - request.requested_at.timestamp()
        if age > self._settings.request_max_age_s:
            return answers.error(
                request.request_id,
                request.user_id,
                "expired",
                f"the request is {age:.0f} s old, over SHELFSIGHT_REQUEST_MAX_AGE_S ({self._settings.request_max_age_s:g} s): ask again",
            ), "expired"
        try:
            result = self._engine.recommend(
                Query(request.user_id, request.k, answers.search_filters(request.filters), request.context_product_id, request.request_id)
            )
            return (
                answers.response(
                    request.request_id, request.user_id, result.items, result.model_version or self._model_version(), result.experiment
                ),
                "ok",
            )
        except Exception:  # a failing store or Redis must not stop the responder; the details are for the log only
            log.exception("recommendation failed", extra={"request_id": request.request_id})
            return answers.error(request.request_id, request.user_id, "unavailable", UNAVAILABLE), "error"

    def _send(self, reply_topic: str, reply: RecommendationResponse, failed: Callable[[str], None]) -> None:
        self._producer.send(self._settings.topic(reply_topic), encode(reply), _on_error(failed))

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            topic, partition, offset = position(m)
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            try:
                self._consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:
                log.warning("rewind failed", extra={"error": str(exc)})


def _on_error(failed: Callable[[str], None]) -> Callable[[KafkaError | None, Message], None]:
    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed(str(err))

    return delivered


def _recorder(failures: dict[int, str], n: int) -> Callable[[str], None]:
    """A delivery-failure callback for message ``n``: its first failure is kept."""

    def failed(reason: str) -> None:
        failures.setdefault(n, reason)

    return failed


def _is_id(value: object) -> TypeGuard[str]:
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
