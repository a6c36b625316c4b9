"""`shelfsight reembed` against a running `serve`: real Kafka, Redis and embedded Qdrant shards.

A live catalogue is re-embedded while requests flow and products are listed; the re-embed is
SIGKILLed mid-way and resumed; the catalogue is switched, rolled back and switched again. A
profiles worker applies shoppers' clicks throughout."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from models.checkpoint import read_card
from schemas import ClickEvent, ClickKind, encode
from schemas.experiments import ExperimentSpec, VariantSpec
from schemas.topics import CLICKS, PRODUCTS_INDEXED, PRODUCTS_LISTED
from services.bus.config import producer_config
from services.bus.consume import committed_offsets, read_all, wait_caught_up
from services.bus.producer import Producer
from services.demo.catalogue import catalogue
from services.embedder.versions import slug
from services.embedder.worker import GROUP_ID
from services.experiments.assignment import variant_of
from services.vectors.edge import EdgeProductStore
from state.catalogue import read_alias, write_alias
from state.keys import Keys
from tests.ports import free_port
from tests.services.embedder.conftest import publish_lines, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.slow]

DIMS = {"image": 256, "text": 256, "fused": 256}  # the small checkpoint's


SECRET_KEY = "sk-reembed-test-key-0001"  # the store's back end: its lists enter experiments


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"X-API-Key": SECRET_KEY}), timeout=10) as answer:
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


SHOPPERS = [f"shopper-{n}" for n in range(7)]


class Traffic:
    """Shoppers clicking and asking for recommendations and look-alikes the whole time; every answer kept."""

    def __init__(self, url: str, settings, product_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.url, self.ids = url, product_ids
        self.producer, self.clicks = Producer(producer_config(settings)), settings.topic(CLICKS.name)
        self.answers: list[tuple[int, str | None, str | None]] = []  # (status, model version, phase)
        self.phase: str | None = None  # set while an experiment runs: those answers may be of either version
        self.stop = threading.Event()
        self.error: BaseException | None = None  # a traffic thread that dies must fail the test, not go quiet
        self.thread = threading.Thread(target=self._guarded, daemon=True)

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as error:
            self.error = error
            raise

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(0.08):  # about 12 a second: under the API's 20 per client address
            shopper, product = SHOPPERS[i % len(SHOPPERS)], self.ids[(i * 7) % len(self.ids)]
            path = f"/v1/users/{shopper}/recommendations" if i % 2 else f"/v1/products/{product}/similar"
            # An answer counts as the experiment's when it ran at any moment of it: a request begun
            # just before the experiment stopped may be answered, and recorded, just after.
            began = self.phase
            status, body = _get(self.url + path)
            self.answers.append((status, body.get("model_version"), (self.phase or began) if i % 2 else None))
            if i % 3 == 0:
                self.producer.send(self.clicks, encode(_click(shopper, product, i)))
                self.producer.flush(10)
            i += 1


def _click(shopper: str, product: str, n: int) -> ClickEvent:
    return ClickEvent(
        event_id=f"{shopper}-{n}",
        user_id=shopper,
        product_id=product,
        kind=ClickKind.CLICK,
        occurred_at=datetime.now(UTC),
        session_id=shopper,
    )


def _store(path: Path) -> EdgeProductStore:
    store = EdgeProductStore(path)
    store.ensure_collection(DIMS)
    return store


def _more(count: int, name: str) -> list[dict]:
    """Products of their own (the demo catalogue names products by photo, whatever the seed)."""
    return [{**p, "product_id": f"{name}-{i}"} for i, p in enumerate(catalogue(count, seed=len(name)))]


def _delist(product_id: str) -> dict:
    return {"event": "product.updated", "product_id": product_id, "delisted": True, "updated_at": "2026-11-30T10:00:00Z"}


def _experiments(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "experiments", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _serve_a_variant_from_the_staged_version(env, kafka, url, traffic: Traffic, staged: str, live: str, serve, log) -> list[dict]:  # type: ignore[no-untyped-def]
    """An A/B test of the staged model version against the live one: `serve` opens the staged
    collection (with an embedder of its own), the variant's shoppers get lists made from it and
    the control's from the live one; stopped, `serve` lets go of it for the switch."""
    spec = ExperimentSpec(
        experiment_id="models-1",
        variants=[
            VariantSpec(name="live", share=0.5, ranking="prior"),
            VariantSpec(name="mirror", share=0.5, ranking="prior", model=staged),
        ],
    )
    on_staged = {s for s in SHOPPERS if variant_of(spec, s).name == "mirror"}
    assert on_staged and on_staged != set(SHOPPERS), "the test's shoppers should fall in both variants"
    traffic.phase = "experiment"  # from before it exists: serve may assign shoppers before the test sees it open
    _experiments(env, "create", "models-1", "--variant", "live=prior", "--variant", f"mirror=prior,model={staged}")
    _wait(
        lambda: _get(f"{url}/healthz")[1].get("experiment_versions") == [staged], 120, "serve did not open the staged version", serve, log
    )
    _wait(lambda: _get(f"{url}/v1/users/{SHOPPERS[0]}/recommendations")[1].get("experiment") is not None, 30, "not assigned")
    for shopper in SHOPPERS:  # each shopper's list from their variant's version
        status, body = _get(f"{url}/v1/users/{shopper}/recommendations")
        assert status == 200 and body["experiment"]["variant"] == ("mirror" if shopper in on_staged else "live"), body
        assert body["model_version"] == (staged if shopper in on_staged else live), (shopper, body["model_version"])
    listed = _more(3, "trial")  # listed during the experiment: the staged version's embedder in serve takes them too
    publish_lines(kafka, listed)
    # the staged version's embedder in serve takes them (its group's commits reach the end)
    wait_caught_up(kafka, kafka.topic(PRODUCTS_LISTED.name), kafka.group(f"{GROUP_ID}-{slug(staged)}"), 120)
    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "reembed", "--model", "/nowhere"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "stop it (`shelfsight experiments stop models-1`)" in refused.stderr, refused.stderr
    _experiments(env, "stop", "models-1")
    _wait(lambda: "experiment_versions" not in _get(f"{url}/healthz")[1], 120, "serve did not let go of the staged version", serve, log)
    traffic.phase = None
    return listed


def test_reembed_switches_rolls_back_and_switches_again_while_serving(kafka, small_checkpoint, tmp_path, redis_client):
    port = free_port()
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": kafka.topic_prefix,
        "SHELFSIGHT_MODEL_DIR": str(small_checkpoint),
        "SHELFSIGHT_MIRROR_AVERAGE": "false",
        "SHELFSIGHT_QDRANT_PATH": str(tmp_path / "qdrant" / "products"),
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_API_KEYS": SECRET_KEY,
        "SHELFSIGHT_DEVICE": "cpu",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
        "SHELFSIGHT_STATE_SECRET": "test-state-secret-0001",
        "SHELFSIGHT_REDIS_PREFIX": f"reembed-{port}:",
        "SHELFSIGHT_EMBEDDER_BATCH_SIZE": "8",
        "SHELFSIGHT_CATALOGUE_POLL_S": "0.5",
        "SHELFSIGHT_CONSUMER_SESSION_TIMEOUT_S": "6",  # the resumed run waits this long for the killed one's partitions
        "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
    }
    keys = Keys(env["SHELFSIGHT_REDIS_PREFIX"])
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
    profiles = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "profiles"], env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab")
    )
    reembed = [sys.executable, "-m", "services.cli", "reembed"]
    live = [p["product_id"] for p in products[3:]]
    traffic = Traffic(url, kafka, live)

    def versions_in_redis(key_of, ids: list[str]) -> set[str | None]:
        found = {redis_client.hget(key_of(i), "mv") for i in ids}
        return {v.decode() if v else None for v in found}

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

        # Staged first (filled and checked, not switched to); killed once it has done some of the catalogue, and resumed.
        stage = [*reembed, "--model", str(small_checkpoint), "--mirror-average", "--stage"]
        first = subprocess.Popen(stage, env=env, stderr=log.open("ab"))
        _wait(lambda: sum(done for done, _ in committed_offsets(kafka, listed_topic, new_group).values()) >= 16, 180, "no progress")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        resumed_at = sum(done for done, _ in committed_offsets(kafka, listed_topic, new_group).values())
        assert resumed_at < len(products) + len(gone), "the kill should land mid-way"
        during = _more(6, "during")  # listed while the re-embed runs: both versions get them
        publish_lines(kafka, during)
        run(*stage[len(reembed) :])
        assert serving(base), "staging switches nothing"
        trial = _serve_a_variant_from_the_staged_version(env, kafka, url, traffic, new, base, serve, log)
        assert versions_in_redis(keys.item, live) <= {base, None}, "a staged version's embedder leaves the profiles worker's copies be"
        run("--model", str(small_checkpoint), "--mirror-average")
        _wait(lambda: serving(new), 60, "serve did not follow the switch", serve, log)

        after = _more(4, "after")  # listed while the new version is live
        publish_lines(kafka, after)
        run("--rollback")
        _wait(lambda: serving(base), 60, "serve did not follow the rollback", serve, log)
        run("--model", str(small_checkpoint), "--mirror-average")
        _wait(lambda: serving(new), 60, "serve did not follow the second switch", serve, log)
        # The profiles worker follows without a restart: its product copies move to the new space,
        # then each shopper's next click moves their taste there.
        _wait(lambda: versions_in_redis(keys.item, live) == {new}, 60, "product copies did not move", profiles, log)
        _wait(lambda: versions_in_redis(keys.user, SHOPPERS) == {new}, 60, "tastes did not move", profiles, log)
        # A switch serve cannot make (a checkpoint it cannot read) leaves it serving what it has, and says so.
        alias = read_alias(redis_client, keys)
        assert alias is not None and alias.unversioned == base, "the first switch named the version of unversioned vectors"
        missing = replace(alias.live, checkpoint=str(tmp_path / "nowhere"))
        write_alias(redis_client, keys, replace(alias, live=missing, previous=alias.live, revision=alias.revision + 1))
        _wait(lambda: "catalogue_problem" in _get(f"{url}/healthz")[1], 60, "serve did not report the switch it could not make", serve, log)
        assert serving(new)
        answered = len(traffic.answers)
        _wait(lambda: len(traffic.answers) > max(50, answered + 5), 60, "too few answers")
    finally:
        traffic.stop.set()
        serve.send_signal(signal.SIGTERM)
        profiles.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.read_text()[-2000:]
        assert profiles.wait(60) == 0, log.read_text()[-2000:]
    traffic.thread.join(10)
    assert traffic.error is None, f"the traffic thread failed: {traffic.error!r}"

    failed = [a for a in traffic.answers if a[0] != 200]
    assert not failed, f"{len(failed)} of {len(traffic.answers)} requests failed: {failed[:3]}"
    versions = [v for _, v, phase in traffic.answers if phase is None]
    runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert set(runs) <= {base, new} and len(runs) <= 4, f"each answer from one version, in switch order: {runs}"

    everything = [p["product_id"] for p in [*products, *during, *trial, *after]]
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
