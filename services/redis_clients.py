"""Redis clients as every service opens them: a failed command on a broken connection is tried
again on a fresh one, with exponential backoff (redis-py's own Retry), before the error reaches
the caller — which then has its own, longer policy (the profiles worker waits as long as it
takes; a recommendation request answers with an error).
"""

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from services.settings import Settings

_ERRORS = (redis.ConnectionError, redis.TimeoutError)
_TRIES = 3  # after the first: a blip (a failover, a restart) is ridden out within about a second


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


def sync_redis(url: str, cluster: bool = False, **options: Any) -> redis.Redis:
    """A client of one Redis, or (``cluster``) of the Redis Cluster that ``url``'s node belongs to."""
    kind = redis.RedisCluster if cluster else redis.Redis
    return kind.from_url(url, retry=Retry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[return-value]  # a RedisCluster: the same commands, no Redis subclass


def async_redis(url: str, cluster: bool = False, **options: Any) -> aioredis.Redis:
    kind = aioredis.RedisCluster if cluster else aioredis.Redis
    return kind.from_url(url, retry=AsyncRetry(_backoff(), _TRIES, _ERRORS), **options)  # type: ignore[return-value]  # as above


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
    """One line for a Redis that could not be used at start-up: what is wrong and how to fix it.

    The URL may carry a password and this line goes to stderr and into logs, so it is shown
    redacted, also where the client echoed it into its own message.
    """
    shown = redacted(url)
    text = str(exc).replace(url, shown)
    if isinstance(exc, redis.RedisClusterException) and "not enabled" in text:
        return f"{shown} is not a Redis Cluster node; unset SHELFSIGHT_REDIS_CLUSTER for a single Redis"
    if isinstance(exc, (redis.exceptions.MovedError, WrongKindOfRedis)):
        return f"{shown} is a Redis Cluster node; set SHELFSIGHT_REDIS_CLUSTER=true (and SHELFSIGHT_REDIS_SHARDS)"
    if cluster:
        return f"no Redis Cluster answers at {shown} ({text})"
    return f"no Redis answers at {shown} ({text}); start one with `shelfsight stack up`"


_SECRET_QUERY = frozenset({"username", "password"})  # redis-py passes these query arguments to AUTH


def redacted(url: str) -> str:
    """``url`` fit to show: its username and password (in the authority or the query) masked.

    >>> redacted("redis://:s3cret@cache.internal:6379/0")
    'redis://:***@cache.internal:6379/0'
    >>> redacted("rediss://app:s3cret@[::1]:6380/1?password=s3cret&db=2")
    'rediss://***:***@[::1]:6380/1?password=***&db=2'
    >>> redacted("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    >>> redacted("redis://:pa#ss@cache.internal:6379/0")  # an unencoded '#' splits the password
    'redis://***'
    """
    parts = urlsplit(url)
    if parts.fragment:  # Redis URLs have no fragment: a '#' is part of a secret, so where it ends is unknown
        return f"{parts.scheme}://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = ("***" if user else "") + (":***" if colon else "") + "@" + hostport
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k in _SECRET_QUERY for k, _ in pairs):  # else leave the query exactly as written
        query = urlencode([(k, "***" if k in _SECRET_QUERY else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redis_client(settings: "Settings") -> redis.Redis:
    """The services' Redis, checked: reachable, of the kind the settings say, holding this layout's state."""
    from services.errors import UserError
    from state.keys import Keys
    from state.layout import LayoutMismatch, check_layout

    try:
        client = sync_redis(settings.redis_url, settings.redis_cluster, socket_timeout=5, health_check_interval=30)
        client.ping()
        check_kind(client, settings.redis_cluster)
        check_layout(client, Keys.of(settings))
    except CONNECT_ERRORS as exc:
        raise UserError(redis_problem(exc, settings.redis_url, settings.redis_cluster)) from None
    except LayoutMismatch as exc:
        raise UserError(str(exc)) from None
    return client
