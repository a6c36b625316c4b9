"""The store head through the real embedder: real broker, embedded Qdrant Edge shard."""

import pytest

from services.demo.catalogue import catalogue
from services.vectors.edge import EdgeProductStore
from tests.services.embedder.conftest import publish_lines, run_until_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# A store whose taxonomy is not the product model's ten classes.
STORE = {"Sandal": "Footwear", "Sneaker": "Footwear", "Ankle-boot": "Footwear", "Bag": "Bags", "Trouser": "Trousers"}


def _listings(count: int, seed: int, hinted: bool, prefix: str) -> list[dict]:
    found = []
    for product in catalogue(count * 4, seed=seed, split="test"):
        if product["category_hint"] in STORE and len(found) < count:
            truth = STORE[product["category_hint"]]
            found.append(
                {
                    **product,
                    "product_id": f"{prefix}-{product['product_id']}",
                    "category_hint": truth if hinted else None,
                    "attributes": {"truth": truth},
                }
            )
    return found


def _filed(settings, products: list[dict]) -> dict[str, tuple[str, str, str]]:
    store = EdgeProductStore(settings.qdrant_path)
    store.ensure_collection({"image": 256, "text": 256, "fused": 256})
    try:
        stored = {p.product_id: p.payload for p in store.get([p["product_id"] for p in products])}
    finally:
        store.close()
    truth = {p["product_id"]: p["attributes"]["truth"] for p in products}
    return {pid: (payload["category"], payload["category_source"], truth[pid]) for pid, payload in stored.items()}


def test_listings_with_a_category_teach_the_store_head_and_the_rest_are_filed_under_it(embedder_settings):
    labelled = _listings(150, seed=1, hinted=True, prefix="l")
    silent = _listings(40, seed=2, hinted=False, prefix="s")
    publish_lines(embedder_settings, [*labelled, *silent])
    run_until_committed(embedder_settings)

    filed = _filed(embedder_settings, labelled)
    assert {source for _, source, _ in filed.values()} == {"store"}
    assert all(category == truth for category, _, truth in filed.values())

    filed = _filed(embedder_settings, silent)
    assert len(filed) == len(silent)
    sure = [(category, truth) for category, source, truth in filed.values() if source == "store_head"]
    unsure = [category for category, source, _ in filed.values() if source == "unsure"]
    assert set(unsure) <= {"Uncategorised"}
    assert len(sure) >= 0.75 * len(silent)  # the pictures are easy to tell apart …
    assert sum(c == t for c, t in sure) >= 0.9 * len(sure)  # … and the store's names are used, not the model's

    # A restarted embedder starts from the labelled products already stored.
    later = _listings(20, seed=3, hinted=False, prefix="r")
    publish_lines(embedder_settings, later)
    run_until_committed(embedder_settings)
    filed = _filed(embedder_settings, later)
    sure = [(category, truth) for category, source, truth in filed.values() if source == "store_head"]
    assert len(sure) >= 0.75 * len(later) and sum(c == t for c, t in sure) >= 0.9 * len(sure)


def test_a_store_that_labels_nothing_gets_the_model_classes(embedder_settings):
    silent = _listings(10, seed=4, hinted=False, prefix="m")
    publish_lines(embedder_settings, silent)
    run_until_committed(embedder_settings)
    filed = _filed(embedder_settings, silent)
    assert {source for _, source, _ in filed.values()} == {"model"}
    assert not {category for category, _, _ in filed.values()} & set(STORE.values())
