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

import numpy as np
import pytest
from PIL import Image

from models.predictor import Predictor, ProductInput
from schemas import ProductListed, decode
from schemas.topics import PRODUCTS_LISTED
from services.demo.catalogue import catalogue
from services.embedder.inference import InferenceLost, ModelSpec, PredictorPool, predictor_pool
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


def _dies(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


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
        assert [p.category for p in pool.predict_decoded(inputs, decoded)] == [
            p.category for p in predictor.predict_decoded(inputs, decoded)
        ]
    finally:
        pool.close()


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
