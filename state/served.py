"""A shopper's latest served lists (``Keys.served``), kept to join the choices that follow with
the list they were made from.

`serve` keeps each list it logs the moment it answers, so a click that comes right after
(the next request of a fast shopper, or a shop loading its events) finds it; the profiles
worker keeps the same lists as they arrive on ``recommendations.served``. Both write with
one script that adds a list only once, so the two writers never keep it twice.
"""

import redis
import redis.asyncio as aioredis

from state.bounds import BOUNDS
from state.keys import Keys

# KEYS[1]: the shopper's list; ARGV: the served list's JSON, how many lists to keep, their TTL (s).
REMEMBER = """
if redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def remember(
    client: redis.Redis, keys: Keys, user: str, value: bytes, lists: int = BOUNDS.served_lists, ttl_s: int = BOUNDS.served_ttl_s
) -> bool:
    """Keep ``value`` (a ``RecommendationServed`` JSON) among ``user``'s latest lists; False when it was there already."""
    return bool(client.eval(REMEMBER, 1, keys.served(user), value, lists, ttl_s))


async def remember_async(
    client: aioredis.Redis, keys: Keys, user: str, value: bytes, lists: int = BOUNDS.served_lists, ttl_s: int = BOUNDS.served_ttl_s
) -> bool:
    """:func:`remember`, for the worker's asyncio client."""
    return bool(await client.eval(REMEMBER, 1, keys.served(user), value, lists, ttl_s))
