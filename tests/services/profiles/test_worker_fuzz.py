"""Fuzzing `shelfsight profiles` on the real broker and redis-server: whatever lands on `clicks`,
`products.indexed` or `recommendations.served`, the worker applies it or dead-letters it,
commits, and stays up."""

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import (
    ClickEvent,
    ContractError,
    ProductIndexed,
    RecommendationServed,
    decode,
    encode,
)
from schemas.topics import CLICKS, PRODUCTS_INDEXED, RECOMMENDATIONS_SERVED
from services.bus.consume import group_lag
from services.profiles.app import GROUP_ID
from tests.hostile import FUZZ, KEYS, dead_lettered, mutations, produce

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

NOW = datetime.now(UTC).isoformat()
ITEM = {
    "product_id": "p1",
    "title": "Bag",
    "price": 10.0,
    "currency": "EUR",
    "in_stock": True,
    "category": "Bag",
    "confidence": 0.9,
    "vectors": {"fused": [1.0, 0.0, 0.0, 0.0]},
    "model_version": "test",
    "listed_at": NOW,
    "indexed_at": NOW,
}
CLICK = {
    "event_id": "e1",
    "user_id": "u1",
    "product_id": "p1",
    "kind": "click",
    "occurred_at": NOW,
    "session_id": "s1",
    "context": {"widget": "recs", "position": 0, "request_id": "r1"},
}
SERVED = json.loads(
    encode(
        RecommendationServed(
            request_id="r1",
            user_id="u1",
            served_at=datetime.now(UTC),
            shown=1,
            products=["p1", "p2"],
            feature_names=["a"],
            features=np.zeros(2, dtype="<f4").tobytes(),
            ranker="prior",
        )
    ).value
)
TOPICS = {CLICKS: (ClickEvent, CLICK), PRODUCTS_INDEXED: (ProductIndexed, ITEM), RECOMMENDATIONS_SERVED: (RecommendationServed, SERVED)}


@pytest.fixture
def worker(kafka, tmp_path):
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": kafka.topic_prefix,
        "SHELFSIGHT_REDIS_PREFIX": f"fuzz-{uuid.uuid4().hex[:8]}:",
        "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
        "SHELFSIGHT_STATE_SECRET": "test-state-secret-0001",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "profiles"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab")
    )
    yield process, log
    process.terminate()
    process.wait(60)


def _caught_up(kafka, process, log, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        if all(group_lag(kafka, kafka.topic(t.name), kafka.group(GROUP_ID)) == 0 for t in TOPICS):
            return
        time.sleep(0.5)
    raise AssertionError(f"the worker did not commit everything: {log.read_text()[-2000:]}")


def _messages(topic, valid):  # type: ignore[no-untyped-def]
    if topic.compacted:  # the broker takes no message without a key there; a null value deletes one
        return st.tuples(st.binary(min_size=1, max_size=40), st.none() | mutations(valid))
    return st.tuples(KEYS, mutations(valid))


@FUZZ
@given(batches=st.tuples(*(st.lists(_messages(topic, valid), min_size=5, max_size=12) for topic, (_, valid) in TOPICS.items())))
def test_no_message_stops_the_worker_and_every_refusal_is_dead_lettered(kafka, worker, batches):
    process, log = worker
    sent = {topic: produce(kafka, kafka.topic(topic.name), batch) for topic, batch in zip(TOPICS, batches, strict=True)}
    _caught_up(kafka, process, log)
    for topic, messages in sent.items():
        contract, _ = TOPICS[topic]
        letters = dead_lettered(kafka, kafka.topic(topic.dlq), kafka.topic(topic.name))
        for message in messages:
            if topic is PRODUCTS_INDEXED and message.value is None:
                continue
            try:
                decode(contract, message.value)
            except ContractError:
                assert (message.partition, message.offset) in letters, (topic.name, message.value[:200])
    assert process.poll() is None
