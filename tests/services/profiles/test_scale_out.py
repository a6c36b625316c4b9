"""Several `shelfsight profiles` workers in one group, on a 4-partition clicks topic: a third
joins mid-stream (rebalance) and one is SIGKILLed; every click still counts exactly once —
on one Redis, and on a real Redis Cluster with the state split into 4 key groups."""

import os
import signal
import socket
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
from services.recommender.learned import LearnedCache
from services.redis_clients import sync_redis
from state.keys import Keys
from tests.cleanup import delete_prefixed
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


@pytest.fixture(params=["one-redis", "redis-cluster"])
def layout(request, settings):
    """The Redis the workers share, its key layout, and the settings that name both."""
    prefix = f"scale-{uuid.uuid4().hex[:6]}:"
    if request.param == "one-redis":
        client = sync_redis(settings.redis_url)
        yield client, Keys(prefix), {}
    else:
        url = request.getfixturevalue("redis_cluster")
        client = sync_redis(url, cluster=True)
        yield (
            client,
            Keys(prefix, shards=4),
            {"SHELFSIGHT_REDIS_URL": url, "SHELFSIGHT_REDIS_CLUSTER": "true", "SHELFSIGHT_REDIS_SHARDS": "4"},
        )
    delete_prefixed(client, prefix)
    client.close()


def test_workers_joining_and_dying_mid_stream_count_every_click_once(four_partitions, layout, tmp_path):
    own = four_partitions
    redis_client, keys, redis_env = layout
    prefix = keys.prefix
    env = {**_env(own, prefix), "SHELFSIGHT_PROFILES_SESSION_TIMEOUT_S": "8", **redis_env}
    topic = _publish(own)
    group = own.group(GROUP_ID)
    log = tmp_path / "workers.log"

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "profiles"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab")
        )

    def counted() -> int:
        return counted_in_profiles(redis_client, keys)

    def registered() -> set[str]:
        return {name.decode() for name in redis_client.zrange(keys.learners_workers, 0, -1)}

    def name(worker: subprocess.Popen) -> str:
        return f"{socket.gethostname()}-{worker.pid}"  # as services.profiles.service.worker_name

    workers = [start(), start()]
    try:
        # The worker about to be killed has checkpointed what it learned (every second here):
        # what it learns after its last checkpoint is lost with it, by design (docs/profiles.md).
        _wait(lambda: counted() > 1000 and name(workers[0]) in registered(), 120, workers[0], log)
        workers.append(start())  # a third joins: the group rebalances while batches are in flight
        _wait(lambda: counted() > EVENTS // 2, 120, workers[1], log)
        os.kill(workers[0].pid, signal.SIGKILL)  # one dies mid-batch: its partitions move after the session timeout
        workers[0].wait(10)
        assert counted() < EVENTS, "the kill should land mid-stream"
        _wait(lambda: counted() == EVENTS and group_lag(own, topic, group) == 0, 240, workers[2], log)
        time.sleep(2)
        assert counted() == EVENTS, "every distinct click counted once"
        interactions = sum(score for group in keys.groups() for _, score in redis_client.zrange(group.interactions, 0, -1, withscores=True))
        assert interactions == EVENTS
        for group in keys.groups():  # every group passed over every partition to its end
            positions = {int(p): Position.parse(o).offset for p, o in redis_client.hgetall(group.positions(topic)).items()}
            assert positions == end_offsets(own, topic) and len(positions) == 4
        # The recommender serves what every worker learned, not one worker's half.
        # A learners checkpoint of each live worker (every second here) after the last click.
        finished = time.time()
        _wait(lambda: all((redis_client.zscore(keys.learners_workers, name(w)) or 0) > finished for w in workers[1:]), 60, workers[2], log)
        cache = LearnedCache(redis_client, keys, _env(own, prefix)["SHELFSIGHT_STATE_SECRET"].encode())
        cache.refresh()
        assert registered() == {name(w) for w in workers}
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
