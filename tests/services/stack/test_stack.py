"""`shelfsight stack` against real processes, on ports of its own.

The main test stack (from `make test`) keeps running on the default ports meanwhile;
it also serves as the "already running broker" that must be reused, not replaced.
"""

import socket

import pytest

from services.errors import UserError
from services.settings import load_settings
from services.stack import Stack, State
from services.stack.processes import command_line
from tests.ports import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def own_settings(tmp_path, settings):
    return load_settings(
        state_dir=tmp_path / "stack",
        cache_dir=settings.cache_dir,  # reuse the jars already fetched
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )


def test_up_is_idempotent_status_is_right_and_down_leaves_nothing(own_settings):
    stack = Stack.from_settings(own_settings)
    try:
        first = {s.name: s for s in stack.up()}
        assert first["kafka"].state is State.RUNNING
        assert first["kafka"].version == "Apache Kafka 3.9.1"
        assert first["redis"].state is State.RUNNING
        assert first["redis"].version.startswith("redis-server ")
        assert "kafka.Kafka" in command_line(first["kafka"].pid)

        second = {s.name: s for s in stack.up()}
        assert {n: s.pid for n, s in second.items()} == {n: s.pid for n, s in first.items()}
        assert {s.name: s.state for s in stack.status()} == {"kafka": State.RUNNING, "redis": State.RUNNING}
    finally:
        stopped = dict(stack.down())
    assert stopped == {"kafka": True, "redis": True}
    assert command_line(first["kafka"].pid) is None
    assert command_line(first["redis"].pid) is None
    assert {s.name: s.state for s in stack.status()} == {"kafka": State.STOPPED, "redis": State.STOPPED}
    assert dict(stack.down()) == {"kafka": False, "redis": False}


def test_running_services_are_reused_and_never_stopped(tmp_path, settings, kafka, redis_client):
    stranger = Stack.from_settings(load_settings(state_dir=tmp_path / "elsewhere", cache_dir=settings.cache_dir))
    statuses = {s.name: s for s in stranger.up()}
    assert statuses["kafka"].state is State.EXTERNAL and statuses["kafka"].pid is None
    assert statuses["redis"].state is State.EXTERNAL
    assert dict(stranger.down()) == {"kafka": False, "redis": False}
    assert redis_client.ping()
    assert {s.state for s in Stack.from_settings(settings).status()} == {State.RUNNING}


def test_a_busy_port_is_a_clear_error(own_settings):
    host, port = own_settings.kafka_address
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        with pytest.raises(UserError, match=f"port {host}:{port} is busy"):
            Stack.from_settings(own_settings).components[0].up()
