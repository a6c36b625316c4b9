"""Clicks that arrive before their product, against a real redis-server: parked, applied once
the product is indexed, dead-lettered after waiting too long, bounded in number."""

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis

from models.ranking.learners import Learners
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from state.keys import Keys
from tests.cleanup import delete_prefixed

pytestmark = pytest.mark.redis
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TOPIC = "clicks"
PARAMS = ClickParams(park_s=60.0, park_max=3)


def _click(offset: int, product: str, user: str = "u1") -> RawMessage:
    body = {
        "event_id": f"e{offset}",
        "user_id": user,
        "product_id": product,
        "kind": "click",
        "occurred_at": (NOW + timedelta(seconds=offset)).isoformat(),
        "session_id": "s1",
    }
    return RawMessage(user.encode(), json.dumps(body).encode(), 0, offset, TOPIC)


class World:
    def __init__(self, settings, redis_client) -> None:
        self.keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(settings.redis_url)
        self.state = ProfileState(self.client, self.keys, PARAMS)
        self.r = redis_client
        self.now = NOW.timestamp() + 1000
        self.letters: list[tuple[RawMessage, str]] = []
        self.add("p1")

    def handler(self) -> ClickHandler:
        return ClickHandler(
            self.state, Learners(), PARAMS, lambda m, reason: self.letters.append((m, reason)), clock=lambda: self.now, item_wait_s=0
        )

    def add(self, product: str) -> None:
        self.run(self.state.put_item(product, np.eye(4)[1].tolist(), "c", 10.0, True))

    def run(self, coroutine):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coroutine)

    def clicks(self) -> int:
        profile = self.run(self.state.profile("u1"))
        return 0 if profile is None else profile.counts.get("click", 0)

    def parked(self) -> int:
        return self.r.zcard(self.keys.parked(TOPIC, 0))


@pytest.fixture
def world(settings, redis_client):
    w = World(settings, redis_client)
    yield w
    w.run(w.client.aclose())
    w.loop.close()
    delete_prefixed(redis_client, w.keys.prefix)


def test_a_click_before_its_product_waits_and_counts_once_the_product_arrives(world):
    h = world.handler()
    result = world.run(h.handle([_click(0, "p1"), _click(1, "p9")]))
    assert (result.applied, result.parked, world.letters) == (1, 1, [])
    assert world.clicks() == 1 and world.parked() == 1
    assert world.run(h.retry_parked()).unparked == 0, "still unknown: it keeps waiting"
    world.add("p9")
    assert world.run(h.retry_parked()).unparked == 1
    assert world.clicks() == 2 and world.parked() == 0
    assert world.run(h.retry_parked()).applied == 0, "applied once"
    assert world.run(h.parked_count()) == 0


def test_the_next_batch_on_the_partition_takes_parked_clicks_along(world):
    h = world.handler()
    world.run(h.handle([_click(0, "p9")]))
    world.add("p9")
    result = world.run(h.handle([_click(1, "p1")]))
    assert (result.applied, result.unparked) == (2, 1)
    assert world.clicks() == 2


def test_a_click_whose_product_never_comes_is_dead_lettered_after_the_wait(world):
    h = world.handler()
    world.run(h.handle([_click(0, "p9")]))
    world.now += 30
    world.run(h.retry_parked())
    assert world.letters == [] and world.parked() == 1
    world.now += 31
    world.run(h.retry_parked())
    assert world.parked() == 0
    assert [reason for _, reason in world.letters] == ["unknown product p9: not indexed within 60 s"]
    assert world.letters[0][0].key == b"u1"


def test_parking_is_bounded(world):
    h = world.handler()
    result = world.run(h.handle([_click(n, f"p{10 + n}") for n in range(5)]))
    assert (result.parked, len(result.refused)) == (3, 2)
    assert all("3 clicks already wait" in reason for _, reason in world.letters)
    assert world.parked() == 3


def test_two_workers_retrying_the_same_parked_click_apply_it_once(world):
    first, second = world.handler(), world.handler()
    world.run(first.handle([_click(0, "p9")]))
    second.partitions |= first.partitions
    world.add("p9")
    results = []
    epoch = world.state.current_epoch

    async def meanwhile(*args, **kwargs):  # second has read the parked click and the shopper …
        world.state.current_epoch = epoch
        results.append(await first.retry_parked())  # … when first applies it
        return await epoch(*args, **kwargs)

    world.state.current_epoch = meanwhile
    late = world.run(second.retry_parked())
    assert results[0].unparked == 1 and late.unparked == 0 and late.conflicts == 0
    assert world.clicks() == 1


def test_the_parked_clicks_timer_and_a_batch_never_overwrite_each_other(world):
    h = world.handler()
    world.run(h.handle([_click(0, "p9")]))  # parked
    epoch = world.state.current_epoch

    async def meanwhile(*args, **kwargs):  # the batch has read u1's profile (and p9 as unknown) …
        world.state.current_epoch = epoch
        await world.state.put_item("p9", [0.0, 1.0, 0.0, 0.0], "c", 10.0, True)
        timer = await h.retry_parked()  # … when the timer applies the parked click to the same profile
        assert timer.unparked == 1
        return await epoch(*args, **kwargs)

    world.state.current_epoch = meanwhile
    result = world.run(h.handle([_click(1, "p1")]))
    assert result.conflicts >= 1, "the batch's write must be refused and recomputed"
    assert world.clicks() == 2, "neither click lost to the other's profile write"
