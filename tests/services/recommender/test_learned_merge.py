"""Several profiles workers' learners, as the recommender merges them (real Redis): each
shopper scored by the worker that learned them, rankers averaged by the choices behind them."""

import asyncio
import random
import uuid

import numpy as np
import pytest
import redis.asyncio as aioredis

import services.recommender.learned as learned_module
from models.ranking import merge_counts
from models.ranking.learners import Learners
from services.profiles.app import checkpoint_learners
from services.profiles.profile import ClickParams
from services.profiles.service import restore_learners
from services.profiles.state import ProfileState
from services.recommender.features import FEATURES
from services.recommender.learned import Learned, LearnedCache
from state.keys import Keys
from tests.cleanup import delete_prefixed

pytestmark = pytest.mark.redis
SECRET = b"merge-secret"


def _worker(users: list[str], choices: int, seed: int, sign: float) -> Learners:
    """A worker that saw its own shoppers' clicks and ``choices`` choices where feature 0 won (``sign`` > 0) or lost."""
    rng = random.Random(seed)
    learners = Learners(seed=seed, ranker_warmup=1)
    for _ in range(400):
        learners.learn_event(rng.choice(users), f"p{rng.randrange(20)}", "click", 2.0)
    names = list(FEATURES)
    for _ in range(choices):
        chosen = {name: rng.random() for name in names}
        skipped = {name: rng.random() for name in names}
        chosen[names[0]], skipped[names[0]] = (1.0, 0.0) if sign > 0 else (0.0, 1.0)
        learners.learn_choice(names, chosen, [skipped])
    return learners


@pytest.fixture
def stored(settings, redis_client):
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    client = aioredis.Redis.from_url(settings.redis_url)
    state = ProfileState(client, keys, ClickParams())
    west, east = _worker([f"w{i}" for i in range(10)], 300, 1, +1), _worker([f"e{i}" for i in range(10)], 100, 2, -1)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(checkpoint_learners(state, west, SECRET, "worker-west"))
    loop.run_until_complete(checkpoint_learners(state, east, SECRET, "worker-east"))
    yield keys, west, east
    loop.run_until_complete(client.aclose())
    loop.close()
    delete_prefixed(redis_client, keys.prefix)


def test_the_recommender_serves_every_workers_shoppers_and_choices(stored, redis_client):
    keys, west, east = stored
    cache = LearnedCache(redis_client, keys, SECRET)
    assert cache.refresh() is True
    merged = cache.current
    assert merged.events == west.events + east.events and merged.choices == 400
    alone = {"west": Learned.from_learners(west), "east": Learned.from_learners(east)}
    products = [f"p{i}" for i in range(20)]
    for user, worker in (("w3", "west"), ("e7", "east")):
        assert merged.affinity.knows(user)
        assert np.allclose(merged.affinity.scores(user, products), alone[worker].affinity.scores(user, products)), (
            "a shopper is scored by the worker that learned them, with that worker's item factors"
        )
    raw = {w: alone[w].ranker.scales * alone[w].ranker.weights for w in alone}
    assert np.allclose(merged.ranker.scales * merged.ranker.weights, 0.75 * raw["west"] + 0.25 * raw["east"])
    assert raw["west"][0] > 0 > raw["east"][0] and merged.ranker.weights[0] > 0  # 300 choices outweigh 100
    items, gram = merged.co_occurrence  # disjoint shoppers: the workers' counts add up
    both = np.zeros_like(gram)
    for worker in (west, east):
        names, counts = worker.co_occurrence.counts()
        at = [items.index(i) for i in names]
        both[np.ix_(at, at)] += counts
    assert np.array_equal(gram, both) and merged.item_model.items == items  # fitted once, on the merged counts
    assert cache.refresh() is False, "nothing changed: nothing reloaded"


def test_a_restarted_worker_starts_from_the_most_trained_checkpoint(stored, settings):
    keys, west, east = stored
    west.learn_event("w1", "p1", "click", 2.0)  # not checkpointed: the restore can only see what was
    restored = restore_learners(settings.model_copy(update={"redis_prefix": keys.prefix}), keys, SECRET)
    assert restored.events == max(west.events - 1, east.events) and restored.ranker.choices == 300


@pytest.mark.parametrize("refit_s, refitted", [(3600.0, False), (0.0, True)])
def test_the_item_model_is_fitted_again_at_most_every_refit_s(stored, redis_client, settings, refit_s, refitted, monkeypatch):
    keys, west, _ = stored
    cache = LearnedCache(redis_client, keys, SECRET, refit_s=refit_s)
    cache.refresh()
    before = cache.current.item_model
    assert before.items == cache.current.co_occurrence[0] and len(before.items) == 20
    for n in range(30):  # a product nobody had touched, bought by every west shopper
        west.learn_event(f"w{n % 10}", "brand-new", "purchase", 8.0)
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url)
    loop.run_until_complete(checkpoint_learners(ProfileState(client, keys, ClickParams()), west, SECRET, "worker-west"))
    loop.run_until_complete(client.aclose())
    loop.close()
    sums = []
    monkeypatch.setattr(learned_module, "merge_counts", lambda parts: sums.append(len(parts)) or merge_counts(parts))
    assert cache.refresh() is True
    assert (sums == [2]) is refitted, "two workers' counts are added up only to fit the model from them"
    assert "brand-new" in cache.current.co_occurrence[0], "the counts are always the newest"
    assert ("brand-new" in cache.current.item_model.index) is refitted
    assert (cache.current.item_model is before) is not refitted
