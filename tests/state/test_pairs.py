"""The pair sets' bounds (state/pairs.py), run by the worker's write script on a real redis-server."""

import uuid
from collections.abc import Iterator

import pytest

from services.profiles.writes import WriteBatch
from state.keys import Keys
from tests.cleanup import delete_prefixed
from tests.write_batches import execute

pytestmark = pytest.mark.redis


@pytest.fixture
def keys(redis_client) -> Iterator[Keys]:
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    yield keys
    delete_prefixed(redis_client, keys.prefix)


def _grow(settings, keys: Keys, sets: dict[str, dict[str, float]], cap: int, at: float, limit: int = 10**9, ttl: float = 1e9) -> None:
    """One write growing ``sets`` (item → member → amount), then the bound, as the worker writes them."""
    batch = WriteBatch()
    for item, members in sets.items():
        batch.pairs(keys.neighbours(item), keys.pair_sets, at, cap, members)
    batch.pairs_bound(keys.pair_count, keys.pair_sets, limit, at - ttl)
    assert execute(settings.redis_url, batch, keys.routing)


def _set(r, keys: Keys, item: str) -> dict[str, float]:
    return {m.decode(): s for m, s in r.zrange(keys.neighbours(item), 0, -1, withscores=True)}


def test_a_set_grows_by_summed_amounts_to_its_cap_and_is_counted(settings, redis_client, keys):
    _grow(settings, keys, {"a": {"b": 2.0, "c": 0.9}, "b": {"a": 2.0}}, cap=3, at=100.0)
    _grow(settings, keys, {"a": {"b": 1.0, "d": 0.81}}, cap=3, at=101.0)
    assert _set(redis_client, keys, "a") == pytest.approx({"b": 3.0, "c": 0.9, "d": 0.81})
    assert int(redis_client.get(keys.pair_count)) == 4  # a: b c d, b: a
    assert redis_client.zscore(keys.pair_sets, keys.neighbours("a")) == 101.0
    assert redis_client.ttl(keys.neighbours("a")) == -1  # no expiry per set: the ledger forgets stale ones


def test_a_newcomer_to_a_full_set_takes_the_weakest_place_and_count(settings, redis_client, keys):
    _grow(settings, keys, {"a": {"b": 5.0, "c": 3.0, "d": 1.0}}, cap=3, at=100.0)
    _grow(settings, keys, {"a": {"e": 1.0}}, cap=3, at=101.0)
    assert _set(redis_client, keys, "a") == pytest.approx({"b": 5.0, "c": 3.0, "e": 2.0})  # d's 1 + e's 1
    # a pair that keeps coming climbs over the others, which a trim of the weakest would never let it do
    for at in range(102, 106):
        _grow(settings, keys, {"a": {"f": 1.0}}, cap=3, at=float(at))
    assert max(_set(redis_client, keys, "a").items(), key=lambda kv: kv[1])[0] == "f"
    assert redis_client.zcard(keys.neighbours("a")) == 3 and int(redis_client.get(keys.pair_count)) == 3


def test_a_lowered_cap_trims_the_weakest(settings, redis_client, keys):
    _grow(settings, keys, {"a": {m: float(i + 1) for i, m in enumerate("bcdefg")}}, cap=10, at=100.0)
    _grow(settings, keys, {"a": {"h": 10.0}}, cap=3, at=101.0)
    assert set(_set(redis_client, keys, "a")) <= {"e", "f", "g", "h"} and redis_client.zcard(keys.neighbours("a")) == 3
    assert int(redis_client.get(keys.pair_count)) == 3


def test_the_member_budget_drops_the_sets_that_grew_longest_ago(settings, redis_client, keys):
    for at, item in enumerate(["old", "mid", "new"]):
        _grow(settings, keys, {item: {"x": 1.0, "y": 1.0}}, cap=5, at=100.0 + at, limit=5)
    assert not redis_client.exists(keys.neighbours("old"))
    assert redis_client.exists(keys.neighbours("mid")) and redis_client.exists(keys.neighbours("new"))
    assert int(redis_client.get(keys.pair_count)) == 4
    assert [m.decode() for m in redis_client.zrange(keys.pair_sets, 0, -1)] == [keys.neighbours("mid"), keys.neighbours("new")]


def test_sets_that_stopped_growing_go_after_the_ttl(settings, redis_client, keys):
    _grow(settings, keys, {"stale": {"x": 1.0}}, cap=5, at=100.0, ttl=50.0)
    _grow(settings, keys, {"fresh": {"x": 1.0}}, cap=5, at=120.0, ttl=50.0)
    assert redis_client.exists(keys.neighbours("stale"))  # 20 s untouched, within the 50 s
    _grow(settings, keys, {"fresh": {"y": 1.0}}, cap=5, at=160.0, ttl=50.0)
    assert not redis_client.exists(keys.neighbours("stale")) and redis_client.exists(keys.neighbours("fresh"))
    assert int(redis_client.get(keys.pair_count)) == 2


def test_a_set_from_before_the_ledger_is_counted_whole_and_loses_its_expiry(settings, redis_client, keys):
    redis_client.zadd(keys.neighbours("a"), {"b": 4.0, "c": 2.0})
    redis_client.expire(keys.neighbours("a"), 3600)
    _grow(settings, keys, {"a": {"d": 1.0}}, cap=5, at=100.0)
    assert int(redis_client.get(keys.pair_count)) == 3 and redis_client.ttl(keys.neighbours("a")) == -1


def test_thousands_of_pairs_for_one_set_in_one_write(settings, redis_client, keys):
    # more than Lua's unpack takes: the script reads the pairs in place
    _grow(settings, keys, {"a": {f"m{i}": 1.0 + i % 7 for i in range(12_000)}}, cap=500, at=100.0)
    assert redis_client.zcard(keys.neighbours("a")) == 500 and int(redis_client.get(keys.pair_count)) == 500
