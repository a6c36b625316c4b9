"""The model processes (services.embedder.inference): real processes, and through the real broker
and an embedded Qdrant, the embedder that uses them.

Elsewhere the tests run the model in-process (tests/conftest.py sets SHELFSIGHT_EMBEDDER_PROCESSES=1,
so each embedder a test starts does not load its model twice more); these run the processes.
"""

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.predictor import Predictor, ProductInput
from schemas import ProductListed, decode
from schemas.topics import PRODUCTS_LISTED
from services.demo.catalogue import catalogue
from services.embedder.inference import InferenceLost, InferenceUnavailable, ModelSpec, PredictorPool, predictor_pool
from services.embedder.service import build_embedder
from tests.hostile import dead_lettered
from tests.services.embedder.conftest import publish_lines, wait_committed


def _inputs() -> list[ProductInput]:
    listed = [decode(ProductListed, json.dumps(p)) for p in catalogue(6, seed=3)]
    inputs = [ProductInput(image=p.image, title=p.title, description=p.description) for p in listed]
    large = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(large, format="PNG")
    return [
        *inputs,
        ProductInput(title="No picture at all"),  # text only
        ProductInput(image=large.getvalue(), title="A shop photo"),  # resized before it travels
        ProductInput(image=b"not a picture", title="Broken upload"),  # the picture's error travels too
    ]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped
    except FileNotFoundError:
        return True


def _model_processes() -> set[int]:
    """This process's spawned children (model processes, and the resource tracker)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


def _only_these_remain(pids: list[int]) -> None:
    """Broken pools' survivors are ended, not left holding a model (polls 10 s)."""
    deadline = time.monotonic() + 10
    while _model_processes() - set(pids):
        assert time.monotonic() < deadline, f"model processes outlived their pool: {sorted(_model_processes() - set(pids))}"
        time.sleep(0.1)


def _dies(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"model process {pid} still runs 10 s after SIGKILL"
        time.sleep(0.05)


def _load_poisoned(spec: ModelSpec) -> None:
    """Runs in each model process: the real model, which dies on a listing titled POISON, as a
    crash in native code would take the process with it."""
    from services.embedder import inference

    inference._load(spec)
    model = inference._model
    assert model is not None
    real = model.predict_decoded

    def predict(inputs, decoded):  # type: ignore[no-untyped-def]
        if any(i.title == "POISON" for i in inputs):
            os._exit(1)
        return real(inputs, decoded)

    model.predict_decoded = predict  # type: ignore[method-assign]


def _load_fails(spec: ModelSpec) -> None:
    raise OSError("the checkpoint is gone")


@pytest.fixture(scope="module")
def predictor(small_checkpoint) -> Predictor:
    return Predictor.load(small_checkpoint, device="cpu")


def test_model_processes_answer_as_the_model_does_in_order(predictor):
    inputs = _inputs()
    decoded = [predictor.decode(p) for p in inputs]
    spec = ModelSpec.of(predictor)
    assert spec is not None
    pool = PredictorPool(predictor, spec, processes=2)
    try:
        assert len(pool.pids()) == 2 and os.getpid() not in pool.pids()
        here, there = predictor.predict_decoded(inputs, decoded), pool.predict_decoded(inputs, decoded)
    finally:
        pool.close()
    assert len(there) == len(inputs)
    for a, b in zip(here, there, strict=True):
        assert (a.category, a.image_error, sorted(a.vectors)) == (b.category, b.image_error, sorted(b.vectors))
        for name in a.vectors:
            np.testing.assert_allclose(a.vectors[name], b.vectors[name], atol=1e-4)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-4)
    no_picture, photo, broken = there[-3:]
    assert "image" not in no_picture.vectors and "image" in photo.vectors
    assert broken.image_error is not None and "image" not in broken.vectors


def test_a_model_process_that_dies_costs_the_batch_in_hand_not_the_pool(predictor):
    inputs = _inputs()[:4]
    decoded = [predictor.decode(p) for p in inputs]
    spec = ModelSpec.of(predictor)
    assert spec is not None
    pool = PredictorPool(predictor, spec, processes=2)
    try:
        before = pool.pids()
        _dies(before[0])
        with pytest.raises(InferenceLost):
            pool.predict_decoded(inputs, decoded)
        after = pool.pids()
        assert len(after) == 2 and not set(after) & set(before)  # started afresh
        _only_these_remain(after)
        assert [p.category for p in pool.predict_decoded(inputs, decoded)] == [
            p.category for p in predictor.predict_decoded(inputs, decoded)
        ]
    finally:
        pool.close()


def test_model_processes_that_cannot_start_say_so(predictor):
    spec = ModelSpec.of(predictor)
    assert spec is not None
    with pytest.raises(InferenceUnavailable, match="could not be started"):
        PredictorPool(predictor, spec, processes=2, load=_load_fails)


def test_the_model_runs_in_process_when_processes_would_not_help(predictor):
    assert predictor_pool(predictor, processes=1) is None
    in_memory = Predictor(predictor.model, predictor.card, predictor.device, None)  # no checkpoint to load again
    assert ModelSpec.of(in_memory) is None and predictor_pool(in_memory, processes=2) is None


@pytest.mark.kafka
def test_the_embedder_loses_nothing_when_a_model_process_dies(embedder_settings):
    settings = embedder_settings.model_copy(update={"embedder_processes": 2})
    embedder = build_embedder(settings)
    assert embedder.models is not None and len(embedder.models.pids()) == 2
    first = embedder.models.pids()
    _dies(first[1])  # before the first batch: its early predictions are lost, and redone
    stop = threading.Event()
    thread = threading.Thread(target=embedder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        products = list(catalogue(40, seed=11))
        publish_lines(settings, products)
        wait_committed(settings, timeout=180)
        assert thread.is_alive()
        stored = {p.product_id for p in embedder.store.get([p["product_id"] for p in products])}
        assert stored == {p["product_id"] for p in products}
        source = settings.topic(PRODUCTS_LISTED.name)
        assert dead_lettered(settings, settings.topic(PRODUCTS_LISTED.dlq), source) == {}
        assert not set(embedder.models.pids()) & set(first)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


@pytest.mark.kafka
def test_a_listing_that_kills_the_model_process_is_dead_lettered_alone(embedder_settings):
    settings = embedder_settings.model_copy(update={"embedder_processes": 2})
    predictor = Predictor.load(settings.checkpoint, device="cpu")
    spec = ModelSpec.of(predictor)
    assert spec is not None
    embedder = build_embedder(settings, predictor, models=PredictorPool(predictor, spec, 2, load=_load_poisoned))
    stop = threading.Event()
    thread = threading.Thread(target=embedder.run, args=(stop,), daemon=True)
    thread.start()
    try:
        products = list(catalogue(8, seed=13))
        products[2] = {**products[2], "title": "POISON"}
        update = {
            "event": "product.updated",
            "product_id": products[0]["product_id"],
            "in_stock": False,
            "updated_at": "2026-11-27T10:00:00Z",
        }
        # Runs of listings between an update and a refused line: predictions stay with their listings.
        publish_lines(settings, [*products[:4], "{not json", update, *products[4:]])
        wait_committed(settings, timeout=240)
        assert thread.is_alive()
        source = settings.topic(PRODUCTS_LISTED.name)
        reasons = sorted(letter.reason for letter in dead_lettered(settings, settings.topic(PRODUCTS_LISTED.dlq), source).values())
        assert len(reasons) == 2 and "could not be embedded: InferenceLost" in reasons
        wanted = [p["product_id"] for p in products if p["title"] != "POISON"]
        stored = {p.product_id: p for p in embedder.store.get(wanted, with_vectors=True)}
        assert set(stored) == set(wanted)
        assert stored[products[0]["product_id"]].payload["in_stock"] is False
        _only_these_remain(embedder.models.pids())  # the poisoned pools' survivors too
        # Each listing has its own picture's vector, not a neighbour's.
        again = predictor.predict([ProductInput(image=decode(ProductListed, json.dumps(p)).image) for p in products[3:5]])
        for product, prediction in zip(products[3:5], again, strict=True):
            np.testing.assert_allclose(stored[product["product_id"]].vectors["image"], prediction.vectors["image"], atol=1e-4)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
