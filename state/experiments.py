"""Experiments in Redis: their declarations (``Keys.experiments``) and their running totals.

**Declarations.** One hash, experiment id → ``Experiment`` JSON. Every ``serve`` reads it every
few seconds and assigns shoppers by it; ``shelfsight experiments`` writes it. At most one
experiment runs at a time, so a shopper is never in two at once (the readout would otherwise
mix their effects).

**Totals, per shopper.** The shopper is the unit that is randomised, so it is the unit the
readout counts: each shopper in an experiment has a small hash of their own totals (lists
served, clicks, carts, purchases, revenue; ``Keys.in_experiment``), and every change to it adds
to its variant's sums, sums of squares and cross products with ``lists`` in the group's totals
(``Keys.experiment_totals``). Means, variances and the click-through's delta-method variance
follow from those sums alone, however many shoppers there are. The same Lua function does it
for the two writers: the served-list script (a list counts once, when it is first kept) and the
profiles worker's batch script (a choice counts once, in the write its partition position
fences).
"""

import json
import logging
import time
from datetime import datetime

import redis
from pydantic import ValidationError

from schemas.experiments import Experiment, ExperimentSpec, ExperimentTag
from state.keys import Keys

log = logging.getLogger(__name__)

MAX_EXPERIMENTS = 100  # declarations kept; `shelfsight experiments delete` removes stopped ones
MAX_RETIRED = 1000  # deleted ids remembered, so none is reused while its shoppers' totals live
HISTORY_POINTS = 500  # the dashboard's curves: at most this many readings …
HISTORY_GAP_S = 30.0  # … at least this far apart
METRICS = ("lists", "clicks", "carts", "purchases", "revenue")  # a shopper's totals (the Lua below names the last four too)
COMPARED = METRICS[1:]  # what variants are compared on, per shopper
KIND_METRIC = {"click": "clicks", "add_to_cart": "carts", "purchase": "purchases"}
SHOPPER_TTL_S = 180 * 86400  # a shopper's totals outlive any experiment that still reads them

# Two Lua functions, defined at the top of the served-list script and the worker's batch script.
# experiment_add(shopper key, totals key, variant, metric, amount, ttl): the shopper's own total of
# ``metric`` moves by ``amount``, and the variant's sums with it: the sum, the sum of squares
# (x² − before² = 2·before·amount + amount²), the count of shoppers with any, and the cross
# product with ``lists`` (the click-through's denominator). The first touch counts the shopper.
EXPERIMENT_ADD_LUA = """
local function experiment_add(shopper, totals, variant, metric, amount, ttl)
  amount = tonumber(amount)
  if redis.call('HSETNX', shopper, 'variant', variant) == 1 then
    redis.call('HINCRBY', totals, variant .. '|shoppers', 1)
  end
  local before = tonumber(redis.call('HGET', shopper, metric) or '0')
  redis.call('HINCRBYFLOAT', shopper, metric, amount)
  local at = variant .. '|' .. metric
  redis.call('HINCRBYFLOAT', totals, at, amount)
  redis.call('HINCRBYFLOAT', totals, at .. '|sq', 2 * before * amount + amount * amount)
  if before == 0 and amount > 0 then redis.call('HINCRBY', totals, at .. '|any', 1) end
  if metric == 'lists' then
    for _, other in ipairs({'clicks', 'carts', 'purchases', 'revenue'}) do
      local value = tonumber(redis.call('HGET', shopper, other) or '0')
      if value ~= 0 then redis.call('HINCRBYFLOAT', totals, variant .. '|' .. other .. '|x', amount * value) end
    end
  else
    local lists = tonumber(redis.call('HGET', shopper, 'lists') or '0')
    if lists ~= 0 then redis.call('HINCRBYFLOAT', totals, at .. '|x', amount * lists) end
  end
  redis.call('EXPIRE', shopper, ttl)
  redis.call('EXPIRE', totals, ttl)
end

-- interleave_win(list key, totals key, team, other team, the list's ttl, the totals' ttl): one more choice for ``team`` on an
-- interleaved list; the list's outcome (won by a team, tied, or no choices yet) moves between the
-- totals' 'wins|<team>' and 'ties' counts, so each list is counted once, by its latest outcome.
local function interleave_win(list, totals, team, other, ttl, totals_ttl)
  local mine = tonumber(redis.call('HGET', list, team) or '0')
  local theirs = tonumber(redis.call('HGET', list, other) or '0')
  redis.call('HINCRBY', list, team, 1)
  redis.call('EXPIRE', list, ttl)
  local function outcome(a, b)
    if a > b then return 'wins|' .. team elseif b > a then return 'wins|' .. other elseif a > 0 then return 'ties' end
    return nil
  end
  local before, after = outcome(mine, theirs), outcome(mine + 1, theirs)
  if before ~= after then
    if before then redis.call('HINCRBY', totals, before, -1) end
    redis.call('HINCRBY', totals, after, 1)
  end
  redis.call('EXPIRE', totals, totals_ttl)
end
"""

# KEYS[1]: the experiments hash; ARGV: the experiment's JSON, its id, the cap. 1: stored;
# 0: the id is taken; -1: the cap is reached.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
return 1
"""

# KEYS[1]: readings; ARGV: field, p, the difference's sign (-1, 0, 1). The smaller of the stored
# and the new p is kept with the sign at that reading; both are returned.
_READING = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '2')
local new = tonumber(ARGV[2])
if new < old then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '|sign', ARGV[3])
  return {ARGV[2], ARGV[3]}
end
return {tostring(old), redis.call('HGET', KEYS[1], ARGV[1] .. '|sign') or '0'}
"""


# KEYS[1]: history; ARGV: the point's JSON (with its time "t"), that time, the gap, the cap. 1: kept.
_POINT = """
local last = redis.call('LINDEX', KEYS[1], 0)
if last and tonumber(ARGV[2]) - tonumber(cjson.decode(last)['t']) < tonumber(ARGV[3]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
return 1
"""


class ExperimentError(ValueError):
    """An experiment that cannot be created, stopped or deleted as asked; the message says why."""


def load_all(client: redis.Redis, keys: Keys) -> list[Experiment]:
    """Every stored experiment; one that no longer validates is logged and passed over."""
    found = []
    for raw_id, raw in client.hgetall(keys.experiments).items():
        try:
            found.append(Experiment.model_validate_json(raw))
        except ValidationError as error:
            log.error("stored experiment unreadable; passed over", extra={"experiment": str(raw_id)[:80], "error": str(error)[:300]})
    return sorted(found, key=lambda e: e.created_at)


def load(client: redis.Redis, keys: Keys, experiment_id: str) -> Experiment:
    raw = client.hget(keys.experiments, experiment_id)
    if raw is None:
        raise ExperimentError(f"no experiment {experiment_id!r}: `shelfsight experiments list` shows them")
    return Experiment.model_validate_json(raw)


def create(client: redis.Redis, keys: Keys, spec: ExperimentSpec, now: datetime) -> Experiment:
    """Store ``spec`` as a new experiment, refused when its id is taken or its time overlaps a running one."""
    experiment = Experiment(**spec.model_dump(), created_at=now)
    start = experiment.starts_at or now
    if client.hexists(keys.experiments, experiment.experiment_id):
        raise ExperimentError(f"experiment {experiment.experiment_id!r} exists: choose another id")
    retired = client.zscore(keys.experiments_retired, experiment.experiment_id)
    if retired is not None and now.timestamp() - retired < SHOPPER_TTL_S:
        raise ExperimentError(
            f"experiment id {experiment.experiment_id!r} was used by a deleted experiment, whose shoppers' totals "
            f"may still be in Redis: choose another id"
        )
    for other in load_all(client, keys):
        if other.stopped_at is None and _overlap(other, start, experiment.ends_at):
            raise ExperimentError(
                f"experiment {other.experiment_id!r} runs at the same time: stop it first (`shelfsight experiments stop {other.experiment_id}`)"
            )
    stored = int(client.eval(_CREATE, 1, keys.experiments, _stored(experiment), experiment.experiment_id, MAX_EXPERIMENTS))
    if stored == 0:
        raise ExperimentError(f"experiment {experiment.experiment_id!r} exists: choose another id")
    if stored < 0:
        raise ExperimentError(f"{MAX_EXPERIMENTS} experiments are stored: delete a stopped one (`shelfsight experiments delete ID`)")
    return experiment


def stop(client: redis.Redis, keys: Keys, experiment_id: str, now: datetime) -> Experiment:
    """Stop assigning shoppers to it; its totals stay for the report (a choice on a list it served still counts)."""
    experiment = load(client, keys, experiment_id)
    if experiment.stopped_at is not None:
        raise ExperimentError(f"experiment {experiment_id!r} was stopped at {experiment.stopped_at.isoformat()}")
    stopped = experiment.model_copy(update={"stopped_at": now})
    client.hset(keys.experiments, experiment_id, _stored(stopped))
    return stopped


def delete(client: redis.Redis, keys: Keys, experiment_id: str) -> None:
    """Remove a stopped experiment and its totals (shoppers' own totals expire on their own)."""
    experiment = load(client, keys, experiment_id)
    if experiment.stopped_at is None:
        raise ExperimentError(f"experiment {experiment_id!r} is not stopped: `shelfsight experiments stop {experiment_id}` first")
    client.delete(
        *(k.experiment_totals(experiment_id) for k in keys.groups()),
        keys.experiment_readings(experiment_id),
        keys.experiment_history(experiment_id),
    )
    now = time.time()
    pipe = client.pipeline()
    pipe.zadd(keys.experiments_retired, {experiment_id: now})
    pipe.zremrangebyscore(keys.experiments_retired, "-inf", now - SHOPPER_TTL_S)
    pipe.zremrangebyrank(keys.experiments_retired, 0, -(MAX_RETIRED + 1))
    pipe.hdel(keys.experiments, experiment_id)
    pipe.execute()


def totals(client: redis.Redis, keys: Keys, experiment_id: str) -> dict[str, float]:
    """The variants' sums, every group's added up: ``{"variant|metric[|sq|any|x]": value}``."""
    summed: dict[str, float] = {}
    for group in keys.groups():
        for name, value in client.hgetall(group.experiment_totals(experiment_id)).items():
            field = name.decode() if isinstance(name, bytes) else str(name)
            summed[field] = summed.get(field, 0.0) + float(value)
    return summed


def record_reading(client: redis.Redis, keys: Keys, experiment_id: str, comparison: str, p_value: float, sign: int) -> tuple[float, int]:
    """Keep the smallest p-value ``comparison`` has reached at any reading, with the sign of the
    difference at that reading; returns both. An always-valid p-value may be read at any time, and
    its running minimum stays valid; the sign is frozen with it, so a decision never flips."""
    p, at = client.eval(_READING, 1, keys.experiment_readings(experiment_id), comparison, repr(float(p_value)), sign)
    return float(p), int(at)


SLOW_S = 0.1  # a request slower than this counts as slow in its variant's guardrails


def record_request(client: redis.Redis, keys: Keys, user: str, tag: ExperimentTag, seconds: float, ok: bool) -> None:
    """One request of a variant: its count, errors, total time and slow ones (the guardrails)."""
    totals, variant = keys.home(user).experiment_totals(tag.experiment_id), tag.variant
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(totals, f"{variant}|requests", 1)
    pipe.hincrbyfloat(totals, f"{variant}|seconds", seconds)
    if not ok:
        pipe.hincrby(totals, f"{variant}|errors", 1)
    if seconds > SLOW_S:
        pipe.hincrby(totals, f"{variant}|slow", 1)
    pipe.expire(totals, SHOPPER_TTL_S)
    pipe.execute()


def record_point(client: redis.Redis, keys: Keys, experiment_id: str, point: dict[str, object], at: float) -> bool:
    """Keep a reading's headline for the dashboard, unless the last was kept under HISTORY_GAP_S ago."""
    text = json.dumps({**point, "t": at})
    return bool(client.eval(_POINT, 1, keys.experiment_history(experiment_id), text, repr(at), HISTORY_GAP_S, HISTORY_POINTS))


def history(client: redis.Redis, keys: Keys, experiment_id: str) -> list[dict[str, object]]:
    """The kept headlines, oldest first."""
    return [json.loads(raw) for raw in reversed(client.lrange(keys.experiment_history(experiment_id), 0, -1))]


def _stored(experiment: Experiment) -> str:
    """The document as stored: fields left at their defaults are left out, so a `serve` of the
    version before a field was added still reads the experiments that do not use it."""
    return experiment.model_dump_json(exclude_defaults=True)


def _overlap(other: Experiment, start: datetime, end: datetime | None) -> bool:
    other_start = other.starts_at or other.created_at
    return (end is None or other_start < end) and (other.ends_at is None or start < other.ends_at)
