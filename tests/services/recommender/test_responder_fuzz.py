"""Fuzzing the responder on the real broker: whatever lands on `recommendations.requests`, it
answers or dead-letters, commits, and goes on."""

import threading
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer
from hypothesis import given
from hypothesis import strategies as st

from schemas import ContractError, RecommendationRequest, decode
from schemas.topics import RECOMMENDATION_REQUESTS, RECOMMENDATION_RESPONSES
from services.bus.config import consumer_config, producer_config
from services.bus.consume import wait_caught_up
from services.bus.producer import Producer
from services.recommender.metrics import RecommenderMetrics
from services.recommender.responder import GROUP_ID, Responder
from tests.hostile import FUZZ, KEYS, dead_lettered, mutations, produce, read_to_end

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

VALID = {
    "request_id": "r-1",
    "user_id": "zoe",
    "k": 3,
    "requested_at": datetime.now(UTC).isoformat(),
    "filters": {"category": "Dress"},
    "reply_topic": "recommendations.responses",
}


@pytest.fixture
def responder(kafka, shop):
    shop.click("zoe", "dress-1", "click")
    running = Responder(
        kafka,
        shop.engine(),
        Consumer(consumer_config(kafka, kafka.group(GROUP_ID))),
        Producer(producer_config(kafka)),
        RecommenderMetrics(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(30)


@FUZZ
@given(batch=st.lists(st.tuples(KEYS, mutations(VALID)), min_size=10, max_size=25))
def test_no_request_stops_the_responder_and_every_refusal_is_dead_lettered(kafka, responder, batch):
    source = kafka.topic(RECOMMENDATION_REQUESTS.name)
    sent = produce(kafka, source, batch)
    wait_caught_up(kafka, source, kafka.group(GROUP_ID), timeout=90)
    assert responder.is_alive()
    letters = dead_lettered(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), source)
    answered = {m.value for m in read_to_end(kafka, kafka.topic(RECOMMENDATION_RESPONSES.name))}
    for message in sent:
        try:
            request = decode(RecommendationRequest, message.value)
        except ContractError:
            assert (message.partition, message.offset) in letters, message.value[:200]
            continue
        if request.reply_topic == RECOMMENDATION_RESPONSES.name:
            assert any(f'"request_id":"{request.request_id}"' in a for a in answered)
        else:  # a reply topic of the prefix that nobody created
            assert (message.partition, message.offset) in letters
