"""Fuzzing the embedder on the real broker: whatever lands on `products.listed`, it indexes or
dead-letters, commits, and goes on; a listing that breaks the model is dead-lettered alone."""

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.predictor import Predictor
from schemas import ContractError, ProductListed, decode
from schemas.topics import PRODUCTS_LISTED
from services.demo.catalogue import catalogue
from services.embedder.service import build_embedder
from tests.hostile import FUZZ, KEYS, dead_lettered, mutations, produce
from tests.services.embedder.conftest import publish_lines, wait_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

LISTING = next(catalogue(1, seed=7))
UPDATE = {"event": "product.updated", "product_id": LISTING["product_id"], "in_stock": False, "updated_at": "2026-11-27T10:00:00Z"}


@pytest.fixture
def embedder(embedder_settings):
    running = build_embedder(embedder_settings)
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    yield running, thread
    stop.set()
    thread.join(60)


@FUZZ
@given(batch=st.lists(st.tuples(KEYS, st.one_of(mutations(LISTING), mutations(UPDATE))), min_size=10, max_size=20))
def test_no_listing_stops_the_embedder_and_every_refusal_is_dead_lettered(embedder_settings, embedder, batch):
    running, thread = embedder
    source = embedder_settings.topic(PRODUCTS_LISTED.name)
    sent = produce(embedder_settings, source, batch)
    wait_committed(embedder_settings, timeout=120)
    assert thread.is_alive()
    letters = dead_lettered(embedder_settings, embedder_settings.topic(PRODUCTS_LISTED.dlq), source)
    for message in sent:
        try:
            event = decode(PRODUCTS_LISTED.reader, message.value)
        except ContractError:
            assert (message.partition, message.offset) in letters, message.value[:200]
            continue
        if isinstance(event, ProductListed):
            assert running.store.get([event.product_id]), event.product_id


def test_a_listing_that_breaks_the_model_is_dead_lettered_alone(embedder_settings, embedder, monkeypatch):
    running, thread = embedder
    real = Predictor.predict_decoded

    def breaks_on_poison(self, inputs, decoded):  # type: ignore[no-untyped-def]
        if any(i.title == "POISON" for i in inputs):
            raise RuntimeError("the model cannot take this listing")
        return real(self, inputs, decoded)

    monkeypatch.setattr(Predictor, "predict_decoded", breaks_on_poison)
    products = list(catalogue(6, seed=9))
    products[2] = {**products[2], "title": "POISON"}
    publish_lines(embedder_settings, products)
    wait_committed(embedder_settings, timeout=120)
    assert thread.is_alive()
    source = embedder_settings.topic(PRODUCTS_LISTED.name)
    letters = dead_lettered(embedder_settings, embedder_settings.topic(PRODUCTS_LISTED.dlq), source)
    assert [letter.reason for letter in letters.values()] == ["could not be embedded: RuntimeError"]
    stored = {p.product_id for p in running.store.get([p["product_id"] for p in products])}
    assert stored == {p["product_id"] for p in products} - {products[2]["product_id"]}
