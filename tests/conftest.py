"""Shared fixtures. Tests that need Kafka or Redis use the real ones from `shelfsight stack up`.

Each test session works on its own topic prefix, so runs never see each other's messages.
"""

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# Each embedder a test starts runs its model in-process: with model processes every one of them
# would load the model twice more. tests/services/embedder/test_inference.py runs the processes.
os.environ.setdefault("SHELFSIGHT_EMBEDDER_PROCESSES", "1")

from models.data import fashion_mnist
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
    _wait_visible(own)
    yield own
    delete_topics(own, [spec.name for spec in topic_specs(own)])


def _wait_visible(settings: Settings, timeout: float = 15.0) -> None:
    """Until a client's metadata shows every topic just created: the creation is acknowledged by
    the controller a moment before every metadata answer has it (a test once tailed too soon)."""
    from confluent_kafka.admin import AdminClient

    from services.bus.config import client_config

    names = {spec.name for spec in topic_specs(settings)}
    admin = AdminClient(client_config(settings))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and topics[n].error is None and topics[n].partitions for n in names):
            return
        time.sleep(0.1)
    pytest.fail(f"topics of {settings.topic_prefix} not visible within {timeout:.0f} s", pytrace=False)


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail(f"no Redis at {settings.redis_url}: run `make test`, or `shelfsight stack up` first", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def fmnist_small(tmp_path_factory) -> Path:
    """30 training and 30 test photos per category (600 real product photos in all)."""
    if not (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make test does)", pytrace=False)
    out = tmp_path_factory.mktemp("fmnist")
    fashion_mnist.export_image_folder(out, per_class=30)
    return out


@pytest.fixture(scope="session")
def small_checkpoint(fmnist_small, tmp_path_factory) -> Path:
    """A quickly trained image-only model (frozen backbone, 64 px) for the service tests."""
    from models.training import TrainConfig, train

    out = tmp_path_factory.mktemp("small-checkpoint")
    train(fmnist_small / "train", TrainConfig(input_size=64, epochs=4, batch_size=64, val_fraction=0.2), out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[str]:
    """A real 3-node Redis Cluster on loopback (services.stack.redis_cluster); its URL."""
    from services.stack.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster.on_free_ports(tmp_path_factory.mktemp("redis-cluster")).up()
    yield cluster.url
    cluster.down()
