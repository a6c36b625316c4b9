"""Shared fixtures. Tests that need Kafka or Redis use the real ones from `shelfsight stack up`.

Each test session works on its own topic prefix, so runs never see each other's messages.
"""

import uuid
from collections.abc import Iterator

import pytest
import redis

from services.bus.topics import create_topics, delete_topics, topic_specs
from services.settings import Settings, load_settings
from services.stack.kafka_node import broker_answers


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(topic_prefix=f"test-{uuid.uuid4().hex[:8]}.")


@pytest.fixture(scope="session")
def broker(settings: Settings) -> Settings:
    if not broker_answers(settings.kafka_bootstrap, timeout=5):
        pytest.fail(
            f"no Kafka broker at {settings.kafka_bootstrap}: run `make test`, or `shelfsight stack up` first",
            pytrace=False,
        )
    return settings


@pytest.fixture
def kafka(broker: Settings) -> Iterator[Settings]:
    """Settings whose topics are this test's own: created now, deleted afterwards."""
    own = broker.model_copy(update={"topic_prefix": f"{broker.topic_prefix}{uuid.uuid4().hex[:6]}."})
    create_topics(own)
    yield own
    delete_topics(own, [spec.name for spec in topic_specs(own)])


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail(
            f"no Redis at {settings.redis_url}: run `make test`, or `shelfsight stack up` first", pytrace=False
        )
    yield client
    client.close()
