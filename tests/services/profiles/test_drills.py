"""Crash drills with the real parts: redis-server killed mid-stream and its last writes lost; the
broker restarted mid-stream; SIGTERM while Redis is away.

The worker is the real `shelfsight profiles` process; Redis is a redis-server of the drill's
own, started, killed (SIGKILL by pid) and restarted with `shelfsight stack … redis`. Losing
"the last second" of an AOF `everysec` Redis is made certain by cutting the tail off the
append-only file before the restart, as a crash between write and fsync would.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
import redis

from schemas import ClickEvent, decode, encode
from services.bus.config import producer_config
from services.bus.consume import group_lag
from services.bus.producer import Producer
from services.bus.tail import end_offsets
from services.bus.topics import create_topics
from services.profiles.app import GROUP_ID
from services.profiles.positions import Position
from services.settings import load_settings
from services.stack import Stack
from state.keys import Keys
from state.values import decode_profile
from tests.ports import free_port
from tests.services.profiles.test_worker import NOW, _env, _item, _wait

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]
EVENTS = 12_000
USERS = 20


def _click(i: int) -> ClickEvent:
    return decode(
        ClickEvent,
        json.dumps(
            {
                "event_id": f"d{i}",
                "user_id": f"u{i % USERS}",
                "product_id": f"p{i % 16}",
                "kind": "click",
                "occurred_at": (NOW - timedelta(seconds=EVENTS - i)).isoformat(),
                "session_id": f"s{i % 7}",
            }
        ),
    )


def counted(client, keys) -> int:
    """Events counted in the shoppers' profiles, all kinds together."""
    return sum(
        sum(decode_profile(client.hgetall(keys.user(f"u{u}"))).counts.values()) for u in range(USERS) if client.exists(keys.user(f"u{u}"))
    )


def _publish(settings) -> str:
    """16 products and EVENTS distinct clicks; returns the clicks topic."""
    producer = Producer(producer_config(settings))
    for i in range(16):
        producer.send(settings.topic("products.indexed"), encode(_item(i)))
    topic = settings.topic("clicks")
    for i in range(EVENTS):
        producer.send(topic, encode(_click(i)))
    assert producer.flush(30) == 0
    return topic


def _worker(env, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services.cli", "profiles"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _stack(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "services.cli", "stack", *args, "redis"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60
    )


def _retries(log: os.PathLike) -> int:
    """How often the worker has logged meeting an unavailable Redis or broker."""
    return _log_text(log).count("unavailable; retrying")


def _log_text(log: os.PathLike, since: int = 0) -> str:
    with open(log, "rb") as raw:
        raw.seek(since)
        return raw.read().decode(errors="replace")


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left for its parent to reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _cut_aof_tail(data: os.PathLike, fraction: float) -> int:
    """Drop the newest ``fraction`` of the append-only file: writes acknowledged but never fsynced."""
    incr = sorted((d for d in (os.path.join(data, "appendonlydir"),) if os.path.isdir(d)), key=str)
    files = sorted(f for f in os.listdir(incr[0]) if f.endswith(".incr.aof"))
    path = os.path.join(incr[0], files[-1])
    size = os.path.getsize(path)
    os.truncate(path, int(size * (1 - fraction)))
    return size - int(size * (1 - fraction))


def test_redis_killed_mid_stream_and_its_last_writes_lost_loses_no_click(kafka, tmp_path):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    prefix = f"drill-{uuid.uuid4().hex[:6]}:"
    env = {**_env(kafka, prefix), "SHELFSIGHT_REDIS_URL": redis_url, "SHELFSIGHT_STATE_DIR": str(tmp_path / "stack")}
    _stack(env, "up")
    client = redis.Redis.from_url(redis_url)
    worker = None
    try:
        topic, group, log = _publish(kafka), kafka.group(GROUP_ID), tmp_path / "worker.log"
        worker = _worker(env, log)
        _wait(lambda: group_lag(kafka, topic, group) < EVENTS - 3000, 120, worker, log)

        pid = int((tmp_path / "stack" / "redis" / "redis.pid").read_text())
        met = _retries(log)
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: _gone(pid), 10, worker, log)
        cut = _cut_aof_tail(tmp_path / "stack" / "redis" / "data", fraction=0.3)
        assert cut > 0
        _wait(lambda: _retries(log) > met, 60, worker, log)  # the worker has met the dead Redis
        _stack(env, "up")

        keys = Keys(prefix)

        def counted_now() -> int:
            try:
                return counted(client, keys)
            except redis.ConnectionError:
                return -1

        _wait(lambda: counted_now() == EVENTS and group_lag(kafka, topic, group) == 0, 240, worker, log)
        assert counted_now() == EVENTS, "every distinct click counted once in the profiles"
        interactions = sum(score for _, score in client.zrange(keys.interactions, 0, -1, withscores=True))
        assert interactions == EVENTS, "… and once in the per-item statistics"
        positions = {int(p): Position.parse(o).offset for p, o in client.hgetall(keys.positions(topic)).items()}
        assert positions == {p: end for p, end in end_offsets(kafka, topic).items() if end}
        assert "gap filled from kafka" in log.read_text(), "the drill should have lost applied writes"
        assert worker.poll() is None, "no manual restart: the worker rode out the outage"
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        client.close()
        _stack(env, "down")


@pytest.fixture
def own_stack(tmp_path, settings):
    """A broker and a redis-server of the drill's own: stopping them disturbs no other test."""
    own = load_settings(
        state_dir=tmp_path / "stack",
        cache_dir=settings.cache_dir,
        topic_prefix=f"drill-{uuid.uuid4().hex[:6]}.",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    env = {
        **_env(own, f"drill-{uuid.uuid4().hex[:6]}:"),
        "SHELFSIGHT_REDIS_URL": own.redis_url,
        "SHELFSIGHT_STATE_DIR": str(own.stack_dir),
        "SHELFSIGHT_KAFKA_BOOTSTRAP": own.kafka_bootstrap,
        "SHELFSIGHT_KAFKA_CONTROLLER_PORT": str(own.kafka_controller_port),
    }
    Stack.from_settings(own).up()
    create_topics(own)
    yield own, env
    Stack.from_settings(own).down()


def test_broker_restarted_mid_stream_then_sigterm_during_a_redis_outage(own_stack, tmp_path):
    own, env = own_stack
    keys = Keys(env["SHELFSIGHT_REDIS_PREFIX"])
    client = redis.Redis.from_url(own.redis_url)
    topic, log = _publish(own), tmp_path / "worker.log"
    worker = _worker({**env, "SHELFSIGHT_PROFILES_BATCH_SIZE": "10"}, log)  # small batches: the stop lands mid-stream
    try:
        _wait(
            lambda: counted(client, keys) > 1000, 120, worker, log
        )  # by counts: a fresh broker's coordinator may not answer lag queries yet
        seen = os.path.getsize(log)
        subprocess.run(
            [sys.executable, "-m", "services.cli", "stack", "down", "kafka"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=180
        )
        assert counted(client, keys) < EVENTS, "the broker should go away mid-stream"
        _wait(lambda: "Unable connect to" in _log_text(log, since=seen), 60, worker, log)  # the worker met it
        subprocess.run(
            [sys.executable, "-m", "services.cli", "stack", "up", "kafka"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=180
        )

        _wait(lambda: counted(client, keys) == EVENTS, 240, worker, log)
        assert sum(s for _, s in client.zrange(keys.interactions, 0, -1, withscores=True)) == EVENTS
        positions = {int(p): Position.parse(o).offset for p, o in client.hgetall(keys.positions(topic)).items()}
        assert positions == {p: end for p, end in end_offsets(own, topic).items() if end}

        met = _retries(log)
        _stack(env, "down")  # Redis away: the worker retries; SIGTERM must still stop it
        _wait(lambda: _retries(log) > met, 60, worker, log)
        worker.send_signal(signal.SIGTERM)
        started = time.monotonic()
        worker.wait(45)
        print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        client.close()
