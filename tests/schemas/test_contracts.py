"""The contracts accept what the README promises and refuse everything else."""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas import (
    LIMITS,
    ClickEvent,
    ContractError,
    ProductIndexed,
    ProductListed,
    RecommendationRequest,
    RecommendationResponse,
    decode,
    encode,
)

PRODUCT = {
    "product_id": "sku-1",
    "title": "Red running shoe",
    "description": "Light and fast.",
    "price": 59.9,
    "currency": "EUR",
    "in_stock": True,
    "category_hint": "Sneakers",
    "attributes": {"colour": "red"},
    "image": base64.b64encode(b"\x89PNG fake bytes").decode(),
    "listed_at": "2026-11-27T10:00:00Z",
}
INDEXED = {
    "product_id": "sku-1",
    "title": "Red running shoe",
    "price": 59.9,
    "currency": "EUR",
    "in_stock": True,
    "category": "Sneaker",
    "confidence": 0.93,
    "vectors": {"fused": [0.6, 0.8], "image": [1.0, 0.0]},
    "model_version": "fmnist-effnet-lite0@1",
    "listed_at": "2026-11-27T10:00:00Z",
    "indexed_at": "2026-11-27T10:00:01Z",
}
CLICK = {
    "event_id": "e-1",
    "user_id": "u-1",
    "product_id": "sku-1",
    "kind": "add_to_cart",
    "occurred_at": "2026-11-27T10:00:00+01:00",
    "session_id": "s-1",
    "context": {"widget": "home", "position": 3},
}
REQUEST = {
    "request_id": "r-1",
    "user_id": "u-1",
    "k": 8,
    "filters": {"category": "Sneaker", "min_price": 10, "max_price": 100.5},
    "requested_at": "2026-11-27T10:00:00Z",
}
RESPONSE = {
    "request_id": "r-1",
    "user_id": "u-1",
    "items": [{"product_id": "sku-2", "score": 0.8, "reason": "looks like Red running shoe you viewed"}],
    "generated_at": "2026-11-27T10:00:00Z",
}
CASES = [
    (ProductListed, PRODUCT, "sku-1"),
    (ProductIndexed, INDEXED, "sku-1"),
    (ClickEvent, CLICK, "u-1"),
    (RecommendationRequest, REQUEST, "u-1"),
    (RecommendationResponse, RESPONSE, "u-1"),
]


def _bytes(data: dict[str, object]) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(("contract", "data", "key"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_round_trip_and_key(contract, data, key):
    event = decode(contract, _bytes(data))
    message = encode(event)
    assert message.key == key.encode()
    assert decode(contract, message.value) == event
    assert dict(message.headers)["schema"] == contract.__name__.encode()


@pytest.mark.parametrize(("contract", "data", "key"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_unknown_fields_and_versions_are_refused(contract, data, key):
    with pytest.raises(ContractError, match=r"(?i)extra inputs"):
        decode(contract, _bytes({**data, "surprise": 1}))
    with pytest.raises(ContractError, match="schema_version"):
        decode(contract, _bytes({**data, "schema_version": 2}))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"product_id": ""}, "product_id"),
        ({"product_id": "has space"}, "product_id"),
        ({"product_id": "x" * (LIMITS.id_chars + 1)}, "product_id"),
        ({"title": "t" * (LIMITS.title_chars + 1)}, "title"),
        ({"title": "bell\x07"}, "title"),
        ({"description": "d" * (LIMITS.description_chars + 1)}, "description"),
        ({"price": -1}, "price"),
        ({"price": "12.00"}, "price"),
        ({"currency": "eur"}, "currency"),
        ({"listed_at": "2026-11-27T10:00:00"}, "listed_at"),
        ({"attributes": {f"k{i}": "v" for i in range(LIMITS.attributes + 1)}}, "attributes"),
        ({"attributes": {"k": "v" * (LIMITS.attribute_value_chars + 1)}}, "attributes"),
        ({"image": "not base64!"}, "image"),
        ({"image": ""}, "image"),
        ({"image_url": "https://cdn.example/x.jpg"}, "give either image or image_url"),
        ({"image": None, "image_url": "ftp://x/y.jpg"}, "image_url"),
    ],
)
def test_product_listed_refuses_bad_fields(change, field):
    with pytest.raises(ContractError, match=field):
        decode(ProductListed, _bytes({**PRODUCT, **change}))


def test_oversize_image_is_refused_with_the_limit():
    big = base64.b64encode(b"\0" * (LIMITS.image_bytes + 1)).decode()
    with pytest.raises(ContractError, match=f"at most {LIMITS.image_bytes}"):
        decode(ProductListed, _bytes({**PRODUCT, "image": big}))


def test_oversize_message_is_refused_before_parsing():
    with pytest.raises(ContractError, match="limit"):
        decode(ProductListed, b" " * (LIMITS.event_bytes + 1))


def test_malformed_json_is_a_contract_error():
    with pytest.raises(ContractError, match="JSON"):
        decode(ClickEvent, b'{"event_id": "e-1",')


def test_text_only_product_is_valid():
    product = decode(ProductListed, _bytes({k: v for k, v in PRODUCT.items() if k != "image"}))
    assert product.image is None and product.image_url is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vectors": {"image": [1.0]}}, "fused"),
        ({"vectors": {"fused": []}}, "empty"),
        ({"vectors": {"fused": [1.0] * (LIMITS.vector_dims + 1)}}, "dimensions"),
        ({"vectors": {"fused": ["NaN"]}}, "vectors"),
        ({"confidence": 1.5}, "confidence"),
        ({"indexed_at": "2026-11-27T09:00:00Z"}, "before listed_at"),
    ],
)
def test_product_indexed_refuses_bad_fields(change, field):
    with pytest.raises(ContractError, match=field):
        decode(ProductIndexed, _bytes({**INDEXED, **change}))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "like"}, "kind"),
        ({"context": {"position": -1}}, "position"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"user_id": None}, "user_id"),
    ],
)
def test_click_refuses_bad_fields(change, field):
    with pytest.raises(ContractError, match=field):
        decode(ClickEvent, _bytes({**CLICK, **change}))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": LIMITS.recommendations + 1}, "k"),
        ({"filters": {"min_price": 10, "max_price": 5}}, "min_price is greater"),
        ({"reply_topic": "bad topic!"}, "reply_topic"),
    ],
)
def test_request_refuses_bad_fields(change, field):
    with pytest.raises(ContractError, match=field):
        decode(RecommendationRequest, _bytes({**REQUEST, **change}))


def test_request_defaults_to_in_stock_and_the_shared_reply_topic():
    request = decode(RecommendationRequest, _bytes({k: v for k, v in REQUEST.items() if k != "filters"}))
    assert request.filters.in_stock is True
    assert request.reply_topic == "recommendations.responses"


def test_error_response_carries_no_items():
    error = {"code": "invalid_request", "message": "k must be at most 100"}
    assert decode(RecommendationResponse, _bytes({**RESPONSE, "items": [], "error": error})).error.code == "invalid_request"
    with pytest.raises(ContractError, match="no items"):
        decode(RecommendationResponse, _bytes({**RESPONSE, "error": error}))


def test_error_report_is_one_line_naming_each_field():
    with pytest.raises(ContractError) as caught:
        decode(ProductListed, _bytes({**PRODUCT, "price": -1, "currency": "x", "title": ""}))
    assert "\n" not in caught.value.reason
    for field in ("price", "currency", "title"):
        assert field in caught.value.reason


UPDATE = {"event": "product.updated", "product_id": "sku-1", "in_stock": False, "updated_at": "2026-11-27T11:00:00Z"}


def test_products_topic_reads_listings_and_updates():
    from schemas import ProductUpdated
    from schemas.topics import PRODUCTS_LISTED

    assert isinstance(decode(PRODUCTS_LISTED.reader, _bytes(PRODUCT)), ProductListed)
    assert isinstance(decode(PRODUCTS_LISTED.reader, _bytes({**PRODUCT, "event": "product.listed"})), ProductListed)
    update = decode(PRODUCTS_LISTED.reader, _bytes(UPDATE))
    assert isinstance(update, ProductUpdated) and encode(update).key == b"sku-1"
    with pytest.raises(ContractError, match=r"product.sold"):
        decode(PRODUCTS_LISTED.reader, _bytes({**UPDATE, "event": "product.sold"}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"in_stock": None}, "changes in_stock, price, or delists"),
        ({"price": 10.0}, "price and currency together"),
        ({"updated_at": "2026-11-27T11:00:00"}, "timezone"),
    ],
)
def test_updates_must_change_something_valid(change, message):
    from schemas.topics import PRODUCTS_LISTED

    with pytest.raises(ContractError, match=message):
        decode(PRODUCTS_LISTED.reader, _bytes({**UPDATE, **change}))


def _time_fields(data: dict[str, object]) -> list[str]:
    return [name for name in data if name.endswith("_at")]


@pytest.mark.parametrize(("contract", "data", "key"), CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "before 2000-01-01"),  # a Unix time of -1: 1969
        ("1999-12-31T23:59:59Z", "before 2000-01-01"),
        ((datetime.now(UTC) + timedelta(minutes=10)).isoformat(), "in the future"),
    ],
    ids=["unix-minus-one", "1999", "ten-minutes-ahead"],  # fixed ids: every xdist worker collects the same tests
)
def test_every_event_time_is_bounded(contract, data, key, value, reason):
    for name in _time_fields(data):
        with pytest.raises(ContractError, match=f"{name}: must not be .*{reason}"):
            decode(contract, _bytes({**data, name: value}))
    decode(contract, _bytes({**data, **{n: datetime.now(UTC).isoformat() for n in _time_fields(data)}}))


def test_deeply_nested_json_is_a_contract_error():
    hostile = b'{"event_id": "e-1", "context": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ContractError, match="recursion limit"):
        decode(ClickEvent, hostile)
