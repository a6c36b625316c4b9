"""Who the per-address limits count a request under: X-Forwarded-For only from a trusted proxy,
IPv6 clients by their /64, and uvicorn itself kept from believing the header on its own."""

import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.recommender.http.clients import client_address, networks
from services.recommender.http.timeouts import server_config
from tests.ports import free_port
from tests.services.recommender.conftest import api_for

PROXIES = networks("10.0.0.0/8, 2001:db8:ffff::/48")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.1", ["203.0.113.7"], "198.51.100.1"),  # not a proxy: the header is anyone's to write
        ("10.0.0.5", ["203.0.113.7"], "203.0.113.7"),
        ("10.0.0.5", ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),  # left of the last outside hop: the client's own words
        ("10.0.0.5", ["6.6.6.6, 203.0.113.7, 10.1.1.1"], "203.0.113.7"),  # through two proxies
        ("10.0.0.5", ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),  # the header repeated: read in order
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["not-an-address"], "10.0.0.5"),
        ("10.0.0.5", ["203.0.113.7:5123"], "203.0.113.7"),  # proxies that add the client's port
        ("10.0.0.5", ["[2001:db8:1:2::9]:443"], "2001:db8:1:2::/64"),
        ("10.0.0.5", ["203.0.113.7:5123, 10.1.1.1:80"], "203.0.113.7"),
        ("2001:db8:ffff::1", ["2001:db8:1:2:3:4:5:6"], "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", [], "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", [], "2001:db8:1:2::/64"),
        ("::ffff:10.0.0.5", ["203.0.113.9"], "203.0.113.9"),  # an IPv4 proxy seen on a dual-stack socket
        ("testclient", [], "testclient"),
    ],
)
def test_client_address(peer, forwarded, client):
    assert client_address(peer, forwarded, PROXIES) == client


def test_without_trusted_proxies_the_header_is_never_read():
    assert client_address("10.0.0.5", ["203.0.113.7"], ()) == "10.0.0.5"


def _limited(api_settings, shop, proxies: str = ""):
    settings = api_settings.model_copy(update={"api_client_requests_per_s": 1.0, "trusted_proxies": proxies})  # bursts of 4
    return api_for(settings, shop)[0]


def _spent(client: TestClient, forwarded: list[str]) -> list[int]:
    return [client.get("/v1/products/bag-1/image", headers={"X-Forwarded-For": f}).status_code for f in forwarded]


@pytest.mark.kafka
@pytest.mark.redis
def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(api_settings, shop):
    app = _limited(api_settings, shop, "10.0.0.0/8")
    with TestClient(app, client=("10.0.0.5", 40000)) as proxy:
        assert _spent(proxy, ["203.0.113.1"] * 5) == [200] * 4 + [429]
        assert _spent(proxy, ["6.6.6.6, 203.0.113.2"]) == [200], "another client behind the proxy"
        assert _spent(proxy, [f"{n}.{n}.{n}.{n}, 203.0.113.1" for n in range(1, 4)]) == [429] * 3, (
            "what the client writes to the left changes nothing"
        )
    with TestClient(app, client=("198.51.100.7", 40000)) as outsider:
        assert _spent(outsider, [f"203.0.113.{n}" for n in range(10, 15)]) == [200] * 4 + [429]


@pytest.mark.kafka
@pytest.mark.redis
def test_ipv6_clients_are_counted_by_their_64(api_settings, shop):
    app = _limited(api_settings, shop)
    for n in range(4):
        with TestClient(app, client=(f"2001:db8:1:2::{n + 1:x}", 40000)) as client:
            assert _spent(client, [""]) == [200]
    with TestClient(app, client=("2001:db8:1:2:abcd::1", 40000)) as same_64:
        assert _spent(same_64, [""]) == [429]
    with TestClient(app, client=("2001:db8:1:3::1", 40000)) as next_64:
        assert _spent(next_64, [""]) == [200]


@pytest.mark.kafka
@pytest.mark.redis
def test_served_as_serve_serves_it_uvicorn_does_not_believe_the_header_either(api_settings, shop):
    # uvicorn's default trusts X-Forwarded-For from 127.0.0.1: every request would be a new client.
    settings = api_settings.model_copy(update={"api_host": "127.0.0.1", "api_port": free_port()})
    server = uvicorn.Server(server_config(_limited(settings, shop), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        url = f"http://127.0.0.1:{settings.api_port}/v1/products/bag-1/image"
        codes = [httpx.get(url, headers={"X-Forwarded-For": f"203.0.113.{n}"}, timeout=10).status_code for n in range(5)]
        assert codes == [200] * 4 + [429]
    finally:
        server.should_exit = True
        thread.join(10)
