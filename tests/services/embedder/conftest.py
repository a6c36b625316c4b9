"""Running the embedder against the real broker and an embedded Qdrant, and waiting for it."""

import json
import threading
from collections.abc import Iterator

import pytest

from schemas.topics import PRODUCTS_LISTED
from services.bus.config import producer_config
from services.bus.consume import wait_caught_up
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
            "embedder_decode_threads": 1,  # the smallest pool: the embedder must not deadlock on it
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


def wait_committed(settings, timeout: float = 120.0) -> None:
    wait_caught_up(settings, settings.topic(PRODUCTS_LISTED.name), settings.group(GROUP_ID), timeout)


def run_until_committed(settings):
    """An in-process embedder on ``settings`` until it has committed everything listed; returns it stopped."""
    from services.embedder.service import build_embedder

    embedder = build_embedder(settings)
    stop = threading.Event()
    thread = threading.Thread(target=embedder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_committed(settings)
    finally:
        stop.set()
        thread.join(30)
    return embedder


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
