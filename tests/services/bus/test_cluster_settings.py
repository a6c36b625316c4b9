"""Settings for real clusters: replication, min ISR, security passthrough, prefixed groups."""

import uuid

import faust
import pytest

from services.bus.config import consumer_config, faust_broker, producer_config
from services.bus.topics import create_topics, topic_specs
from services.errors import UserError
from services.settings import load_settings


def test_security_settings_reach_every_kind_of_client():
    settings = load_settings(
        kafka_bootstrap="b1:9093,b2:9093",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="shop",
        kafka_sasl_password="pw",
    )
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert config["security.protocol"] == "SASL_PLAINTEXT" and config["sasl.username"] == "shop"
        assert config["sasl.password"] == "pw" and config["sasl.mechanisms"] == "SCRAM-SHA-256"
    urls, credentials = faust_broker(settings)
    assert urls == ["kafka://b1:9093", "kafka://b2:9093"]
    assert isinstance(credentials, faust.SASLCredentials) and credentials.username == "shop"
    assert "pw" not in repr(settings)
    _, none = faust_broker(load_settings())
    assert none is None and "security.protocol" not in producer_config(load_settings())
    _, tls = faust_broker(load_settings(kafka_security_protocol="SSL"))
    assert isinstance(tls, faust.SSLCredentials)


def test_groups_carry_the_prefix():
    assert load_settings(topic_prefix="shop-a.").group("shelfsight-embedder") == "shop-a.shelfsight-embedder"


def test_topics_carry_min_insync_replicas():
    specs = topic_specs(load_settings(topic_min_insync_replicas=2, topic_replication_factor=3))
    assert specs and all(spec.config["min.insync.replicas"] == "2" for spec in specs)
    assert all("min.insync.replicas" not in spec.config for spec in topic_specs(load_settings()))


@pytest.mark.kafka
def test_more_replicas_than_brokers_is_one_clear_line(broker):
    settings = broker.model_copy(update={"topic_prefix": f"{broker.topic_prefix}{uuid.uuid4().hex[:6]}.", "topic_replication_factor": 3})
    with pytest.raises(UserError, match=r"cannot hold 3 replicas .* lower SHELFSIGHT_TOPIC_REPLICATION_FACTOR"):
        create_topics(settings)
    with pytest.raises(UserError, match="MIN_INSYNC_REPLICAS \\(2\\) is more than"):
        create_topics(settings.model_copy(update={"topic_replication_factor": 1, "topic_min_insync_replicas": 2}))
