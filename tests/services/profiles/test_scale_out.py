"""Several `shelfsight profiles` workers in one group, on a 4-partition clicks topic: a third
joins mid-stream (rebalance) and one is SIGKILLed; every click still counts exactly once."""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from services.bus.consume import group_lag
from services.bus.tail import end_offsets
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.profiles.app import GROUP_ID
from services.profiles.positions import Position
from services.profiles.state import Keys
from services.recommender.learned import LearnedCache
from tests.services.profiles.test_drills import EVENTS, USERS, _publish
from tests.services.profiles.test_drills import counted as counted_in_profiles
from tests.services.profiles.test_worker import _env, _wait

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def four_partitions(broker):
    own = broker.model_copy(update={"topic_prefix": f"{broker.topic_prefix}{uuid.uuid4().hex[:6]}.", "topic_partitions": 4})
    create_topics(own)
    yield own
    delete_topics(own, [spec.name for spec in topic_specs(own)])


def test_workers_joining_and_dying_mid_stream_count_every_click_once(four_partitions, redis_client, tmp_path):
    own = four_partitions
    prefix = f"scale-{uuid.uuid4().hex[:6]}:"
    keys = Keys(prefix)
    env = {**_env(own, prefix), "SHELFSIGHT_PROFILES_SESSION_TIMEOUT_S": "8"}
    topic = _publish(own)
    group = own.group(GROUP_ID)
    log = tmp_path / "workers.log"

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "services.cli", "profiles"], env=env,
                                stdout=subprocess.DEVNULL, stderr=log.open("ab"))

    def counted() -> int:
        return counted_in_profiles(redis_client, keys)

    workers = [start(), start()]
    try:
        _wait(lambda: counted() > 1000, 120, workers[0], log)
        workers.append(start())  # a third joins: the group rebalances while batches are in flight
        _wait(lambda: counted() > EVENTS // 2, 120, workers[1], log)
        os.kill(workers[0].pid, signal.SIGKILL)  # one dies mid-batch: its partitions move after the session timeout
        workers[0].wait(10)
        assert counted() < EVENTS, "the kill should land mid-stream"
        _wait(lambda: counted() == EVENTS and group_lag(own, topic, group) == 0, 240, workers[2], log)
        time.sleep(2)
        assert counted() == EVENTS, "every distinct click counted once"
        interactions = sum(score for _, score in redis_client.zrange(keys.interactions, 0, -1, withscores=True))
        assert interactions == EVENTS
        positions = {int(p): Position.parse(o).offset for p, o in redis_client.hgetall(keys.positions(topic)).items()}
        assert positions == end_offsets(own, topic) and len(positions) == 4
        # The recommender serves what every worker learned, not one worker's half.
        time.sleep(2)  # a learners checkpoint of each live worker (every second here)
        cache = LearnedCache(redis_client, keys, b"test-secret")
        cache.refresh()
        assert redis_client.zcard(keys.learners_workers) == 3
        assert all(cache.current.affinity.knows(f"u{u}") for u in range(USERS))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        for key in redis_client.scan_iter(f"{prefix}*"):
            redis_client.delete(key)
