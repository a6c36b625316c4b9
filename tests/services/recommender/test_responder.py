"""Recommendations over Kafka: request in, answer on the reply topic, correlated by request_id."""

import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer

from schemas import RecommendationRequest, RecommendationResponse, encode
from schemas.topics import RECOMMENDATION_REQUESTS, RECOMMENDATION_RESPONSES
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.bus.tail import tail
from services.recommender.metrics import RecommenderMetrics
from services.recommender.responder import GROUP_ID, Responder

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def _responses(settings, count):
    return [
        json.loads(m.value) for m in tail(settings, settings.topic(RECOMMENDATION_RESPONSES.name), max_messages=count, idle_timeout=15.0)
    ]


@contextlib.contextmanager
def _running(kafka, shop, model_version=lambda: None, engine=None):
    """A responder on its own thread, as `serve` runs it; stopped (and checked stopped) on exit."""
    responder = Responder(
        kafka,
        engine or shop.engine(),
        Consumer(consumer_config(kafka, kafka.group(GROUP_ID))),
        Producer(producer_config(kafka)),
        RecommenderMetrics(),
        model_version,
    )
    stop = threading.Event()
    thread = threading.Thread(target=responder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield responder
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()


def test_requests_are_answered_on_the_reply_topic_with_their_request_id(kafka, shop):
    shop.click("zoe", "dress-1", "click")
    with _running(kafka, shop, lambda: "model-x") as responder:
        producer = Producer(producer_config(kafka))
        source = kafka.topic(RECOMMENDATION_REQUESTS.name)
        ids = [f"req-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for n, request_id in enumerate(ids):
            request = RecommendationRequest(
                request_id=request_id, user_id="zoe", k=3 + n, requested_at=datetime.now(UTC), filters={"category": "Dress"}
            )
            producer.send(source, encode(request))
        bad = b'{"request_id": "req-bad", "user_id": "zoe", "k": 1000}'
        producer.client.produce(source, key=b"zoe", value=bad)
        producer.client.produce(source, key=b"zoe", value=b"not json at all")
        assert producer.flush(10) == 0

        answers = {r["request_id"]: r for r in _responses(kafka, 4)}
        assert set(answers) == {*ids, "req-bad"}
        for n, request_id in enumerate(ids):
            answer = RecommendationResponse.model_validate_json(json.dumps(answers[request_id]))
            assert answer.user_id == "zoe" and answer.error is None and answer.model_version == "model-x"
            assert len(answer.items) == 3 + n
            assert all(i.category == "Dress" and i.reason and i.product_id != "dress-1" for i in answer.items)
            assert all(i.image_url == f"/v1/products/{i.product_id}/image" for i in answer.items)
        assert answers["req-bad"]["error"]["code"] == "invalid_request" and "k" in answers["req-bad"]["error"]["message"]

        letters = list(tail(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), max_messages=2, idle_timeout=10.0))
        assert len(letters) == 2
        assert {m.value for m in letters} and all(m.headers.get("shelfsight-reason") for m in letters)
    assert responder.answered == 3


def test_reply_topics_are_confined_and_a_missing_one_does_not_block(kafka, shop):
    shop.click("zoe", "dress-1", "click")
    with _running(kafka, shop) as responder:
        producer = Producer(producer_config(kafka))
        source = kafka.topic(RECOMMENDATION_REQUESTS.name)
        now = datetime.now(UTC).isoformat()
        elsewhere = {"request_id": "req-clicks", "user_id": "zoe", "k": 3, "requested_at": now, "reply_topic": "clicks"}
        missing = {
            "request_id": "req-missing",
            "user_id": "zoe",
            "k": 3,
            "requested_at": now,
            "reply_topic": "recommendations.responses.nobody",
        }
        for body in (elsewhere, missing):
            producer.client.produce(source, key=b"zoe", value=json.dumps(body).encode())
        producer.send(source, encode(RecommendationRequest(request_id="req-after", user_id="zoe", k=2, requested_at=datetime.now(UTC))))
        assert producer.flush(10) == 0

        answers = {r["request_id"]: r for r in _responses(kafka, 2)}
        assert set(answers) == {"req-clicks", "req-after"}  # the refused topic's error comes on the default one
        assert answers["req-clicks"]["error"]["code"] == "invalid_request"
        assert "reply_topic" in answers["req-clicks"]["error"]["message"]
        assert len(answers["req-after"]["items"]) == 2  # not stuck behind the missing topic
        letters = list(tail(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), max_messages=2, idle_timeout=10.0))
        reasons = [m.headers["shelfsight-reason"] for m in letters]
        assert len(reasons) == 2 and all("reply_topic" in r for r in reasons)
        assert sum("does not exist" in r for r in reasons) == 1
        assert not list(tail(kafka, kafka.topic("clicks"), max_messages=1, idle_timeout=2.0))
    assert responder.answered == 1


def test_a_poison_request_is_dead_lettered_and_the_responder_goes_on(kafka, shop):
    """A control character in a key made the contract error unquotable: the reply raised, the
    responder died, and every restart died on the same uncommitted message."""
    from services.bus.consume import wait_caught_up

    shop.click("zoe", "dress-1", "click")
    with _running(kafka, shop) as responder:
        producer = Producer(producer_config(kafka))
        source = kafka.topic(RECOMMENDATION_REQUESTS.name)
        poison = b'{"request_id":"r1","user_id":"u1","requested_at":"2026-01-01T00:00:00Z","\\u0001":1}'
        producer.client.produce(source, key=b"u1", value=poison)
        producer.send(source, encode(RecommendationRequest(request_id="after", user_id="zoe", k=2, requested_at=datetime.now(UTC))))
        assert producer.flush(10) == 0
        answers = {r["request_id"]: r for r in _responses(kafka, 2)}
        assert answers["r1"]["error"]["code"] == "invalid_request" and "\\x01" in answers["r1"]["error"]["message"]
        assert len(answers["after"]["items"]) == 2
        (letter,) = list(tail(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), max_messages=1, idle_timeout=10.0))
        assert "\x01" not in letter.headers["shelfsight-reason"]
        wait_caught_up(kafka, source, kafka.group(GROUP_ID), timeout=30)
    assert responder.answered == 1


def test_stale_requests_are_answered_expired_without_being_computed(kafka, shop):
    shop.click("zoe", "dress-1", "click")
    engine = shop.engine()
    calls = []
    original = engine.recommend
    engine.recommend = lambda query: calls.append(query.request_id) or original(query)  # type: ignore[method-assign]
    with _running(kafka, shop, engine=engine):
        producer = Producer(producer_config(kafka))
        source = kafka.topic(RECOMMENDATION_REQUESTS.name)
        old = datetime.now(UTC).timestamp() - kafka.request_max_age_s - 5
        producer.send(
            source, encode(RecommendationRequest(request_id="old", user_id="zoe", k=2, requested_at=datetime.fromtimestamp(old, UTC)))
        )
        producer.send(source, encode(RecommendationRequest(request_id="new", user_id="zoe", k=2, requested_at=datetime.now(UTC))))
        assert producer.flush(10) == 0
        answers = {r["request_id"]: r for r in _responses(kafka, 2)}
    assert answers["old"]["error"]["code"] == "expired" and "SHELFSIGHT_REQUEST_MAX_AGE_S" in answers["old"]["error"]["message"]
    assert len(answers["new"]["items"]) == 2 and calls == ["new"]


def test_failures_are_answered_generically_and_a_bug_on_one_request_is_dead_lettered(kafka, shop, monkeypatch):
    from services.recommender import responder as responder_module

    shop.click("zoe", "dress-1", "click")
    engine = shop.engine()
    original = engine.recommend

    def failing(query):  # type: ignore[no-untyped-def]
        if query.user_id == "broken":
            raise RuntimeError("redis://:hunter2@10.0.0.5 said no")  # internal detail: must not reach the requester
        return original(query)

    engine.recommend = failing  # type: ignore[method-assign]
    real_encode = responder_module.encode
    monkeypatch.setattr(
        responder_module,
        "encode",
        lambda reply: (_ for _ in ()).throw(ValueError("a bug")) if reply.user_id == "buggy" else real_encode(reply),
    )
    with _running(kafka, shop, engine=engine):
        producer = Producer(producer_config(kafka))
        source = kafka.topic(RECOMMENDATION_REQUESTS.name)
        for request_id, user in (("r-broken", "broken"), ("r-buggy", "buggy"), ("r-ok", "zoe")):
            producer.send(source, encode(RecommendationRequest(request_id=request_id, user_id=user, k=2, requested_at=datetime.now(UTC))))
        assert producer.flush(10) == 0
        answers = {r["request_id"]: r for r in _responses(kafka, 2)}
        letters = list(tail(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), max_messages=1, idle_timeout=10.0))
    assert answers["r-broken"]["error"] == {"code": "unavailable", "message": responder_module.UNAVAILABLE}
    assert len(answers["r-ok"]["items"]) == 2 and "r-buggy" not in answers
    assert len(letters) == 1 and json.loads(letters[0].value)["reason"].startswith("internal error")
