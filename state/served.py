"""A shopper's latest served lists (``Keys.served``), kept to join the choices that follow with
the list they were made from.

`serve` keeps each list it logs the moment it answers, so a click that comes right after
(the next request of a fast shopper, or a shop loading its events) finds it; the profiles
worker keeps the same lists as they arrive on ``recommendations.served``. Both write with
one script that adds a list only once, so the two writers never keep it twice. A list ranked
for an experiment counts for its variant in the same script, once (``state.experiments``).
"""

import redis
import redis.asyncio as aioredis

from schemas.experiments import ExperimentTag
from state.bounds import BOUNDS
from state.experiments import EXPERIMENT_ADD_LUA, SHOPPER_TTL_S
from state.keys import Keys

# KEYS[1]: the shopper's lists; KEYS[2..4] (an experiment's list only): the list's counted marker,
# the shopper's totals, the group's totals. ARGV: the served list's JSON, how many lists to keep,
# their TTL (s), then the variant, the shopper totals' TTL and the marker's (as long as an event's
# dedupe marker: a worker far behind, or replaying, still finds it).
REMEMBER = (
    EXPERIMENT_ADD_LUA
    + """
if #KEYS == 4 and redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[6]) then
  experiment_add(KEYS[3], KEYS[4], ARGV[4], 'lists', 1, ARGV[5])
end
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
)


def _script_args(
    keys: Keys, user: str, value: bytes, lists: int, ttl_s: int, request_id: str | None, experiment: ExperimentTag | None
) -> tuple[int, list[str | bytes | int]]:
    """(how many keys, then the keys and the arguments) for ``REMEMBER``."""
    words: list[str | bytes | int] = [keys.served(user)]
    extra: list[str | bytes | int] = []
    if experiment is not None and request_id is not None:
        home = keys.home(user)
        words += [
            keys.counted(user, request_id),
            keys.in_experiment(user, experiment.experiment_id),
            home.experiment_totals(experiment.experiment_id),
        ]
        extra = [experiment.variant, SHOPPER_TTL_S, BOUNDS.dedupe_ttl_s]
    return len(words), [*words, value, lists, ttl_s, *extra]


def remember(
    client: redis.Redis,
    keys: Keys,
    user: str,
    value: bytes,
    lists: int = BOUNDS.served_lists,
    ttl_s: int = BOUNDS.served_ttl_s,
    request_id: str | None = None,
    experiment: ExperimentTag | None = None,
) -> bool:
    """Keep ``value`` (a ``RecommendationServed`` JSON) among ``user``'s latest lists; False when it
    was there already. With ``experiment``, the list counts for its variant (once per ``request_id``)."""
    count, words = _script_args(keys, user, value, lists, ttl_s, request_id, experiment)
    return bool(client.eval(REMEMBER, count, *words))


async def remember_async(
    client: aioredis.Redis,
    keys: Keys,
    user: str,
    value: bytes,
    lists: int = BOUNDS.served_lists,
    ttl_s: int = BOUNDS.served_ttl_s,
    request_id: str | None = None,
    experiment: ExperimentTag | None = None,
) -> bool:
    """:func:`remember`, for the worker's asyncio client."""
    count, words = _script_args(keys, user, value, lists, ttl_s, request_id, experiment)
    return bool(await client.eval(REMEMBER, count, *words))
