"""Click batches against a real redis-server: joins, dedupe, caps, TTLs, dead letters."""

import asyncio
import hashlib
import json
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis

from models.ranking.learners import Learners
from services.profiles.app import STAGING_TTL_S, checkpoint_learners
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from state.checkpoints import CHECKPOINT_KEEP_S, CheckpointRejected, dump, load
from state.keys import Keys
from tests.cleanup import delete_prefixed

pytestmark = pytest.mark.redis
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SMALL = ClickParams(half_life_s=3600.0, recent_items=5, neighbours=3, trending=4, session_items=4)


def _click(i, user="u1", product="p1", kind="click", session="s1", at=None, event_id=None):
    body = {
        "event_id": event_id or f"e{i}",
        "user_id": user,
        "product_id": product,
        "kind": kind,
        "occurred_at": (at or NOW + timedelta(seconds=i)).isoformat(),
        "session_id": session,
    }
    return RawMessage(user.encode(), json.dumps(body).encode(), 0, i)


@pytest.fixture
def setup(settings, redis_client):
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    letters = []
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url)
    state = ProfileState(client, keys, SMALL)
    handler = ClickHandler(
        state, Learners(), SMALL, lambda m, reason: letters.append((m, reason)), clock=lambda: NOW.timestamp() + 1000, item_wait_s=0.05
    )
    vectors = {f"p{i}": np.eye(4, dtype=np.float32)[i % 4] for i in range(12)}
    for pid, vec in vectors.items():
        loop.run_until_complete(state.put_item(pid, vec.tolist(), f"cat{int(pid[1:]) % 2}", 10.0 + int(pid[1:]), True))
    yield loop, state, handler, letters, keys, redis_client
    loop.run_until_complete(client.aclose())
    loop.close()
    delete_prefixed(redis_client, keys.prefix)


def test_profile_follows_clicks_and_items_join(setup):
    loop, state, handler, letters, keys, r = setup
    result = loop.run_until_complete(
        handler.handle([_click(0, product="p1"), _click(1, product="p1", kind="purchase"), _click(2, product="p2", kind="view")])
    )
    assert (result.applied, result.duplicates, letters) == (3, 0, [])
    profile = loop.run_until_complete(state.profile("u1"))
    assert int(np.argmax(profile.vector)) == 1  # p1 = axis 1, clicked and bought
    assert profile.counts == {"click": 1, "purchase": 1, "view": 1}
    assert [x.decode() for x in r.lrange(keys.recent("u1"), 0, -1)] == ["p2", "p1", "p1"]
    assert r.zscore(keys.purchased("u1"), "p1") is not None
    assert r.zscore(keys.neighbours("p1"), "p2") and r.zscore(keys.neighbours("p2"), "p1")
    assert r.zrevrange(keys.trending(), 0, 0) == [b"p1"]
    assert r.ttl(keys.user("u1")) > 0 and r.ttl(keys.recent("u1")) > 0 and r.ttl(keys.session("s1")) > 0


def test_redelivery_is_not_counted_twice(setup):
    loop, state, handler, _letters, keys, r = setup
    batch = [_click(i, product=f"p{i}") for i in range(4)]
    loop.run_until_complete(handler.handle(batch))
    again = loop.run_until_complete(handler.handle([*batch, _click(9, event_id="e0")]))
    assert (again.applied, again.duplicates) == (0, 5)
    assert loop.run_until_complete(state.profile("u1")).counts == {"click": 4}
    assert r.ttl(keys.seen("e0")) > 0


def test_bad_events_are_dead_lettered_with_reasons(setup):
    loop, _state, handler, letters, _keys, _r = setup
    future = NOW + timedelta(days=2)
    messages = [
        RawMessage(b"u1", b"{broken", 0, 0),
        _click(1, product="never-indexed"),
        _click(2, at=future),
        RawMessage(b"u1", json.dumps({"event_id": "x", "user_id": "u" * 500}).encode(), 0, 3),
        _click(4, product="p3"),
    ]
    result = loop.run_until_complete(handler.handle(messages))
    assert result.applied == 1
    reasons = [reason for _, reason in letters]
    assert len(reasons) == 4
    assert any("Invalid JSON" in x for x in reasons)
    assert any("unknown product never-indexed" in x for x in reasons)
    assert any("in the future" in x for x in reasons)
    assert any("user_id" in x for x in reasons)


def test_caps_hold_under_a_flood(setup):
    loop, state, handler, _letters, keys, r = setup
    flood = [_click(i, product=f"p{i % 12}", session=f"s{i % 2}") for i in range(600)]
    for start in range(0, 600, 100):
        loop.run_until_complete(handler.handle(flood[start : start + 100]))
    assert r.llen(keys.recent("u1")) == SMALL.recent_items
    assert r.llen(keys.session("s0")) <= SMALL.session_items
    assert all(r.zcard(keys.neighbours(f"p{i}")) <= SMALL.neighbours for i in range(12))
    assert r.zcard(keys.trending()) <= SMALL.trending and r.zcard(keys.trending("cat0")) <= SMALL.trending
    assert loop.run_until_complete(state.profile("u1")).counts == {"click": 600}


def test_learner_checkpoints_round_trip_and_refuse_tampering():
    learners = Learners(seed=1, ranker_warmup=10)
    names = ("covisit", "popular")
    for i in range(200):
        learners.learn_event(f"u{i % 5}", f"p{i % 7}", "click" if i % 3 else "view", 2.0)
        learners.learn_choice(names, {"covisit": 2.0 + i % 3, "popular": 1.0}, [{"covisit": 0.0, "popular": 1.0 + i % 2}])
    blob = dump(learners, b"secret")
    restored = load(blob, b"secret")
    probe = {"covisit": 1.0, "popular": 3.0}
    assert restored.ranker.predict_one(probe) == pytest.approx(learners.ranker.predict_one(probe))
    assert restored.ranker.learned and restored.ranker.choices == 200
    assert restored.affinity("u1", "p2") == pytest.approx(learners.affinity("u1", "p2"))
    (items, gram), (restored_items, restored_gram) = learners.co_occurrence.counts(), restored.co_occurrence.counts()
    assert items == restored_items and len(items) == 7 and np.array_equal(gram, restored_gram)
    with pytest.raises(CheckpointRejected, match="signature"):
        load(blob, b"other secret")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(CheckpointRejected, match="signature"):
        load(tampered, b"secret")
    with pytest.raises(CheckpointRejected, match="not a Shelfsight"):
        load(b"\x80\x04" + blob, b"secret")


def test_the_factorisation_is_bounded_and_so_is_its_checkpoint():
    def run(learners: Learners, shoppers: int) -> Learners:
        for i in range(shoppers * 4):
            learners.learn_event(f"u{i // 4}", f"p{i % 997}", "click", 2.0)
        return learners

    def bounded() -> Learners:
        return Learners(max_shoppers=50, max_items=40, max_model_items=30)

    small, large = run(bounded(), 200), run(bounded(), 2_000)
    for learners in (small, large):
        assert len(learners.mf.u_latents) == len(learners.mf.u_biases) == len(learners.user_events) == 50
        assert len(learners.co_occurrence) == 30 and learners.co_occurrence.shoppers == 50
        assert len(learners.mf.i_latents) == len(learners.known_items()) == 40
        assert set(learners.mf.i_latents) == set(learners.known_items())
    assert "u1999" in large.mf.u_latents and "u0" not in large.mf.u_latents  # the newest are kept
    # Ten times the shoppers, about the same checkpoint.
    assert len(dump(large, b"s")) < 1.2 * len(dump(small, b"s"))
    # Restored under tighter settings, it forgets at once.
    restored = load(dump(large, b"s"), b"s")
    restored.bound(10, 5, 4)
    assert len(restored.mf.u_latents) == 10 and len(restored.known_items()) == len(restored.mf.i_latents) == 5
    assert len(restored.co_occurrence) == 4


def test_the_item_model_counts_what_shoppers_touched_not_what_they_dismissed():
    learners = Learners()
    for kind, weight in (("view", 1.0), ("click", 2.0), ("impression", 0.0), ("dismiss", -3.0)):
        learners.learn_event("u1", f"{kind}-item", kind, weight)
    assert sorted(learners.co_occurrence.counts()[0]) == ["click-item", "view-item"]


def test_a_new_feature_set_starts_the_ranker_afresh():
    learners = Learners(ranker_warmup=1)
    learners.learn_choice(("a",), {"a": 1.0}, [{"a": 0.0}])
    first = learners.ranker
    learners.learn_choice(("a",), {"a": 1.0}, [{"a": 0.0}])
    assert learners.ranker is first and first.choices == 2
    learners.learn_choice(("a", "b"), {"a": 1.0, "b": 0.0}, [{"a": 0.0, "b": 1.0}])
    assert learners.ranker is not first and learners.ranker.features == ("a", "b") and learners.ranker.choices == 1


def test_trending_epoch_moves_forward_and_keeps_the_order(setup):
    loop, state, handler, _letters, keys, r = setup
    loop.run_until_complete(handler.handle([_click(0, product="p1", kind="purchase"), _click(1, product="p2", kind="view")]))
    before = r.zrevrange(keys.trending(), 0, -1, withscores=True)
    far = NOW.timestamp() + 100 * SMALL.half_life_s
    epoch = loop.run_until_complete(state.current_epoch(far))
    assert epoch == pytest.approx(far)
    after = r.zrevrange(keys.trending(), 0, -1, withscores=True)
    assert [k for k, _ in after] == [k for k, _ in before]
    assert after[0][1] == pytest.approx(before[0][1] * 2.0 ** -((far - NOW.timestamp() - 1000) / SMALL.half_life_s), rel=1e-3)
    # Every set was rescaled, found through the registry the batch wrote, not by scanning.
    assert r.smembers(keys.trending_sets) == {keys.trending(c).encode() for c in (None, "cat0", "cat1")}
    assert r.zscore(keys.trending("cat1"), "p1") == pytest.approx(after[0][1])  # p1 is in cat1


def test_trending_sets_from_before_the_registry_are_found_once(setup):
    loop, state, _handler, _letters, keys, r = setup
    r.zadd(keys.trending("Coat"), {"old": 1e6})  # written by a version without the registry
    loop.run_until_complete(state.current_epoch(NOW.timestamp()))
    far = NOW.timestamp() + 100 * SMALL.half_life_s
    loop.run_until_complete(state.current_epoch(far))
    assert r.zscore(keys.trending("Coat"), "old") < 1
    assert r.exists(keys.trending_sets_complete)
    r.zadd(keys.trending("Hat"), {"unregistered": 1e6})  # not written by a batch: not registered, never scanned for again
    loop.run_until_complete(state.current_epoch(far + 100 * SMALL.half_life_s))
    assert r.zscore(keys.trending("Hat"), "unregistered") == 1e6


def test_profile_updates_are_announced(setup, settings):
    import redis

    loop, _state, handler, _letters, keys, _r = setup
    listener = redis.Redis.from_url(settings.redis_url).pubsub()
    listener.subscribe(keys.updates_channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"
    loop.run_until_complete(handler.handle([_click(0, user="shopper-9", product="p1")]))
    message = listener.get_message(timeout=5)
    assert message["type"] == "message" and message["data"] == b"shopper-9"
    listener.close()


def test_pair_sets_stay_within_their_member_budget_and_the_count_is_true(setup, settings):
    _loop, _state, _handler, _letters, keys, r = setup
    budget = replace(SMALL, pair_members=12)
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url)
    handler = ClickHandler(ProfileState(client, keys, budget), Learners(), budget, lambda m, reason: None, clock=lambda: NOW.timestamp())
    clicks = [_click(i, user=f"u{i % 3}", product=f"p{(i * 5) % 12}", session=f"s{i % 4}") for i in range(120)]
    try:
        for start in range(0, 120, 10):
            loop.run_until_complete(handler.handle(clicks[start : start + 10]))
            sets = [key.decode() for key in r.zrange(keys.pair_sets, 0, -1)]
            held = sum(r.zcard(key) for key in sets)
            assert held == int(r.get(keys.pair_count)) <= budget.pair_members
            assert all(r.zcard(key) <= SMALL.neighbours for key in sets)
        # the budget held the state to a few sets, the latest grown ones; the rest were dropped
        every = [keys.neighbours(f"p{i}") for i in range(12)] + [keys.history(f"p{i}") for i in range(12)]
        assert 0 < sum(bool(r.exists(key)) for key in every) < len(every)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


def test_history_pairs_the_seen_set_and_item_counts(setup):
    loop, _state, handler, _letters, keys, r = setup
    events = [
        _click(0, product="p1", session="a"),
        _click(1, product="p2", kind="view", session="b"),
        _click(2, product="p3", session="c"),
        _click(3, product="p1", kind="dismiss", session="c"),
    ]
    loop.run_until_complete(handler.handle(events))
    # across sessions: each item is paired with the shopper's latest distinct ones, nearer ones weighing more
    assert r.zscore(keys.history("p3"), "p2") == pytest.approx(1.0)
    assert r.zscore(keys.history("p3"), "p1") == pytest.approx(SMALL.history_decay)
    assert r.zscore(keys.history("p1"), "p3") == pytest.approx(SMALL.history_decay)
    assert not r.exists(keys.neighbours("p3"))  # sessions a, b, c never shared an item
    assert {m.decode() for m in r.zrange(keys.seen_items("u1"), 0, -1)} == {"p1", "p2", "p3"}
    assert r.zscore(keys.interactions, "p1") == 2 and r.zscore(keys.choices, "p1") == 1  # the dismissal is no choice
    assert r.zscore(keys.choices, "p2") is None and r.zscore(keys.interactions, "p2") == 1


def test_impressions_in_another_shoppers_name_do_not_touch_a_shoppers_list(setup):
    """An impression names a request id; posted for shopper u2 (whose token a page may hold), it
    must not mark products of u1's list as seen, which would change u1's ranking examples."""
    loop, state, handler, _letters, keys, r = setup
    loop.run_until_complete(state.remember_served("u1", _served()))
    forged = json.loads(_click(1, user="u2", product="p1", kind="impression").value)
    forged["context"] = {"widget": "recs", "position": 0, "request_id": "req-1"}
    own = json.loads(_click(2, product="p2", kind="impression").value)
    own["context"] = {"widget": "recs", "position": 1, "request_id": "req-1"}
    loop.run_until_complete(
        handler.handle([RawMessage(b"u2", json.dumps(forged).encode(), 0, 1), RawMessage(b"u1", json.dumps(own).encode(), 0, 2)])
    )
    assert r.smembers(keys.impressed("u1", "req-1")) == {b"p2"}
    assert r.smembers(keys.impressed("u2", "req-1")) == {b"p1"}  # kept, but only for u2's own lists


def test_a_shopper_id_with_a_colon_never_touches_another_shoppers_keys(setup):
    """``alice:recent`` is a valid id; its profile must not land on alice's recent list (which
    would make alice's every later batch fail on a wrong-type key) nor the other way round."""
    loop, _state, handler, letters, keys, r = setup
    result = loop.run_until_complete(
        handler.handle(
            [_click(1, user="alice", product="p1"), _click(2, user="alice:recent", product="p2"), _click(3, user="alice", product="p3")]
        )
    )
    assert result.applied == 3 and letters == []
    assert r.lrange(keys.recent("alice"), 0, -1) == [b"p3", b"p1"]
    assert r.lrange(keys.recent("alice:recent"), 0, -1) == [b"p2"]
    assert r.type(keys.user("alice:recent")) == b"hash" and r.type(keys.recent("alice")) == b"list"


def _served(user="u1", request="req-1", products=("p1", "p2", "p3", "p4"), shown=2, at=None, experiment=None):
    from schemas import RecommendationServed, encode
    from schemas.experiments import ExperimentTag

    rows = np.arange(len(products) * 2, dtype="<f4").reshape(len(products), 2)
    served = RecommendationServed(
        request_id=request,
        user_id=user,
        served_at=at or NOW,
        shown=shown,
        products=list(products),
        feature_names=["a", "b"],
        features=rows.tobytes(),
        ranker="prior",
        experiment=ExperimentTag(experiment_id=experiment[0], variant=experiment[1]) if experiment else None,
    )
    return encode(served).value


def test_a_choice_is_joined_with_the_list_it_was_made_from(setup):
    loop, state, handler, _letters, keys, r = setup
    loop.run_until_complete(state.remember_served("u1", _served(request="old", products=("p5", "p6"), shown=1)))
    loop.run_until_complete(state.remember_served("u1", _served()))
    impression = json.loads(_click(1, product="p2", kind="impression").value)
    impression["context"] = {"widget": "recs", "position": 1, "request_id": "req-1"}
    chosen = json.loads(_click(2, product="p3").value)
    chosen["context"] = {"widget": "recs", "position": 2, "request_id": "req-1"}
    result = loop.run_until_complete(
        handler.handle(
            [
                RawMessage(b"u1", json.dumps(impression).encode(), 0, 1),
                RawMessage(b"u1", json.dumps(chosen).encode(), 0, 2),
            ]
        )
    )
    assert result.choices_learned == 1
    ranker = handler._learners.ranker
    assert ranker is not None and ranker.features == ("a", "b") and ranker.choices == 1
    # skipped: p2 (shown and reported seen; p1 was shown but never reported) and p4 (ranked lower)
    assert ranker.pairs == 2
    assert r.smembers(keys.impressed("u1", "req-1")) == {b"p2"} and r.ttl(keys.impressed("u1", "req-1")) > 0
    assert r.zscore(keys.impressions, "p2") == 1 and r.zscore(keys.impressions, "p3") is None, "impressions counted per product"
    assert r.llen(keys.served("u1")) == 2 and r.ttl(keys.served("u1")) > 0
    # a view is no choice, and a product that was not a candidate teaches nothing
    loop.run_until_complete(handler.handle([_click(3, product="p4", kind="view"), _click(4, product="p7")]))
    assert ranker.choices == 1


def test_learners_learn_only_once_the_write_succeeded(setup, monkeypatch):
    import redis

    from services.profiles.writes import WriteBatch

    loop, _state, handler, _letters, _keys, _r = setup
    original = WriteBatch.execute

    async def unavailable(self, client, routing):
        raise redis.ConnectionError("redis went away")

    monkeypatch.setattr(WriteBatch, "execute", unavailable)
    with pytest.raises(redis.ConnectionError):
        loop.run_until_complete(handler.handle([_click(0, product="p1")]))
    assert handler._learners.events == 0
    monkeypatch.setattr(WriteBatch, "execute", original)
    loop.run_until_complete(handler.handle([_click(0, product="p1")]))  # the redelivery, once Redis is back
    assert handler._learners.events == 1


def test_learners_checkpoint_survives_redis_being_away(setup):
    loop, state, _handler, _letters, keys, r = setup
    learners = Learners()
    learners.learn_event("u1", "p1", "click", 1.0)
    assert loop.run_until_complete(checkpoint_learners(state, learners, b"secret")) is True
    assert load(r.get(keys.learners("main")), b"secret").events == 1

    # A port nothing listens on: the call the worker's timer makes, while Redis is away.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    away = aioredis.Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=0.5)
    assert loop.run_until_complete(checkpoint_learners(ProfileState(away, keys, SMALL), learners, b"secret")) is False
    loop.run_until_complete(away.aclose())


def test_a_checkpoint_larger_than_a_piece_is_written_in_pieces_and_renamed_whole(setup, monkeypatch):
    loop, state, _handler, _letters, keys, r = setup
    learners = Learners()
    for i in range(200):
        learners.learn_event(f"u{i}", f"p{i % 12}", "click", 1.0)
    monkeypatch.setattr("services.profiles.app.CHECKPOINT_PIECE", 1000)
    assert loop.run_until_complete(checkpoint_learners(state, learners, b"secret")) is True
    blob = r.get(keys.learners("main"))
    assert len(blob) > 10 * 1000, "several pieces"
    assert load(blob, b"secret").events == 200
    assert r.get(keys.learners_digest("main")).decode() == hashlib.sha256(blob).hexdigest()
    assert not r.exists(keys.learners_staging("main")) and 0 < r.ttl(keys.learners("main")) <= CHECKPOINT_KEEP_S

    # Redis gone half-way: the checkpoint before stays whole, and the half-written one goes within the hour
    async def away(*_args):
        raise aioredis.ConnectionError("gone")

    monkeypatch.setattr(state.redis, "append", away)
    learners.learn_event("u0", "p1", "click", 1.0)
    assert loop.run_until_complete(checkpoint_learners(state, learners, b"secret")) is False
    assert r.get(keys.learners("main")) == blob
    assert r.exists(keys.learners_staging("main")) and 0 < r.ttl(keys.learners_staging("main")) <= STAGING_TTL_S

    # the pieces lost before the rename (a Redis restarted without them): skipped, not raised at the timer
    async def lost(key, value):
        r.delete(keys.learners_staging("main"))
        return len(value)

    monkeypatch.setattr(state.redis, "append", lost)
    assert loop.run_until_complete(checkpoint_learners(state, learners, b"secret")) is False


def test_the_recommender_downloads_a_checkpoint_only_when_it_changed(setup):
    from services.recommender.learned import LearnedCache

    loop, state, _handler, _letters, keys, r = setup
    learners = Learners()
    learners.learn_event("u1", "p1", "click", 1.0)
    loop.run_until_complete(checkpoint_learners(state, learners, b"secret"))

    class Counting:  # the real client, counting what it fetches
        def __init__(self, client):
            self.client, self.fetched = client, []

        def get(self, key):
            self.fetched.append(key)
            return self.client.get(key)

        def __getattr__(self, name):
            return getattr(self.client, name)

    counting = Counting(r)
    cache = LearnedCache(counting, keys, b"secret")  # type: ignore[arg-type]
    assert cache.refresh() is True and cache.current.events == 1
    assert cache.refresh() is False
    assert counting.fetched.count(keys.learners("main")) == 1, "unchanged: only the digest was read again"
    learners.learn_event("u1", "p2", "click", 1.0)
    loop.run_until_complete(checkpoint_learners(state, learners, b"secret"))
    assert cache.refresh() is True and cache.current.events == 2


def test_choices_on_an_experiments_list_count_for_its_variant_once(setup):
    """Shown products earn credit (by the request id the click names, or the newest list that
    showed them); those below the fold or not in the list do not; a redelivered batch adds nothing."""
    from state.experiments import totals

    loop, state, handler, letters, keys, r = setup
    old = _served(
        request="req-old", products=("p7", "p8"), at=NOW - timedelta(seconds=SMALL.attribution_window_s + 60), experiment=("e1", "b")
    )
    loop.run_until_complete(state.remember_served("u1", old, "req-old", _tag("e1", "b")))
    served = _served(request="req-x", experiment=("e1", "b"))
    loop.run_until_complete(state.remember_served("u1", served, "req-x", _tag("e1", "b")))
    named = json.loads(_click(1, product="p1").value)
    named["context"] = {"widget": "recs", "position": 0, "request_id": "req-x"}
    batch = [
        RawMessage(b"u1", json.dumps(named).encode(), 0, 1),
        _click(2, product="p2", kind="purchase"),  # shown, found by time
        _click(3, product="p3"),  # below the fold: a candidate, never shown
        _click(4, product="p5"),  # not in the list
    ]
    loop.run_until_complete(handler.handle(batch))
    loop.run_until_complete(handler.handle(batch))  # Kafka redelivers
    summed = totals(r, keys, "e1")
    assert summed["b|shoppers"] == 1 and summed["b|lists"] == 2
    assert (summed["b|clicks"], summed["b|purchases"], summed["b|revenue"]) == (1, 1, 12.0)  # p2 costs 12
    assert summed["b|revenue|x"] == 24.0 and summed["b|clicks|any"] == 1  # revenue × the shopper's two lists
    loop.run_until_complete(handler.handle([_click(5, product="p7")]))
    assert letters == [] and r.zscore(keys.choices, "p7") == 1, "applied"
    assert totals(r, keys, "e1")["b|clicks"] == 1, "a choice after the attribution window is not credited"


def _tag(experiment_id, variant):
    from schemas.experiments import ExperimentTag

    return ExperimentTag(experiment_id=experiment_id, variant=variant)
