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
        request_id=f"http-{uuid.uuid4().hex}", user_id="u-1", served_at=datetime.now(UTC), shown=2,
        products=["bag-1", "bag-2"], feature_names=["cosine"], features=np.ones(2, np.float32).tobytes(), ranker="prior",
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
