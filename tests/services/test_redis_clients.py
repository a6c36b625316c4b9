"""A Redis that cannot be used at start-up is reported in one line, and never with its password."""

import pytest
import redis

from services.redis_clients import CONNECT_ERRORS, WrongKindOfRedis, redis_problem, sync_redis
from tests.ports import free_port

SECRET = "hunter2-s3cret"


def _start_up_error(url: str, cluster: bool) -> str:
    """The line a service prints when its Redis does not answer: the real client, a closed port."""
    try:
        sync_redis(url, cluster, socket_connect_timeout=1).ping()
    except CONNECT_ERRORS as exc:
        return redis_problem(exc, url, cluster)
    raise AssertionError(f"something answers at {url}")


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
@pytest.mark.parametrize("auth", [f":{SECRET}", f"shop-user:{SECRET}"], ids=["password", "user+password"])
def test_a_closed_port_is_reported_without_the_password(cluster, auth):
    port = free_port()
    line = _start_up_error(f"redis://{auth}@127.0.0.1:{port}/0", cluster)
    assert SECRET not in line and "shop-user" not in line
    assert f"***@127.0.0.1:{port}/0" in line and "\n" not in line


def test_the_password_in_the_query_is_hidden_too():
    url = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}"
    line = _start_up_error(url, cluster=False)
    assert SECRET not in line and "password=***" in line


def test_a_client_message_that_echoes_the_url_is_redacted_as_well():
    url = f"redis://:{SECRET}@cache.internal:6379/0"
    line = redis_problem(redis.ConnectionError(f"cannot reach {url}"), url, cluster=False)
    assert SECRET not in line and "(cannot reach redis://:***@cache.internal:6379/0)" in line


def test_the_wrong_kind_of_redis_is_named_redacted():
    url = f"redis://:{SECRET}@cache.internal:6379/0"
    line = redis_problem(WrongKindOfRedis("MOVED"), url, cluster=False)
    assert line.startswith("redis://:***@cache.internal:6379/0 is a Redis Cluster node")
