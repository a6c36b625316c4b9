"""`shelfsight profiles` against the real broker and redis-server, killed and restarted mid-stream."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from schemas import ClickEvent, DeadLetter, ProductIndexed, decode, encode
from services.bus.config import producer_config
from services.bus.consume import group_lag, read_all
from services.bus.producer import Producer
from services.profiles.app import GROUP_ID
from state.experiments import totals
from state.keys import Keys
from state.values import decode_profile
from tests.cleanup import delete_prefixed

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
NOW = datetime.now(UTC)


def _item(i: int) -> ProductIndexed:
    vector = np.eye(8, dtype=np.float32)[i % 8].tolist()
    return decode(
        ProductIndexed,
        json.dumps(
            {
                "product_id": f"p{i}",
                "title": f"Product {i}",
                "price": 10.0 + i,
                "currency": "EUR",
                "in_stock": True,
                "category": f"c{i % 3}",
                "confidence": 0.9,
                "vectors": {"fused": vector},
                "model_version": "test",
                "listed_at": NOW.isoformat(),
                "indexed_at": NOW.isoformat(),
            }
        ),
    )


def _at(i: int) -> datetime:
    return NOW - timedelta(seconds=6000 - i)


def _click(i: int, users: int = 20) -> ClickEvent:
    body: dict[str, object] = {
        "event_id": f"e{i}",
        "user_id": f"u{i % users}",
        "product_id": f"p{i % 16}",
        "kind": "click",
        "occurred_at": _at(i).isoformat(),
        "session_id": f"s{i % 7}",
    }
    if i in CREDITED:
        body["context"] = {"widget": "drill", "request_id": f"r{i}"}  # chosen from an experiment's list
    return decode(ClickEvent, json.dumps(body))


CREDITED = {101 * k for k in range(60)}  # spread over the stream, so some fall around the kill; three per shopper


def _experiment_lists(redis_client, keys: Keys) -> None:
    """The list each credited click was chosen from, as `serve` keeps it: one per click, tagged."""
    from schemas import RecommendationServed
    from schemas.experiments import ExperimentTag
    from state.served import remember

    tag = ExperimentTag(experiment_id="drill", variant="b")
    for i in sorted(CREDITED):
        served = RecommendationServed(
            request_id=f"r{i}",
            user_id=f"u{i % 20}",
            served_at=_at(i) - timedelta(seconds=60),
            shown=2,
            products=[f"p{i % 16}", f"p{(i + 1) % 16}"],
            feature_names=["x"],
            features=np.zeros(2, dtype="<f4").tobytes(),
            ranker="prior",
            experiment=tag,
        )
        remember(redis_client, keys, served.user_id, encode(served).value, request_id=served.request_id, experiment=tag)


def _env(settings, prefix):
    return {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": settings.topic_prefix,
        "SHELFSIGHT_REDIS_PREFIX": prefix,
        "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
        "SHELFSIGHT_PROFILES_BATCH_SIZE": "50",
        "SHELFSIGHT_STATE_SECRET": "test-state-secret-0001",
        "SHELFSIGHT_LEARNERS_CHECKPOINT_S": "1",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
        "SHELFSIGHT_PROFILES_PARK_S": "4",
        "SHELFSIGHT_PROFILES_PARK_RETRY_S": "1",
        # a killed worker's partitions come back to its restarted self after this, not 30 s
        "SHELFSIGHT_PROFILES_SESSION_TIMEOUT_S": "8",
    }


def _wait(predicate, timeout, process, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"timed out; worker log: {log.read_text()[-2000:]}")


def test_kill_and_restart_counts_every_distinct_valid_event_once(kafka, redis_client, tmp_path):
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    producer = Producer(producer_config(kafka))
    for i in range(16):
        producer.send(kafka.topic("products.indexed"), encode(_item(i)))
    clicks = [_click(i) for i in range(6000)]
    bad = [b"{not json", json.dumps({"event_id": "x1", "user_id": "u1"}).encode()]
    unknown = decode(ClickEvent, json.dumps({**json.loads(_click(1).model_dump_json()), "event_id": "ghost", "product_id": "nope"}))
    early = decode(ClickEvent, json.dumps({**json.loads(_click(2).model_dump_json()), "event_id": "early", "product_id": "p-late"}))
    topic = kafka.topic("clicks")
    producer.send(topic, encode(early))  # its product is indexed only after the restart: it waits, parked
    for c in clicks[:3000]:
        producer.send(topic, encode(c))
    for raw in bad:
        producer.client.produce(topic, key=b"u1", value=raw)
    producer.send(topic, encode(unknown))
    for c in clicks[3000:] + clicks[:200]:  # the last 200 are redeliveries of earlier events
        producer.send(topic, encode(c))
    assert producer.flush(30) == 0
    total = 6000 + len(bad) + 1 + 200 + 1
    _experiment_lists(redis_client, keys)

    command = [sys.executable, "-m", "services.cli", "profiles"]
    group = kafka.group(GROUP_ID)
    log = tmp_path / "worker.log"
    first = subprocess.Popen(command, env=_env(kafka, prefix), stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    try:
        _wait(lambda: group_lag(kafka, topic, group) < total - 300, 120, first, log)
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    assert group_lag(kafka, topic, group) > 0, "the kill should land mid-stream"

    first_runs = {w.decode() for w in redis_client.zrange(keys.learners_workers, 0, -1)}
    second = subprocess.Popen(command, env=_env(kafka, prefix), stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    try:
        late = _item(3).model_copy(update={"product_id": "p-late"})
        producer.send(kafka.topic("products.indexed"), encode(late))
        assert producer.flush(30) == 0
        _wait(
            lambda: (
                group_lag(kafka, topic, group) == 0
                and not redis_client.exists(keys.parked(topic, 0))
                and not any(redis_client.exists(keys.parked(topic, p)) for p in range(8))
            ),
            180,
            second,
            log,
        )
        _wait(lambda: {w.decode() for w in redis_client.zrange(keys.learners_workers, 0, -1)} - first_runs, 30, second, log)
    finally:
        second.send_signal(signal.SIGTERM)
        stopped = second.wait(60)
    assert stopped == 0, "SIGTERM is a clean stop"

    try:
        counted = 0
        for u in range(20):
            profile = decode_profile(redis_client.hgetall(keys.user(f"u{u}")))
            counted += sum(profile.counts.values())
        assert counted == 6001, "6000 distinct clicks, and the one that came before its product"
        summed = totals(redis_client, keys, "drill")
        assert (summed["b|shoppers"], summed["b|lists"], summed["b|clicks"]) == (20, 60, 60), "each list and its click credited once"
        assert summed["b|clicks|sq"] == 20 * 3**2 and summed["b|clicks|x"] == 20 * 3 * 3, "three lists and three clicks a shopper"
        workers = [w.decode() for w in redis_client.zrange(keys.learners_workers, 0, -1)]
        assert workers and all(redis_client.exists(keys.learners(w)) for w in workers), (
            "each run of the worker checkpoints its learners under its own name"
        )
        assert "main" not in workers
        letters = read_all(kafka, kafka.topic("clicks.dlq"), expected=10, timeout=3)
        reasons = [m.headers["shelfsight-reason"] for m in letters]
        assert len([r for r in reasons if "unknown product nope: not indexed within 4 s" in r]) >= 1
        assert any("Invalid JSON" in r for r in reasons) and any("Field required" in r for r in reasons)
        # a dead letter may be sent again after the kill (at least once); what was refused is three events
        assert len({DeadLetter.model_validate_json(m.value).original for m in letters}) == 3
    finally:
        delete_prefixed(redis_client, prefix)
