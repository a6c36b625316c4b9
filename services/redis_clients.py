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


def sync_redis(url: str, cluster: bool = False, **options: object) -> redis.Redis:
    """A client of one Redis, or (``cluster``) of the Redis Cluster that ``url``'s node belongs to."""
    kind = redis.RedisCluster if cluster else redis.Redis
    return kind.from_url(url, retry=Retry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[arg-type,return-value]


def async_redis(url: str, cluster: bool = False, **options: object) -> aioredis.Redis:
    kind = aioredis.RedisCluster if cluster else aioredis.Redis
    return kind.from_url(url, retry=AsyncRetry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[arg-type,return-value]


# What a client reports when it is pointed at the wrong kind of Redis.
CONNECT_ERRORS = (redis.RedisError, redis.RedisClusterException)


class WrongKindOfRedis(redis.RedisError):
    """A single-Redis client pointed at a node of a Redis Cluster."""


def check_kind(client: redis.Redis, cluster: bool) -> None:
    """A plain client on a cluster node would work for the keys that node serves and fail for
    the rest: refuse it at start-up instead."""
    if not cluster and client.info("cluster").get("cluster_enabled") == 1:
        raise WrongKindOfRedis("MOVED: this node is part of a Redis Cluster")


def redis_problem(exc: Exception, url: str, cluster: bool) -> str:
    """One line for a Redis that could not be used at start-up: what is wrong and how to fix it."""
    text = str(exc)
    if isinstance(exc, redis.RedisClusterException) and "not enabled" in text:
        return f"{url} is not a Redis Cluster node; unset SHELFSIGHT_REDIS_CLUSTER for a single Redis"
    if isinstance(exc, (redis.exceptions.MovedError, WrongKindOfRedis)):
        return f"{url} is a Redis Cluster node; set SHELFSIGHT_REDIS_CLUSTER=true (and SHELFSIGHT_REDIS_SHARDS)"
    if cluster:
        return f"no Redis Cluster answers at {url} ({text})"
    return f"no Redis answers at {url} ({text}); start one with `shelfsight stack up`"
