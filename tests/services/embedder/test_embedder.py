"""The embedder against the real broker and an embedded Qdrant shard."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from schemas import ProductIndexed
from services.bus.consume import read_all
from services.bus.tail import end_offsets
from services.demo.catalogue import catalogue
from services.vectors.edge import EdgeProductStore
from tests.ports import free_port
from tests.services.embedder.conftest import publish_lines, run_until_committed, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _png(size=(28, 28)) -> str:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _bomb_png() -> str:
    buffer = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buffer, format="PNG")  # 30 MP of nothing, a few KB compressed
    return base64.b64encode(buffer.getvalue()).decode()


def _store(settings) -> EdgeProductStore:
    store = EdgeProductStore(settings.qdrant_path)
    store.ensure_collection({"image": 256, "text": 256, "fused": 256})
    return store


def test_everything_valid_is_searchable_and_everything_else_is_accounted_for(embedder_settings, running_embedder):
    products = list(catalogue(12, seed=1))
    base = {k: v for k, v in products[0].items() if k not in ("image", "product_id")}
    text_only = [{**base, "product_id": f"text-{i}"} for i in range(2)]
    hostile = [
        {**base, "product_id": "truncated", "image": base64.b64encode(base64.b64decode(products[1]["image"])[:40]).decode()},
        {**base, "product_id": "bomb", "image": _bomb_png()},
        {**base, "product_id": "gif", "image": base64.b64encode(b"GIF89a" + b"\0" * 30).decode()},
        {**base, "product_id": "ssrf-loopback", "image_url": "https://127.0.0.1/admin.png"},
        {**base, "product_id": "ssrf-metadata", "image_url": "https://169.254.169.254/latest/meta-data"},
        {**base, "product_id": "ssrf-http", "image_url": "http://example.com/x.png"},
    ]
    invalid = [
        "{not json",
        json.dumps({**base, "product_id": "no-price", "price": None}),
        json.dumps({**base, "product_id": "neg", "price": -1}),
        json.dumps({"event": "product.updated", "product_id": "ghost", "in_stock": False, "updated_at": "2026-11-27T10:00:00Z"}),
    ]
    publish_lines(embedder_settings, [*products, *text_only, *hostile, *invalid])

    embedder = running_embedder()
    valid = len(products) + len(text_only) + len(hostile)
    assert embedder.worker.indexed_total == valid

    store = _store(embedder_settings)
    try:
        assert store.count() == valid
        stored = {p.product_id: p for p in store.get([p["product_id"] for p in [*products, *text_only, *hostile]], with_vectors=True)}
        assert len(stored) == valid
        first = stored[products[0]["product_id"]]
        assert first.payload["title"] == products[0]["title"] and first.payload["price"] == products[0]["price"]
        assert first.payload["category"] and 0 < first.payload["confidence"] <= 1
        assert first.payload["model_version"] == embedder.predictor.model_version
        assert set(first.vectors) == {"image", "text", "fused"} and len(first.vectors["fused"]) == 256
        for pid in ("text-0", "text-1"):
            assert set(stored[pid].vectors) == {"text", "fused"} and stored[pid].payload["image_error"] is None
        errors = {pid: stored[pid].payload["image_error"] for pid in (h["product_id"] for h in hostile)}
        assert errors["truncated"].startswith(("truncated", "undecodable"))
        assert errors["bomb"].startswith("too_many_pixels")
        assert errors["gif"].startswith(("undecodable", "format_not_allowed"))
        assert "non-public address" in errors["ssrf-loopback"] and "non-public address" in errors["ssrf-metadata"]
        assert "scheme 'http' not allowed" in errors["ssrf-http"]
        assert all(set(stored[pid].vectors) == {"text", "fused"} for pid in errors)

        # visually similar: the nearest image neighbours of a photo share its category more often than not
        probe = stored[products[0]["product_id"]]
        hits = store.search(list(probe.vectors["image"]), using="image", limit=3)
        assert hits[0].product_id == probe.product_id
    finally:
        store.close()

    indexed = read_all(embedder_settings, embedder_settings.topic("products.indexed"), expected=valid)
    assert sorted(m.key for m in indexed) == sorted(stored)
    event = ProductIndexed.model_validate_json(next(m.value for m in indexed if m.key == products[0]["product_id"]))
    assert event.vectors["fused"] == pytest.approx(first.vectors["fused"], abs=1e-5)

    letters = read_all(embedder_settings, embedder_settings.topic("products.listed.dlq"), expected=len(invalid))
    reasons = sorted(m.headers["shelfsight-reason"] for m in letters)
    assert len(reasons) == len(invalid)
    assert any("Invalid JSON" in r for r in reasons) and any("price" in r for r in reasons)
    assert any("unknown product" in r for r in reasons)
    assert int(embedder.worker.metrics.dead_letters._value.get()) == len(invalid)


def test_relisting_overwrites_and_updates_change_only_the_payload(embedder_settings, running_embedder):
    product = next(catalogue(1, seed=2))
    publish_lines(
        embedder_settings,
        [
            product,
            {**product, "title": "Renamed boot", "price": 11.0},
            {"event": "product.updated", "product_id": product["product_id"], "in_stock": False, "updated_at": "2026-11-27T10:00:00Z"},
        ],
    )
    running_embedder()
    store = _store(embedder_settings)
    try:
        assert store.count() == 1
        (stored,) = store.get([product["product_id"]])
        assert stored.payload["title"] == "Renamed boot" and stored.payload["price"] == 11.0
        assert stored.payload["in_stock"] is False and stored.payload["availability"] == "out_of_stock"
    finally:
        store.close()
    events = read_all(embedder_settings, embedder_settings.topic("products.indexed"), expected=3)
    assert [json.loads(m.value)["in_stock"] for m in events] == [product["in_stock"], product["in_stock"], False]


def test_each_batch_sees_what_the_batch_before_wrote(embedder_settings):
    """Batches of one: a batch is embedded while the one before is still being written, so an
    update right behind its listing must still find the product (updates run on the writer)."""
    settings = embedder_settings.model_copy(update={"embedder_batch_size": 1})
    products = list(catalogue(6, seed=5))
    lines: list[dict] = []
    for product in products:
        lines += [
            product,
            {
                "event": "product.updated",
                "product_id": product["product_id"],
                "price": 1.5,
                "currency": product["currency"],
                "updated_at": "2026-11-27T10:00:00Z",
            },
        ]
    publish_lines(settings, lines)
    embedder = run_until_committed(settings)
    assert int(embedder.worker.metrics.dead_letters._value.get()) == 0
    store = _store(settings)
    try:
        assert sorted(p.payload["price"] for p in store.get([p["product_id"] for p in products])) == [1.5] * len(products)
    finally:
        store.close()
    events = read_all(settings, settings.topic("products.indexed"), expected=len(lines))
    assert [json.loads(m.value)["price"] for m in events][1::2] == [1.5] * len(products)


def test_delisting_leaves_a_tombstone(embedder_settings, running_embedder):
    product = next(catalogue(1, seed=3))
    publish_lines(
        embedder_settings,
        [
            product,
            {"event": "product.updated", "product_id": product["product_id"], "delisted": True, "updated_at": "2026-11-27T10:00:00Z"},
        ],
    )
    running_embedder()
    events = read_all(embedder_settings, embedder_settings.topic("products.indexed"), expected=2)
    assert events[-1].value == "" and events[-1].key == product["product_id"]
    store = _store(embedder_settings)
    try:
        (stored,) = store.get([product["product_id"]])
        assert stored.payload["delisted"] is True and stored.payload["in_stock"] is False
    finally:
        store.close()


def test_sigkill_mid_run_then_restart_indexes_everything_once(embedder_settings, tmp_path):
    products = list(catalogue(160, seed=4))
    publish_lines(embedder_settings, products)
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": embedder_settings.topic_prefix,
        "SHELFSIGHT_MODEL_DIR": str(embedder_settings.model_dir),
        "SHELFSIGHT_QDRANT_PATH": str(embedder_settings.qdrant_path),
        "SHELFSIGHT_EMBEDDER_METRICS_PORT": "0",
        "SHELFSIGHT_EMBEDDER_BATCH_SIZE": "16",
        "SHELFSIGHT_DEVICE": "cpu",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "embedder.log"
    command = [sys.executable, "-m", "services.cli", "embedder"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    indexed_topic = embedder_settings.topic("products.indexed")
    deadline = time.monotonic() + 120
    produced = 0
    while time.monotonic() < deadline and produced < 40:
        produced = sum(end_offsets(embedder_settings, indexed_topic).values())
        assert first.poll() is None, log.read_text()[-2000:]
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    produced = sum(end_offsets(embedder_settings, indexed_topic).values())
    assert 40 <= produced < 160, f"the kill should land mid-run ({produced} of 160 indexed)"

    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    try:
        wait_committed(embedder_settings, timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-2000:]

    store = _store(embedder_settings)
    try:
        assert store.count() == 160
        assert len(store.get([p["product_id"] for p in products])) == 160
    finally:
        store.close()
    events = read_all(embedder_settings, indexed_topic, expected=1000, timeout=3)
    assert {m.key for m in events} == {p["product_id"] for p in products}
    assert len(events) >= 160  # redelivered batches publish again; compaction keeps the last


def test_image_neighbours_look_alike(embedder_settings, running_embedder):
    products = list(catalogue(80, seed=5))  # 8 real photos per category; the store's own category is the hint
    publish_lines(embedder_settings, products)
    running_embedder()
    store = _store(embedder_settings)
    try:
        same = total = 0
        for product in store.get([p["product_id"] for p in products], with_vectors=True):
            from services.vectors.store import SearchFilters

            hits = store.search(
                list(product.vectors["image"]), using="image", limit=3, filters=SearchFilters(exclude=frozenset({product.product_id}))
            )
            same += sum(h.payload["category_hint"] == product.payload["category_hint"] for h in hits)
            total += len(hits)
    finally:
        store.close()
    # chance is 1 in 10; ImageNet features of real photos do far better even before fine-tuning
    assert same / total > 0.5


# Pairs close in meaning, from stores that are not Fashion-MNIST's: the shipped models never saw these words.
MEANING_PAIRS = [
    ("Science fiction film about a war among the stars", "Space adventure movie with starships and rebels"),
    ("Animated film for children about toys that come alive", "Cartoon movie for kids with talking toys"),
    ("Red leather handbag", "Black leather shoulder bag"),
    ("Oak dining table", "Walnut kitchen table"),
    ("Stainless steel chef knife", "Japanese kitchen knife"),
    ("Jazz vinyl record", "Blues LP record"),
    ("Organic green tea", "Japanese sencha tea"),
    ("Cordless power drill", "Electric screwdriver with battery"),
]


def test_text_only_products_are_placed_by_their_meaning(embedder_settings, running_embedder):
    titles = [title for pair in MEANING_PAIRS for title in pair]
    listed = [
        {"product_id": f"t-{i}", "title": title, "price": 10.0, "currency": "EUR", "listed_at": "2026-11-01T10:00:00+00:00"}
        for i, title in enumerate(titles)
    ]
    publish_lines(embedder_settings, listed)
    running_embedder()
    store = _store(embedder_settings)
    try:
        stored = {p.product_id: p for p in store.get([p["product_id"] for p in listed], with_vectors=True)}
        assert len(stored) == len(titles)
        assert all(set(p.vectors) == {"text", "fused"} for p in stored.values())  # no picture: no image vector
        fused = {tuple(round(x, 5) for x in p.vectors["fused"]) for p in stored.values()}
        assert len(fused) == len(titles), "different titles must never share a vector"
        from services.vectors.store import SearchFilters

        for i in range(len(titles)):
            product = stored[f"t-{i}"]
            (nearest,) = store.search(
                list(product.vectors["fused"]), using="fused", limit=1, filters=SearchFilters(exclude=frozenset({product.product_id}))
            )
            assert nearest.product_id == f"t-{i ^ 1}", f"{titles[i]!r} came nearest to {nearest.payload['title']!r}"
    finally:
        store.close()


def test_metrics_and_health_endpoints(embedder_settings):
    import urllib.request

    from services.embedder.service import build_embedder

    embedder = build_embedder(embedder_settings.model_copy(update={"embedder_metrics_port": 0}))
    assert embedder.ops is None
    embedder.store.close()
    embedder.pool.shutdown()

    port_settings = embedder_settings.model_copy(update={"embedder_metrics_port": free_port()})
    embedder = build_embedder(port_settings)
    try:
        base = f"http://127.0.0.1:{embedder.ops.port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            health = json.loads(response.read())
        assert response.status == 200 and health["healthy"] and health["model_version"] == embedder.predictor.model_version
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
        for name in ("shelfsight_embedder_messages_total", "shelfsight_embedder_batch_seconds_bucket", "shelfsight_embedder_consumer_lag"):
            assert name in text or name.replace("_total", "") in text
    finally:
        embedder.ops.stop()
        embedder.store.close()
        embedder.pool.shutdown()


def test_dimension_mismatch_stops_start_up_with_one_line(embedder_settings):
    from services.embedder.service import build_embedder
    from services.errors import UserError

    other = EdgeProductStore(embedder_settings.qdrant_path)
    other.ensure_collection({"image": 128, "fused": 128})
    other.close()
    with pytest.raises(UserError, match="shelfsight reindex"):
        build_embedder(embedder_settings)


def test_the_embedder_sees_pictures_as_its_checkpoint_chose_unless_told_otherwise(embedder_settings):
    from models.checkpoint import read_card
    from services.embedder.service import load_predictor

    chosen = read_card(embedder_settings.model_dir).mirror_average
    assert load_predictor(embedder_settings).mirror_average == chosen
    for forced in (True, False):
        predictor = load_predictor(embedder_settings.model_copy(update={"mirror_average": forced}))
        assert predictor.mirror_average is forced
        assert predictor.model_version.endswith("+mirror") is forced
