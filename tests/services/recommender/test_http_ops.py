"""The ops port: with SHELFSIGHT_API_OPS_PORT set, /metrics and the documentation leave the
public port, and the public /healthz says only whether the process is healthy."""

import socket

import httpx
import pytest
from fastapi.testclient import TestClient

from services.errors import UserError
from tests.ports import free_port
from tests.services.recommender.conftest import api_for

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def test_metrics_and_docs_move_to_the_ops_port(api_settings, shop):
    port = free_port()
    settings = api_settings.model_copy(update={"api_ops_port": port, "metrics_host": "127.0.0.1"})
    app, _ = api_for(settings, shop)
    with TestClient(app) as public:
        assert public.get("/v1/users/ops/recommendations").status_code == 200
        for path in ("/metrics", "/docs", "/redoc", "/openapi.json"):
            assert public.get(path).status_code == 404, path
        assert public.get("/healthz").json() == {"healthy": True}
        ops = f"http://127.0.0.1:{port}"
        assert "shelfsight_recommender_requests" in httpx.get(f"{ops}/metrics", timeout=10).text
        paths = httpx.get(f"{ops}/openapi.json", timeout=10).json()["paths"]
        assert {"/v1/users/{user_id}/recommendations", "/v1/events"} <= set(paths), "the public API's documentation"
        assert "swagger" in httpx.get(f"{ops}/docs", timeout=10).text.lower()
        assert httpx.get(f"{ops}/healthz", timeout=10).json()["healthy"] is True
    with pytest.raises(httpx.ConnectError):  # stopped with the API
        httpx.get(f"{ops}/healthz", timeout=2)


def test_without_an_ops_port_everything_stays_on_the_api_port(api):
    app, _ = api
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_a_busy_ops_port_is_one_line(api_settings, shop):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = api_settings.model_copy(update={"api_ops_port": port, "metrics_host": "127.0.0.1"})
        with pytest.raises(UserError, match=f"the ops API could not listen on 127.0.0.1:{port}"):
            api_for(settings, shop)
