"""Partition positions in Redis against a real broker and redis-server: redeliveries skipped,
gaps read back from Kafka, concurrent writers fenced, recreated topics noticed."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis

from models.ranking.learners import Learners
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.bus.tail import end_offsets
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.positions import KafkaRangeReader, Position
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from services.profiles.writes import WriteBatch
from state.keys import Keys
from tests.cleanup import delete_prefixed

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
NOW = datetime.now(UTC) - timedelta(hours=1)
PARAMS = ClickParams(replay_batch=7)  # small, so a gap takes several reads


def _body(i: int, user: str) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{i}-{uuid.uuid4().hex[:6]}",
            "user_id": user,
            "product_id": f"p{i % 4}",
            "kind": "click",
            "occurred_at": (NOW + timedelta(seconds=i)).isoformat(),
            "session_id": f"s{i // 10}",
        }
    ).encode()


@pytest.fixture
def world(kafka, redis_client):
    """30 clicks of one shopper in the real clicks topic, read back with their offsets."""
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(kafka.redis_url)
    state = ProfileState(client, keys, PARAMS)
    for i in range(4):
        loop.run_until_complete(state.put_item(f"p{i}", np.eye(4)[i].tolist(), "c", 10.0, True))
    topic = kafka.topic("clicks")
    producer = Producer(producer_config(kafka))
    for i in range(30):
        producer.client.produce(topic, key=b"u1", value=_body(i, "u1"))
    assert producer.flush(30) == 0
    reader = KafkaRangeReader(consumer_config(kafka, group_id="unused"))
    messages = []
    for partition, end in end_offsets(kafka, topic).items():
        if end:  # an empty partition has nothing to read: waiting for its end costs a fetch timeout
            messages += loop.run_until_complete(reader.read(topic, partition, 0, end, 1000))
    assert len(messages) == 30 and len({m.partition for m in messages}) == 1

    def handler() -> ClickHandler:
        return ClickHandler(
            state, Learners(), PARAMS, lambda m, r: None, clock=lambda: NOW.timestamp() + 3600, item_wait_s=0, reader=reader
        )

    yield loop, state, handler, messages, keys, redis_client
    reader.close()
    loop.run_until_complete(client.aclose())
    loop.close()
    delete_prefixed(redis_client, keys.prefix)


def _clicks(loop, state) -> int:
    return loop.run_until_complete(state.profile("u1")).counts.get("click", 0)


def test_redelivered_offsets_are_skipped_even_with_new_event_ids(world):
    loop, state, handler, messages, keys, r = world
    h = handler()
    loop.run_until_complete(h.handle(messages[:10]))
    # the same offsets again, as Kafka redelivers them after a crash: skipped by position
    relabelled = [RawMessage(m.key, _body(n, "u1"), m.partition, m.offset, m.topic) for n, m in enumerate(messages[5:15])]
    result = loop.run_until_complete(h.handle(relabelled))
    assert (result.applied, result.duplicates) == (5, 5)
    assert _clicks(loop, state) == 15
    partition = messages[0].partition
    stored = Position.parse(r.hget(keys.positions(messages[0].topic), str(partition)))
    assert stored.offset == messages[14].offset + 1 and stored.writes == 2


def test_a_gap_before_the_batch_is_read_back_from_kafka(world):
    loop, state, handler, messages, keys, r = world
    h = handler()
    loop.run_until_complete(h.handle(messages[:10]))
    # offsets 10..19 were committed to Kafka but their writes are gone (Redis lost its last second)
    result = loop.run_until_complete(h.handle(messages[20:]))
    assert (result.replayed, result.applied) == (10, 20)
    assert _clicks(loop, state) == 30
    recent = [x.decode() for x in r.lrange(keys.recent("u1"), 0, 29)]
    assert recent[:4] == ["p1", "p0", "p3", "p2"]  # applied in offset order: the newest is event 29 (p1)


def test_concurrent_writers_on_one_partition_count_each_event_once(world):
    loop, state, handler, messages, _keys, _r = world
    first, second = handler(), handler()
    loop.run_until_complete(first.handle(messages[:5]))

    async def both():  # two workers that both think they own the partition, as during a rebalance
        # Two connections open first: otherwise the second worker's connection handshake can take
        # longer than the first worker's whole batch, and the second reads the position afterwards.
        await asyncio.gather(state.redis.ping(), state.redis.ping())
        return await asyncio.gather(first.handle(messages[5:20]), second.handle(messages[10:30]))

    a, b = loop.run_until_complete(both())
    assert _clicks(loop, state) == 30
    assert a.applied + b.applied == 25, "each event written by exactly one of them"
    assert a.conflicts + b.conflicts >= 1, "both read the same position first: one write must have been refused"


def test_a_position_beyond_the_partition_end_is_forgotten(world):
    loop, state, handler, messages, keys, r = world
    r.hset(keys.positions(messages[0].topic), str(messages[0].partition), "10000/3")  # from a deleted topic
    result = loop.run_until_complete(handler().handle(messages[:10]))
    assert result.applied == 10 and _clicks(loop, state) == 10


def test_guarded_write_applies_only_while_the_guard_holds(world):
    loop, state, _handler, _messages, keys, r = world
    batch = WriteBatch()
    batch.call("SET", f"{keys.prefix}x", 1)
    batch.guard(f"{keys.prefix}pos", "0", None, "5/1")
    assert loop.run_until_complete(batch.execute(state.redis, keys.routing)) is True
    stale = WriteBatch()
    stale.call("SET", f"{keys.prefix}x", 2)
    stale.guard(f"{keys.prefix}pos", "0", None, "9/1")  # still thinks nothing was applied
    assert loop.run_until_complete(stale.execute(state.redis, keys.routing)) is False
    assert r.get(f"{keys.prefix}x") == b"1" and r.hget(f"{keys.prefix}pos", "0") == b"5/1"
