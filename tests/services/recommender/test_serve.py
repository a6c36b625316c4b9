"""`shelfsight serve` as a process: a part that dies takes the process down (so an orchestrator
restarts it) instead of leaving the API answering behind a green light; SIGKILL mid-indexing
loses nothing."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from schemas.topics import PRODUCTS_INDEXED
from services.bus.tail import end_offsets
from services.bus.topics import delete_topics
from services.demo.catalogue import catalogue
from services.vectors.edge import EdgeProductStore
from tests.ports import free_port
from tests.services.embedder.conftest import publish_lines, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def serve_env(kafka, small_checkpoint, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": kafka.topic_prefix,
        "SHELFSIGHT_MODEL_DIR": str(small_checkpoint),
        "SHELFSIGHT_QDRANT_PATH": str(tmp_path / "qdrant"),
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_DEVICE": "cpu",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
        "SHELFSIGHT_STATE_SECRET": "test-state-secret-0001",
        "SHELFSIGHT_REDIS_PREFIX": f"serve-{port}:",
        "SHELFSIGHT_EMBEDDER_BATCH_SIZE": "16",
    }
    return env, f"http://127.0.0.1:{port}"


def _start(env, log):
    return subprocess.Popen([sys.executable, "-m", "services.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def _healthz(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def _wait_healthy(url, process, log, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        if _healthz(url)[0] == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"serve did not become healthy: {log.read_text()[-2000:]}")


def test_a_dead_embedder_stops_serve_with_an_error(kafka, serve_env, tmp_path):
    env, url = serve_env
    env = {**env, "SHELFSIGHT_EMBEDDER_DELIVERY_TIMEOUT_S": "3"}  # gives up on the missing topic after 3 s, not 30
    log = tmp_path / "serve.log"
    process = _start(env, log)
    try:
        _wait_healthy(url, process, log)
        # products.indexed gone: the embedder cannot deliver its output, and stops on it
        delete_topics(kafka, [kafka.topic(PRODUCTS_INDEXED.name)])
        publish_lines(kafka, list(catalogue(3, seed=1)))
        code = process.wait(150)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    text = log.read_text()
    assert code == 1, text[-2000:]
    assert "embedder failed" in text and "serve stopped because a part failed" in text


def test_sigkill_mid_indexing_then_restart_indexes_everything_once(kafka, serve_env, tmp_path):
    env, url = serve_env
    # Small segments get an index and serve rebuilds it every 40 products: the kill may land
    # mid-build, and the restarted process rebuilds as it indexes the rest.
    env = {
        **env,
        "SHELFSIGHT_QDRANT_INDEXING_THRESHOLD_KB": "20",
        "SHELFSIGHT_INDEX_REBUILD_AFTER": "40",
        "SHELFSIGHT_INDEX_QUIET_S": "0",
        "SHELFSIGHT_INDEX_MAX_WAIT_S": "0",
    }
    products = list(catalogue(150, seed=5))
    publish_lines(kafka, products)
    log = tmp_path / "serve.log"
    first = _start(env, log)
    indexed = kafka.topic(PRODUCTS_INDEXED.name)
    deadline = time.monotonic() + 180
    while sum(end_offsets(kafka, indexed).values()) < 30 and time.monotonic() < deadline:
        assert first.poll() is None, log.read_text()[-2000:]
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert 30 <= sum(end_offsets(kafka, indexed).values()) < 150, "the kill should land mid-indexing"

    second = _start(env, log)
    try:
        _wait_healthy(url, second, log)
        wait_committed(kafka, timeout=240)
        deadline = time.monotonic() + 60
        while (upkeep := _healthz(url)[1].get("index_upkeep", {})).get("builds", 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert upkeep["builds"] >= 1 and upkeep["failures"] == 0, upkeep
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, "SIGTERM is a clean stop"
    store = EdgeProductStore(tmp_path / "qdrant")
    store.ensure_collection({"image": 256, "text": 256, "fused": 256})  # the small checkpoint's
    try:
        assert store.count() == 150, "every product indexed, none twice"
        assert len(store.get([p["product_id"] for p in products])) == 150
        assert store.indexed()[1] > 0, "the restarted serve built the index as it went"
    finally:
        store.close()


def test_an_embedder_and_two_api_processes_share_a_qdrant_server(kafka, serve_env, tmp_path):
    """The scaled layout (docs/scaling.md): the embedder apart, two `serve --no-embedder`
    processes reading the same server collection. Needs a real Qdrant server."""
    qdrant_url = os.environ.get("SHELFSIGHT_TEST_QDRANT_URL")
    if not qdrant_url:
        pytest.skip("no Qdrant server: set SHELFSIGHT_TEST_QDRANT_URL to run the scaled layout against one")
    from qdrant_client import QdrantClient

    env, _ = serve_env
    collection = f"test-serve-{uuid.uuid4().hex[:8]}"
    env = {**env, "SHELFSIGHT_QDRANT_URL": qdrant_url, "SHELFSIGHT_QDRANT_COLLECTION": collection}
    products = list(catalogue(60, seed=7))
    publish_lines(kafka, products)
    log = tmp_path / "scaled.log"
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen([sys.executable, "-m", "services.cli", "embedder"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    ]
    processes += [
        subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "--no-embedder"],
            env={**env, "SHELFSIGHT_API_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )
        for port in ports
    ]
    try:
        wait_committed(kafka, timeout=240)
        assert QdrantClient(url=qdrant_url).count(collection, exact=True).count == 60, "every product indexed once"
        ids = {p["product_id"] for p in products}
        for port, api in zip(ports, processes[1:], strict=True):
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, api, log)
            for product in products[:5]:
                with urllib.request.urlopen(f"{url}/v1/products/{product['product_id']}/similar?k=5", timeout=10) as answer:
                    items = json.loads(answer.read())["items"]
                assert len(items) == 5 and {i["product_id"] for i in items} <= ids - {product["product_id"]}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(60) for process in processes]
        QdrantClient(url=qdrant_url).delete_collection(collection)
    assert codes == [0, 0, 0], log.read_text()[-2000:]


def test_poison_messages_leave_serve_healthy_and_on_the_dead_letter_topics(kafka, serve_env, tmp_path):
    """The drill of the safety review: a request whose contract error quotes a control character
    (it used to kill `serve` and every restart of it), a listing of 1.5 MB of control bytes (its
    dead letter used to be too large to send), then ordinary work, which must still be done."""
    from schemas.topics import PRODUCTS_LISTED, RECOMMENDATION_REQUESTS, RECOMMENDATION_RESPONSES
    from services.bus.consume import wait_caught_up
    from services.recommender.responder import GROUP_ID
    from tests.hostile import dead_lettered, produce

    env, url = serve_env
    log = tmp_path / "serve.log"
    process = _start(env, log)
    try:
        _wait_healthy(url, process, log)
        requests = kafka.topic(RECOMMENDATION_REQUESTS.name)
        listed = kafka.topic(PRODUCTS_LISTED.name)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        poison = [
            (b"u1", b'{"request_id":"r1","user_id":"u1","requested_at":"2026-01-01T00:00:00Z","\\u0001":1}'),
            (b"u1", b'{"request_id":"' + b"\x01" * 1_500_000 + b'"}'),
            (b"u1", json.dumps({"request_id": "r2", "user_id": "u1", "k": 2, "requested_at": now}).encode()),
        ]
        sent = produce(kafka, requests, poison)
        listing = produce(kafka, listed, [(b"p", b"\x01" * 1_500_000)])
        publish_lines(kafka, list(catalogue(3, seed=11)))
        wait_caught_up(kafka, requests, kafka.group(GROUP_ID), timeout=60)
        wait_committed(kafka, timeout=120)
        assert process.poll() is None and _healthz(url)[0] == 200, log.read_text()[-2000:]
        refused = dead_lettered(kafka, kafka.topic(RECOMMENDATION_REQUESTS.dlq), requests)
        assert {(m.partition, m.offset) for m in sent[:2]} <= set(refused)
        assert (listing[0].partition, listing[0].offset) in dead_lettered(kafka, kafka.topic(PRODUCTS_LISTED.dlq), listed)
        from services.bus.tail import tail

        answers = [json.loads(m.value) for m in tail(kafka, kafka.topic(RECOMMENDATION_RESPONSES.name), idle_timeout=3)]
        assert {a["request_id"] for a in answers} == {"r1", "r2"} and any(a["request_id"] == "r2" and a["error"] is None for a in answers)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-2000:]
