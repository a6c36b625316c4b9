"""Each GET of recommendations logs a served list of about 40 KB: the log is bounded, so a
client hammering the API cannot turn into a flood on Kafka."""

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from schemas import RecommendationServed
from schemas.topics import RECOMMENDATIONS_SERVED
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.tail import tail
from services.recommender.metrics import RecommenderMetrics
from services.recommender.service import served_publisher

pytestmark = [pytest.mark.kafka]


def _served() -> RecommendationServed:
    return RecommendationServed(
        request_id=f"http-{uuid.uuid4().hex}",
        user_id="u-1",
        served_at=datetime.now(UTC),
        shown=2,
        products=["bag-1", "bag-2"],
        feature_names=["cosine"],
        features=np.ones(2, np.float32).tobytes(),
        ranker="prior",
    )


def _unlogged(metrics: RecommenderMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("shelfsight_served_unlogged_total", {"reason": reason}) or 0.0


def test_served_lists_over_the_budget_are_counted_not_logged(kafka):
    producer, metrics = Producer(producer_config(kafka)), RecommenderMetrics()
    publish = served_publisher(kafka.model_copy(update={"served_log_per_s": 2.0}), producer, metrics)
    for _ in range(10):  # at once: the burst is one second's worth
        publish(_served())
    producer.flush(10)
    logged = list(tail(kafka, kafka.topic(RECOMMENDATIONS_SERVED.name), max_messages=10, idle_timeout=3))
    assert len(logged) == 2
    assert _unlogged(metrics, "over_rate") == 8


def test_a_budget_of_zero_logs_nothing(kafka):
    producer, metrics = Producer(producer_config(kafka)), RecommenderMetrics()
    publish = served_publisher(kafka.model_copy(update={"served_log_per_s": 0.0}), producer, metrics)
    publish(_served())
    producer.flush(10)
    assert list(tail(kafka, kafka.topic(RECOMMENDATIONS_SERVED.name), max_messages=1, idle_timeout=2)) == []
    assert _unlogged(metrics, "over_rate") == 1


@pytest.mark.redis
def test_a_logged_list_is_in_the_shoppers_served_lists_at_once_and_only_once(kafka, redis_client):
    """The click that comes right after a list must find it: serve keeps it in Redis as it answers,
    and the worker keeping the same list from Kafka later does not keep it twice."""
    import asyncio

    import redis.asyncio as aioredis

    from services.profiles.profile import ClickParams
    from services.profiles.state import ProfileState
    from state.keys import Keys

    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    producer, metrics = Producer(producer_config(kafka)), RecommenderMetrics()
    publish = served_publisher(kafka, producer, metrics, redis_client, keys)
    served = _served()
    publish(served)
    stored = redis_client.lrange(keys.served("u-1"), 0, -1)
    assert len(stored) == 1 and RecommendationServed.model_validate_json(stored[0]).request_id == served.request_id
    producer.flush(10)
    (logged,) = list(tail(kafka, kafka.topic(RECOMMENDATIONS_SERVED.name), max_messages=1, idle_timeout=3))

    async def as_the_worker() -> None:
        client = aioredis.Redis.from_url(kafka.redis_url)
        await ProfileState(client, keys, ClickParams()).remember_served("u-1", logged.value.encode())
        await client.aclose()

    asyncio.run(as_the_worker())
    assert redis_client.lrange(keys.served("u-1"), 0, -1) == stored
    assert redis_client.ttl(keys.served("u-1")) > 0
    redis_client.delete(keys.served("u-1"))
