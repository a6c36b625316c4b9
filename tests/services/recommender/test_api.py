"""The HTTP API: recommendations, similar products, images, the event intake and its guards."""

import json
import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from schemas import RecommendationResponse
from schemas.topics import CLICKS, PRODUCTS_LISTED
from services.bus.tail import tail
from tests.services.recommender.conftest import PUBLISHABLE_KEY, SECRET_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
def client(api):
    app, _ = api
    with TestClient(app) as c:
        yield c


def _click(user="gus", product="bag-1", kind="click", **extra):
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "user_id": user,
        "product_id": product,
        "kind": kind,
        "occurred_at": datetime.now(UTC).isoformat(),
        "session_id": "s-gus",
        **extra,
    }


def test_recommendations_follow_the_contract_and_the_filters(client, shop):
    shop.click("gus", "coat-2", "click")
    answer = client.get("/v1/users/gus/recommendations", params={"k": 4, "category": "Coat", "max_price": 100})
    assert answer.status_code == 200
    body = RecommendationResponse.model_validate_json(answer.text)
    assert body.user_id == "gus" and body.model_version == "test-model" and len(body.items) == 4
    assert all(i.category == "Coat" and i.price <= 100 and i.reason and i.title for i in body.items)
    assert "coat-2" not in {i.product_id for i in body.items}
    assert client.get("/v1/users/gus/recommendations", params={"k": 0}).status_code == 422
    assert client.get("/v1/users/gus/recommendations", params={"k": 101}).status_code == 422
    assert client.get("/v1/users/gus/recommendations", params={"min_price": 9, "max_price": 1}).status_code == 422
    assert client.get("/v1/users/bad%20id!/recommendations").status_code == 422


def test_similar_products_and_their_images(client):
    answer = client.get("/v1/products/sneaker-2/similar", params={"k": 3})
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert len(items) == 3 and all(i["category"] == "Sneaker" for i in items)
    image = client.get(items[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg" and image.content[:2] == b"\xff\xd8"
    assert client.get("/v1/products/nope/similar").status_code == 404
    assert client.get("/v1/products/nope/image").status_code == 404


def test_click_events_need_a_key_and_reach_kafka(client, api_settings):
    events = [_click(), _click(kind="impression", context={"widget": "shelfsight-recs", "position": 1})]
    assert client.post("/v1/events", json=events).status_code == 401
    assert client.post("/v1/events", json=events, headers={"X-API-Key": "wrong"}).status_code == 401
    answer = client.post("/v1/events", json=events, headers={"X-API-Key": PUBLISHABLE_KEY})
    assert answer.status_code == 202 and answer.json() == {"accepted": 2}
    seen = [json.loads(m.value) for m in tail(api_settings, api_settings.topic(CLICKS.name), max_messages=2, idle_timeout=10)]
    assert {e["event_id"] for e in seen} == {e["event_id"] for e in events}


def test_a_posted_click_shapes_the_next_answer_before_the_worker_applies_it(client, shop):
    """No profiles worker runs here: the click is only in Kafka. The next request still knows it
    (read your own writes): the product is not recommended back, and what looks like it leads."""
    before = client.get("/v1/users/newbie/recommendations", params={"k": 6}).json()["items"]
    assert sum(i["category"] == "Coat" for i in before) < 6
    clicked = {**_click(user="newbie", product="coat-4"), "session_id": "s-newbie"}
    assert client.post("/v1/events", json=[clicked], headers={"X-API-Key": SECRET_KEY}).status_code == 202
    after = client.get("/v1/users/newbie/recommendations", params={"k": 6}).json()["items"]
    assert "coat-4" not in {i["product_id"] for i in after}
    assert sum(i["category"] == "Coat" for i in after) >= 3, [(i["product_id"], i["reason"]) for i in after]
    assert shop.sync.llen(shop.keys.recent("newbie")) == 0, "the worker has not applied it: the API remembered it"


def test_product_events_need_a_secret_key(client, api_settings):
    product = {"event": "product.updated", "product_id": "bag-1", "in_stock": False, "updated_at": datetime.now(UTC).isoformat()}
    refused = client.post("/v1/events", json=product, headers={"X-API-Key": PUBLISHABLE_KEY})
    assert refused.status_code == 403
    assert client.post("/v1/events", json=product, headers={"X-API-Key": SECRET_KEY}).status_code == 202
    (message,) = tail(api_settings, api_settings.topic(PRODUCTS_LISTED.name), max_messages=1, idle_timeout=10)
    assert json.loads(message.value)["event"] == "product.updated"


def test_invalid_batches_publish_nothing_and_say_why(client, api_settings):
    events = [_click(), _click(kind="like"), {"nonsense": True}]
    answer = client.post("/v1/events", json=events, headers={"X-API-Key": SECRET_KEY})
    assert answer.status_code == 422
    assert [p["index"] for p in answer.json()["problems"]] == [1, 2]
    assert list(tail(api_settings, api_settings.topic(CLICKS.name), max_messages=1, idle_timeout=2)) == []
    assert client.post("/v1/events", content=b"{not json", headers={"X-API-Key": SECRET_KEY}).status_code == 422
    nested = b"[" * 5_000 + b"]" * 5_000
    answer = client.post("/v1/events", content=nested, headers={"X-API-Key": SECRET_KEY})
    assert answer.status_code == 422 and "recursion limit" in answer.json()["problems"][0]["reason"]
    answer = client.post("/v1/events", json=_click(occurred_at="-1"), headers={"X-API-Key": SECRET_KEY})
    assert answer.status_code == 422 and "before 2000-01-01" in answer.json()["problems"][0]["reason"]
    too_many = [_click() for _ in range(501)]
    assert client.post("/v1/events", json=too_many, headers={"X-API-Key": SECRET_KEY}).status_code in {413, 422}


def test_request_bodies_are_limited(client, api_settings):
    big = json.dumps([_click(context={"widget": "x" * 60})] * 2000).encode()
    assert len(big) > api_settings.api_max_body_bytes
    assert client.post("/v1/events", content=big, headers={"X-API-Key": SECRET_KEY}).status_code == 413

    def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    assert client.post("/v1/events", content=chunks(), headers={"X-API-Key": SECRET_KEY}).status_code == 413


def test_cors_allows_the_storefront_origin_only(client):
    allowed = client.options(
        "/v1/events",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    other = client.options("/v1/events", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_operations_endpoints_and_documentation(client):
    assert client.get("/healthz").json()["healthy"] is True
    client.get("/v1/users/ops/recommendations")
    assert "shelfsight_recommender_requests" in client.get("/metrics").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/users/{user_id}/recommendations",
        "/v1/products/{product_id}/similar",
        "/v1/events",
        "/v1/users/{user_id}/recommendations/stream",
    } <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "<shelfsight-recs" in page.text and PUBLISHABLE_KEY in page.text
    assert "customElements.define" in client.get("/widget/shelfsight-recs.js").text


def test_purchases_need_a_secret_key(client, api_settings):
    bought = _click(user="pam", kind="purchase")
    refused = client.post("/v1/events", json=[_click(user="pam"), bought], headers={"X-API-Key": PUBLISHABLE_KEY})
    assert refused.status_code == 403
    assert refused.json()["problems"] == [
        {"index": 1, "reason": "purchase events need a secret API key (the store's back end); a publishable key sits in a web page"}
    ]
    assert list(tail(api_settings, api_settings.topic(CLICKS.name), max_messages=1, idle_timeout=2)) == [], "none published"
    assert client.post("/v1/events", json=bought, headers={"X-API-Key": SECRET_KEY}).status_code == 202


BAD_FILTERS = [
    {"max_price": "inf"},
    {"min_price": "-inf"},
    {"max_price": "nan"},
    {"min_price": "Infinity"},
    {"max_price": 1e8},
    {"min_price": -1},
    {"category": ""},
]


@pytest.mark.parametrize("route", ["/v1/users/gus/recommendations", "/v1/products/bag-1/similar"])
@pytest.mark.parametrize("bad", BAD_FILTERS)
def test_filters_must_be_finite_and_bounded_like_the_contract(client, route, bad):
    answer = client.get(route, params=bad)
    assert answer.status_code == 422, answer.text[:200]


def test_the_stream_checks_its_filters_the_same_way(served):
    import httpx

    base, _ = served
    for bad in BAD_FILTERS:  # streamed: an accepted one would never end
        with httpx.stream("GET", f"{base}/v1/users/gus/recommendations/stream", params=bad, timeout=10) as answer:
            assert answer.status_code == 422, bad


def test_a_kafka_failure_says_nothing_internal_to_the_client(api_settings, shop, caplog):
    from services.recommender.http.app import build_api

    with TestClient(build_api(_parts_of(api_settings, shop, FailingProducer()))) as client, caplog.at_level("WARNING"):
        answer = client.post("/v1/events", json=[_click()], headers={"X-API-Key": SECRET_KEY})
    assert answer.status_code == 503
    assert "broker-7" not in answer.text and "Kafka" not in answer.text and "send the batch again" in answer.json()["detail"]
    assert any("broker-7.internal" in str(getattr(r, "error", "")) for r in caplog.records), "the details go to the log"


class FailingProducer:
    """Kafka that never acknowledges: what it says names internal hosts."""

    def deliver(self, messages, timeout):  # the Producer's signature
        return ['KafkaError{code=_MSG_TIMED_OUT,val=-192,str="broker-7.internal:9092/7: Local: Message timed out"}']


def _parts_of(settings, shop, producer):
    import redis.asyncio as aioredis

    from services.recommender.http.app import ApiParts
    from services.recommender.http.live import LiveUpdates
    from services.recommender.metrics import RecommenderMetrics

    live = LiveUpdates(aioredis.Redis.from_url(settings.redis_url), shop.keys.updates_channel)
    return ApiParts(settings, shop.engine(), shop.store, producer, live, RecommenderMetrics())
