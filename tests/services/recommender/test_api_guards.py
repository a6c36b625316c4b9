"""Who may read a shopper's recommendations and post their clicks, and how fast: shopper tokens,
rate limits (429 with Retry-After), stream caps, and no redirect to an image the embedder refused."""

import json
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.recommender.http.tokens import mint
from services.vectors.store import StoredProduct
from tests.services.recommender.conftest import PUBLISHABLE_KEY, SECRET_KEY, api_for, uvicorn_serving

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
TOKEN_SECRET = "shopper-token-secret-for-tests"


def _client(settings, shop):
    return TestClient(api_for(settings, shop)[0])


@pytest.fixture
def guarded(api_settings, shop):
    settings = api_settings.model_copy(
        update={
            "shopper_token_secret": SecretStr(TOKEN_SECRET),
            "api_client_events_per_s": 2.0,
        }
    )
    with _client(settings, shop) as client:
        yield client


def _token(user: str, ttl: float = 600) -> str:
    return mint(TOKEN_SECRET.encode(), user, int(time.time() + ttl))


def _click(user: str) -> dict:
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "user_id": user,
        "product_id": "bag-1",
        "kind": "click",
        "occurred_at": datetime.now(UTC).isoformat(),
        "session_id": f"s-{user}",
    }


def test_reading_a_shoppers_recommendations_needs_their_token_or_a_secret_key(guarded, shop):
    shop.click("ann", "bag-1")
    url = "/v1/users/ann/recommendations"
    missing = guarded.get(url)
    assert missing.status_code == 401 and "shopper token is required" in missing.json()["detail"]
    assert guarded.get(url, headers={"X-Shopper-Token": _token("bob")}).status_code == 403
    expired = guarded.get(url, headers={"X-Shopper-Token": _token("ann", ttl=-5)})
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    too_long = guarded.get(url, headers={"X-Shopper-Token": _token("ann", ttl=10 * 86400)})
    assert too_long.status_code == 403 and "SHELFSIGHT_SHOPPER_TOKEN_MAX_TTL_S" in too_long.json()["detail"]
    assert guarded.get(url, headers={"X-Shopper-Token": _token("ann")}).status_code == 200
    assert guarded.get(url, headers={"X-API-Key": SECRET_KEY}).status_code == 200
    assert guarded.get(url, headers={"X-API-Key": PUBLISHABLE_KEY}).status_code == 401, "a publishable key is public"
    stream = guarded.get(f"{url}/stream", params={"token": _token("bob")})
    assert stream.status_code == 403


def test_widget_clicks_need_the_shoppers_token(guarded):
    headers = {"X-API-Key": PUBLISHABLE_KEY}
    assert guarded.post("/v1/events", json=[_click("ann")], headers=headers).status_code == 401
    forged = guarded.post("/v1/events", json=[_click("ann"), _click("bob")], headers={**headers, "X-Shopper-Token": _token("ann")})
    assert forged.status_code == 403, "one token speaks for one shopper"
    assert guarded.post("/v1/events", json=[_click("ann")], headers={**headers, "X-Shopper-Token": _token("ann")}).status_code == 202
    assert guarded.post("/v1/events", json=[_click("cat")], headers={"X-API-Key": SECRET_KEY}).status_code == 202


def test_publishable_posts_are_rate_limited_per_address_with_retry_after(guarded):
    headers = {"X-API-Key": PUBLISHABLE_KEY, "X-Shopper-Token": _token("ann")}
    burst = guarded.post("/v1/events", json=[_click("ann") for _ in range(8)], headers=headers)  # 2/s, bursts of 8
    assert burst.status_code == 202
    flooded = guarded.post("/v1/events", json=[_click("ann") for _ in range(4)], headers=headers)
    assert flooded.status_code == 429
    assert 1 <= int(flooded.headers["Retry-After"]) <= 2 and "SHELFSIGHT_API_CLIENT_EVENTS_PER_S" in flooded.json()["detail"]
    assert guarded.post("/v1/events", json=[_click("cat") for _ in range(20)], headers={"X-API-Key": SECRET_KEY}).status_code == 202, (
        "a store's back end with a secret key is not limited by address"
    )
    time.sleep(1.1)
    assert guarded.post("/v1/events", json=[_click("ann")], headers=headers).status_code == 202, "the bucket refills"


def test_live_streams_are_capped_per_address(api_settings, shop):
    import httpx

    settings = api_settings.model_copy(update={"shopper_token_secret": SecretStr(TOKEN_SECRET), "api_client_streams": 1})
    with uvicorn_serving(api_for(settings, shop)[0]) as base:
        url = f"{base}/v1/users/ann/recommendations/stream"
        with httpx.stream("GET", url, params={"token": _token("ann")}, timeout=20) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)  # it is open and has answered
            second = httpx.get(url, params={"token": _token("ann")}, timeout=20)
            assert second.status_code == 429 and "SHELFSIGHT_API_CLIENT_STREAMS" in second.json()["detail"]
            assert int(second.headers["Retry-After"]) >= 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # closed: the address may open one again
            with httpx.stream("GET", url, params={"token": _token("ann")}, timeout=20) as again:
                if again.status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("the stream slot was not given back")


def _linked_bag(product_id: str, dims: int, **image: str) -> StoredProduct:
    """A product without a picture of its own, linking to ``image_url`` (and why it was refused, if it was)."""
    vector = np.ones(dims) / np.sqrt(dims)
    payload = {"title": "t", "category": "Bag", "price": 1.0, "currency": "EUR", "in_stock": True, "delisted": False}
    return StoredProduct(product_id, {"fused": vector.tolist()}, {**payload, "listed_ts": 0.0, "has_image": False, **image})


def test_no_redirect_to_an_image_the_embedder_refused(api_settings, shop):
    dims = len(next(iter(shop.vectors.values())))
    refusal = "169.254.169.254 resolves to a non-public address (169.254.169.254); refused"
    shop.store.upsert(
        [
            _linked_bag("refused-1", dims, image_url="http://169.254.169.254/latest/meta-data", image_error=refusal),
            _linked_bag("linked-1", dims, image_url="https://cdn.example.com/bag.jpg"),
        ]
    )
    with _client(api_settings, shop) as client:
        refused = client.get("/v1/products/refused-1/image", follow_redirects=False)
        assert refused.status_code == 404 and "non-public address" in refused.json()["detail"]
        linked = client.get("/v1/products/linked-1/image", follow_redirects=False)
        assert linked.status_code == 302 and linked.headers["location"] == "https://cdn.example.com/bag.jpg"


def test_a_batch_larger_than_the_burst_is_refused_and_says_how_big_one_may_be(guarded):
    headers = {"X-API-Key": PUBLISHABLE_KEY, "X-Shopper-Token": _token("ann")}
    too_big = guarded.post("/v1/events", json=[_click("ann") for _ in range(9)], headers=headers)  # burst: 4 × 2/s = 8
    assert too_big.status_code == 413, "a full bucket must not let a batch over the burst through for nothing"
    detail = too_big.json()["detail"]
    assert "send at most 8 events per request" in detail and "SHELFSIGHT_API_CLIENT_EVENTS_PER_S" in detail
    assert guarded.post("/v1/events", json=[_click("ann") for _ in range(8)], headers=headers).status_code == 202


def test_events_are_charged_before_they_are_validated_invalid_ones_too(guarded):
    headers = {"X-API-Key": PUBLISHABLE_KEY, "X-Shopper-Token": _token("ann")}
    invalid = [{**_click("ann"), "kind": "like"} for _ in range(8)]
    assert guarded.post("/v1/events", json=invalid, headers=headers).status_code == 422
    after = guarded.post("/v1/events", json=[_click("ann")], headers=headers)
    assert after.status_code == 429, "the invalid batch spent the address's burst"
    assert guarded.post("/v1/events", content=b"{not json", headers=headers).status_code == 429, "junk costs too"


def test_get_routes_are_rate_limited_per_address_but_not_for_secret_keys(api_settings, shop):
    settings = api_settings.model_copy(update={"api_client_requests_per_s": 1.0})  # bursts of 4
    with _client(settings, shop) as client:
        assert client.get("/v1/users/ann/recommendations").status_code == 200
        assert client.get("/v1/products/bag-1/similar").status_code == 200
        assert client.get("/v1/products/bag-1/image").status_code == 200
        assert client.get("/v1/users/ann/recommendations", params={"k": 0}).status_code == 422  # counted too
        limited = client.get("/v1/products/bag-2/image")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "SHELFSIGHT_API_CLIENT_REQUESTS_PER_S" in limited.json()["detail"]
        assert client.get("/v1/users/ann/recommendations/stream").status_code == 429, "stream connects count too"
        assert client.get("/v1/users/ann/recommendations", headers={"X-API-Key": SECRET_KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200, "health checks are not limited"
        assert 'reason="rate_limited"' in client.get("/metrics").text


@pytest.mark.parametrize("token", ["².x", "1².x", "¹²³.abc", "١٢٣٤٥.x"])
def test_a_token_with_non_ascii_digits_is_refused_not_a_server_error(guarded, token):
    answer = guarded.get("/v1/users/ann/recommendations", headers={"X-Shopper-Token": token.encode("latin-1", "replace")})
    assert answer.status_code == 403 and answer.json()["detail"] == "malformed shopper token"
    stream = guarded.get("/v1/users/ann/recommendations/stream", params={"token": token})
    assert stream.status_code == 403 and stream.json()["detail"] == "malformed shopper token"


def test_live_streams_are_capped_per_shopper(api_settings, shop):
    import httpx

    settings = api_settings.model_copy(update={"shopper_token_secret": SecretStr(TOKEN_SECRET), "api_user_streams": 1})
    with uvicorn_serving(api_for(settings, shop)[0]) as base:
        url = f"{base}/v1/users/ann/recommendations/stream"
        with httpx.stream("GET", url, params={"token": _token("ann")}, timeout=20) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            next(lines)
            with httpx.stream("GET", url, params={"token": _token("ann")}, timeout=20) as second:  # a 200 would never end
                assert second.status_code == 429 and "SHELFSIGHT_API_USER_STREAMS" in json.loads(second.read())["detail"]
            other = f"{base}/v1/users/bob/recommendations/stream"
            with httpx.stream("GET", other, params={"token": _token("bob")}, timeout=20) as bobs:
                assert bobs.status_code == 200, "another shopper from the same address may stream"


def test_a_live_stream_ends_when_its_shopper_token_expires(api_settings, shop):
    import httpx

    settings = api_settings.model_copy(update={"shopper_token_secret": SecretStr(TOKEN_SECRET)})
    with uvicorn_serving(api_for(settings, shop)[0]) as base:
        started = time.monotonic()
        url = f"{base}/v1/users/ann/recommendations/stream"
        with httpx.stream("GET", url, params={"token": _token("ann", ttl=3)}, timeout=10) as stream:
            assert stream.status_code == 200
            lines = list(stream.iter_lines())  # read to the end: the server must close it
        assert "event: recommendations" in lines and "event: expired" in lines
        assert time.monotonic() - started < 8, "closed when the token expired, not at some keep-alive"
        again = httpx.get(url, params={"token": _token("ann", ttl=-1)}, timeout=10)
        assert again.status_code == 403 and "expired" in again.json()["detail"]


def test_the_shops_key_budget_is_spent_only_by_events_whose_tokens_hold(api_settings, shop):
    """The publishable key is public: posting junk with it and no token from many addresses must not
    use up the key's shared budget, or every real shopper's click would get a 429."""
    settings = api_settings.model_copy(
        update={"shopper_token_secret": SecretStr(TOKEN_SECRET), "api_key_events_per_s": 2.0, "api_client_events_per_s": 1000.0}
    )
    with _client(settings, shop) as client:
        anonymous = {"X-API-Key": PUBLISHABLE_KEY}
        for _ in range(5):  # 40 events in all: five bursts of the key's budget (8)
            assert client.post("/v1/events", json=[_click("ann") for _ in range(8)], headers=anonymous).status_code == 401
        real = client.post("/v1/events", json=[_click("bob")], headers={**anonymous, "X-Shopper-Token": _token("bob")})
        assert real.status_code == 202, real.text


def test_an_event_field_of_any_json_type_is_a_4xx(guarded):
    headers = {"X-API-Key": SECRET_KEY}
    for body in ({"event": []}, {"event": {}}, [{"event": None}], {"event": 1.5}):
        answer = guarded.post("/v1/events", json=body, headers=headers)
        assert answer.status_code == 422, (body, answer.status_code, answer.text[:200])
