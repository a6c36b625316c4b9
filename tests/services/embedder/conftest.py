"""Running the embedder against the real broker and an embedded Qdrant, and waiting for it."""

import json
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.topics import PRODUCTS_LISTED
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.embedder.worker import GROUP_ID


@pytest.fixture
def embedder_settings(kafka, small_checkpoint, tmp_path):
    return kafka.model_copy(
        update={
            "model_dir": small_checkpoint,
            "qdrant_path": tmp_path / "qdrant",
            "embedder_metrics_port": 0,
            "embedder_max_wait_ms": 50,
            "device": "cpu",
        }
    )


def encode_json_line(line: dict | str | bytes) -> tuple[bytes | None, bytes]:
    if isinstance(line, dict):
        return (str(line["product_id"]).encode() if "product_id" in line else None), json.dumps(line).encode()
    return None, line.encode() if isinstance(line, str) else line


def publish_lines(settings, lines: list[dict | str | bytes]) -> None:
    """Raw values onto products.listed, keyed by product_id where there is one (no validation)."""
    producer = Producer(producer_config(settings))
    for line in lines:
        key, value = encode_json_line(line)
        producer.client.produce(settings.topic(PRODUCTS_LISTED.name), key=key, value=value)
    assert producer.flush(30) == 0


def committed_all(settings, topic: str) -> bool:
    consumer = Consumer(consumer_config(settings, GROUP_ID))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
        return all(ends[p] == 0 or committed.get(p, -1) >= ends[p] for p in partitions)
    finally:
        consumer.close()


def wait_committed(settings, timeout: float = 120.0) -> None:
    topic = settings.topic(PRODUCTS_LISTED.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed_all(settings, topic):
            return
        time.sleep(0.5)
    raise AssertionError(f"the embedder did not commit everything on {topic} within {timeout} s")


@pytest.fixture
def running_embedder(embedder_settings) -> Iterator:
    """Starts an in-process embedder; yields a function that waits for it and stops it."""
    from services.embedder.service import build_embedder

    embedder = build_embedder(embedder_settings)
    stop = threading.Event()
    thread = threading.Thread(target=embedder.run, args=(stop,), daemon=True)
    thread.start()

    def finish(timeout: float = 120.0):
        wait_committed(embedder_settings, timeout)
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        return embedder

    yield finish
    stop.set()
    thread.join(30)
