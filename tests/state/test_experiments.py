"""Experiments on a real redis-server: declarations, and the per-shopper sums both writers keep."""

import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import msgpack
import pytest

from schemas.experiments import ExperimentSpec, ExperimentTag, VariantSpec
from services.experiments.readout import moments
from services.profiles.writes import WriteBatch
from state import experiments as stored
from state.keys import Keys
from state.served import remember
from tests.cleanup import delete_prefixed
from tests.write_batches import execute

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _spec(experiment_id: str, ends_at: datetime | None = None) -> ExperimentSpec:
    return ExperimentSpec(
        experiment_id=experiment_id,
        variants=[VariantSpec(name="control", share=0.5, ranking="prior"), VariantSpec(name="learned", share=0.5, ranking="learned")],
        ends_at=ends_at,
    )


@pytest.fixture
def keys(redis_client):
    keys = Keys(f"exp-{uuid.uuid4().hex[:8]}:")
    yield keys
    delete_prefixed(redis_client, keys.prefix)


@pytest.mark.redis
def test_one_experiment_runs_at_a_time_and_a_stopped_one_keeps_its_place(redis_client, keys):
    first = stored.create(redis_client, keys, _spec("first"), NOW)
    assert first.running(NOW) and not first.running(NOW - timedelta(seconds=1))
    with pytest.raises(stored.ExperimentError, match="stop it first"):
        stored.create(redis_client, keys, _spec("second"), NOW)
    with pytest.raises(stored.ExperimentError, match="exists"):
        stored.create(redis_client, keys, _spec("first"), NOW)
    with pytest.raises(stored.ExperimentError, match="is not stopped"):
        stored.delete(redis_client, keys, "first")
    stopped = stored.stop(redis_client, keys, "first", NOW + timedelta(hours=1))
    assert not stopped.running(NOW + timedelta(hours=2)) and stopped.running(NOW + timedelta(minutes=59))
    stored.create(redis_client, keys, _spec("second"), NOW + timedelta(hours=2))
    assert [e.experiment_id for e in stored.load_all(redis_client, keys)] == ["first", "second"]
    stored.delete(redis_client, keys, "first")
    assert [e.experiment_id for e in stored.load_all(redis_client, keys)] == ["second"]
    stored.stop(redis_client, keys, "second", NOW + timedelta(hours=3))
    with pytest.raises(stored.ExperimentError, match="used by a deleted experiment"):
        stored.create(redis_client, keys, _spec("first"), NOW + timedelta(hours=4))
    with pytest.raises(stored.ExperimentError, match="experiments list"):
        stored.load(redis_client, keys, "first")


@pytest.mark.redis
def test_an_experiment_that_ended_does_not_block_the_next(redis_client, keys):
    stored.create(redis_client, keys, _spec("short", ends_at=NOW + timedelta(days=1)), NOW)
    with pytest.raises(stored.ExperimentError):
        stored.create(redis_client, keys, _spec("overlapping"), NOW + timedelta(hours=23))
    stored.create(redis_client, keys, _spec("after"), NOW + timedelta(days=1))


@pytest.mark.redis
def test_a_served_list_counts_once_whoever_keeps_it_and_however_often(redis_client, keys):
    tag = ExperimentTag(experiment_id="e1", variant="learned")
    value = json.dumps({"request_id": "r1", "n": 1}).encode()
    assert remember(redis_client, keys, "alice", value, request_id="r1", experiment=tag)  # serve, as it answers
    assert not remember(redis_client, keys, "alice", value, request_id="r1", experiment=tag)  # the worker, from Kafka
    for n in range(2, 6):  # newer lists push r1 out of the three kept …
        remember(redis_client, keys, "alice", json.dumps({"request_id": f"r{n}"}).encode(), request_id=f"r{n}", experiment=tag)
    remember(redis_client, keys, "alice", value, request_id="r1", experiment=tag)  # … and Kafka redelivers it
    summed = stored.totals(redis_client, keys, "e1")
    assert summed["learned|shoppers"] == 1 and summed["learned|lists"] == 5, summed
    assert redis_client.hget(keys.in_experiment("alice", "e1"), "variant") == b"learned"


@pytest.mark.redis
def test_the_sums_are_those_of_each_shoppers_own_totals(redis_client, keys, settings):
    """Random increments in random order, through the worker's batch script: the variant's sums,
    squares, counts and cross products equal what each shopper's final totals give."""
    rng = random.Random(3)
    shoppers = [f"s{n}" for n in range(30)]
    own: dict[str, dict[str, float]] = {s: {} for s in shoppers}
    batch = WriteBatch()
    for _ in range(400):
        shopper, metric = rng.choice(shoppers), rng.choice(["lists", "lists", "clicks", "purchases", "revenue"])
        amount = round(rng.uniform(1, 90), 2) if metric == "revenue" else 1.0
        batch.experiment_add(keys.in_experiment(shopper, "e2"), keys.experiment_totals("e2"), "b", metric, amount)
        own[shopper][metric] = own[shopper].get(metric, 0.0) + amount
    assert execute(settings.redis_url, batch, keys.routing)
    summed = stored.totals(redis_client, keys, "e2")
    for metric in ("lists", "clicks", "purchases", "revenue"):
        found = moments("b", metric, summed)
        values = [own[s].get(metric, 0.0) for s in shoppers]
        assert found.n == len(shoppers)
        assert found.total == pytest.approx(sum(values))
        assert found.squares == pytest.approx(sum(v * v for v in values))
        if metric != "lists":
            assert found.with_lists == pytest.approx(sum(v * own[s].get("lists", 0.0) for s, v in zip(shoppers, values, strict=True)))
            assert summed.get(f"b|{metric}|any", 0) == sum(1 for v in values if v > 0)


@pytest.mark.redis
def test_the_running_minimum_of_the_p_values_is_kept(redis_client, keys):
    assert stored.record_reading(redis_client, keys, "e3", "b|clicks", 0.4, 1) == (0.4, 1)
    assert stored.record_reading(redis_client, keys, "e3", "b|clicks", 0.02, -1) == (0.02, -1)
    assert stored.record_reading(redis_client, keys, "e3", "b|clicks", 0.9, 1) == (0.02, -1), "the sign is the minimum's"


def test_the_batch_carries_experiment_additions_as_one_command():
    batch = WriteBatch()
    batch.experiment_add("shopper", "totals", "b", "clicks", 1)
    words = msgpack.unpackb(msgpack.packb(batch.args(), use_bin_type=False), raw=False)
    assert words[words.index("_experiment_add") - 1] == 7


@pytest.mark.redis
def test_an_interleaved_list_counts_once_by_its_latest_outcome(redis_client, keys, settings):
    choices = {"l1": ["a", "b", "b"], "l2": ["a"], "l3": ["b", "a"], "l4": []}  # won by b, by a, tied, no choice
    for list_id, teams in choices.items():
        for team in teams:
            batch = WriteBatch()
            batch.interleave_win(keys.drafted("u", list_id), keys.experiment_totals("i1"), team, "b" if team == "a" else "a", 60)
            assert execute(settings.redis_url, batch, keys.routing)
    summed = stored.totals(redis_client, keys, "i1")
    assert (summed.get("wins|a"), summed.get("wins|b"), summed.get("ties")) == (1, 1, 1), summed
