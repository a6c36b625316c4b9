"""Redis clients as every service opens them: a failed command on a broken connection is tried
again on a fresh one, with exponential backoff (redis-py's own Retry), before the error reaches
the caller — which then has its own, longer policy (the profiles worker waits as long as it
takes; a recommendation request answers with an error).
"""

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_TRIES = 3  # after the first: a blip (a failover, a restart) is ridden out within about a second


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


def sync_redis(url: str, **options: object) -> redis.Redis:
    return redis.Redis.from_url(url, retry=Retry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[arg-type]


def async_redis(url: str, **options: object) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, retry=AsyncRetry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[arg-type]
