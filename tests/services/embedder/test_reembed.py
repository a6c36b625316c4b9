"""`shelfsight reembed` against a running `serve`: real Kafka, Redis and embedded Qdrant shards.

A live catalogue is re-embedded while requests flow and products are listed; the re-embed is
SIGKILLed mid-way and resumed; the catalogue is switched, rolled back and switched again."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from models.checkpoint import read_card
from schemas.topics import PRODUCTS_INDEXED, PRODUCTS_LISTED
from services.bus.consume import committed_offsets, read_all
from services.demo.catalogue import catalogue
from services.embedder.versions import slug
from services.embedder.worker import GROUP_ID
from services.vectors.edge import EdgeProductStore
from tests.ports import free_port
from tests.services.embedder.conftest import publish_lines, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

DIMS = {"image": 256, "text": 256, "fused": 256}  # the small checkpoint's


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


def _wait(check, timeout: float, what: str, process=None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            assert process.poll() is None, log.read_text()[-3000:] if log else "serve died"
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s" + (f": {log.read_text()[-2000:]}" if log else ""))


class Traffic:
    """Shoppers asking for recommendations and look-alikes the whole time; every answer kept."""

    def __init__(self, url: str, product_ids: list[str]) -> None:
        self.url, self.ids = url, product_ids
        self.answers: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.08):  # about 12 a second: under the API's 20 per client address
            path = f"/v1/users/shopper-{i % 7}/recommendations" if i % 2 else f"/v1/products/{self.ids[i % len(self.ids)]}/similar"
            status, body = _get(self.url + path)
            self.answers.append((status, body.get("model_version")))
            i += 1


def _store(path: Path) -> EdgeProductStore:
    store = EdgeProductStore(path)
    store.ensure_collection(DIMS)
    return store


def _more(count: int, name: str) -> list[dict]:
    """Products of their own (the demo catalogue names products by photo, whatever the seed)."""
    return [{**p, "product_id": f"{name}-{i}"} for i, p in enumerate(catalogue(count, seed=len(name)))]


def _delist(product_id: str) -> dict:
    return {"event": "product.updated", "product_id": product_id, "delisted": True, "updated_at": "2026-11-30T10:00:00Z"}


def test_reembed_switches_rolls_back_and_switches_again_while_serving(kafka, small_checkpoint, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": kafka.topic_prefix,
        "SHELFSIGHT_MODEL_DIR": str(small_checkpoint),
        "SHELFSIGHT_MIRROR_AVERAGE": "false",
        "SHELFSIGHT_QDRANT_PATH": str(tmp_path / "qdrant" / "products"),
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_DEVICE": "cpu",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
        "SHELFSIGHT_STATE_SECRET": "test-state-secret-0001",
        "SHELFSIGHT_REDIS_PREFIX": f"reembed-{port}:",
        "SHELFSIGHT_EMBEDDER_BATCH_SIZE": "8",
        "SHELFSIGHT_CATALOGUE_POLL_S": "0.5",
        "SHELFSIGHT_CONSUMER_SESSION_TIMEOUT_S": "6",  # the resumed run waits this long for the killed one's partitions
    }
    url = f"http://127.0.0.1:{port}"
    base = read_card(small_checkpoint).model_version
    new = base + "+mirror"  # the same weights, pictures seen with their mirror images: other vectors
    new_group = kafka.group(f"{GROUP_ID}-{slug(new)}")
    listed_topic = kafka.topic(PRODUCTS_LISTED.name)

    products = list(catalogue(120, seed=7))
    gone = [p["product_id"] for p in products[:3]]
    publish_lines(kafka, [*products, *(_delist(g) for g in gone)])
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([sys.executable, "-m", "services.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"))
    reembed = [sys.executable, "-m", "services.cli", "reembed"]
    traffic = Traffic(url, [p["product_id"] for p in products[3:]])

    def serving(version: str) -> bool:
        status, health = _get(f"{url}/healthz")
        return status == 200 and health.get("model_version") == version

    def run(*args: str) -> None:
        done = subprocess.run([*reembed, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    try:
        _wait(lambda: serving(base), 180, "serve did not come up", serve, log)
        wait_committed(kafka, timeout=120)
        traffic.thread.start()

        # Re-embed; killed once it has done some of the catalogue, and resumed.
        first = subprocess.Popen([*reembed, "--model", str(small_checkpoint), "--mirror-average"], env=env, stderr=log.open("ab"))
        _wait(lambda: sum(done for done, _ in committed_offsets(kafka, listed_topic, new_group).values()) >= 16, 180, "no progress")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        resumed_at = sum(done for done, _ in committed_offsets(kafka, listed_topic, new_group).values())
        assert resumed_at < len(products) + len(gone), "the kill should land mid-way"
        during = _more(6, "during")  # listed while the re-embed runs: both versions get them
        publish_lines(kafka, during)
        run("--model", str(small_checkpoint), "--mirror-average")
        _wait(lambda: serving(new), 60, "serve did not follow the switch", serve, log)

        after = _more(4, "after")  # listed while the new version is live
        publish_lines(kafka, after)
        run("--rollback")
        _wait(lambda: serving(base), 60, "serve did not follow the rollback", serve, log)
        run("--model", str(small_checkpoint), "--mirror-average")
        _wait(lambda: serving(new), 60, "serve did not follow the second switch", serve, log)
        _wait(lambda: len(traffic.answers) > 50, 60, "too few answers")
    finally:
        traffic.stop.set()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.read_text()[-2000:]
    traffic.thread.join(10)

    failed = [a for a in traffic.answers if a[0] != 200]
    assert not failed, f"{len(failed)} of {len(traffic.answers)} requests failed: {failed[:3]}"
    runs = [v for i, (_, v) in enumerate(traffic.answers) if i == 0 or v != traffic.answers[i - 1][1]]
    assert set(runs) <= {base, new} and len(runs) <= 4, f"each answer from one version, in switch order: {runs}"

    everything = [p["product_id"] for p in [*products, *during, *after]]
    for collection, version in (("products", base), (f"products-{slug(new)}", new)):
        store = _store(tmp_path / "qdrant" / collection)
        try:
            stored = store.get(everything, fields=("delisted", "model_version"))
            assert store.count() == len(everything) == len(stored), f"{collection}: every product once"
            assert {p.product_id for p in stored if p.payload["delisted"]} == set(gone), collection
            assert {p.payload["model_version"] for p in stored} == {version}
        finally:
            store.close()
    latest = {m.key: m.value for m in read_all(kafka, kafka.topic(PRODUCTS_INDEXED.name), expected=10_000, timeout=3)}
    live = set(everything) - set(gone)
    assert {k for k, v in latest.items() if v} == live, "products.indexed: every live product, no delisted one"
    assert {json.loads(latest[k])["model_version"] for k in live} == {new}, "the profiles worker's copy moved to the new space"
