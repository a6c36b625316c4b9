"""StoreTaxonomy: which examples it keeps and when it refits (no Kafka, no store)."""

import numpy as np

from services.embedder.taxonomy import StoreTaxonomy, TaxonomyConfig


def _example(pid: str, k: int, category: str) -> tuple[str, np.ndarray, str]:
    return pid, np.eye(4, dtype=np.float32)[k], category


def test_redelivered_listings_teach_nothing_twice_and_the_oldest_are_forgotten():
    taxonomy = StoreTaxonomy(TaxonomyConfig(min_examples=4, refit_min=2, max_examples=6))
    batch = [_example("a", 0, "Boots"), _example("b", 1, "Bags"), _example("c", 0, "Boots"), _example("d", 1, "Bags")]
    taxonomy.learn(batch)
    first = taxonomy.head
    assert first is not None and first.classes == ("Bags", "Boots")
    taxonomy.learn(batch)  # the same batch again: no new example, no refit
    assert taxonomy.head is first
    taxonomy.learn([_example("e", 2, "Hats"), _example("f", 2, "Hats"), _example("g", 3, "Belts")])
    assert taxonomy.head is not first and taxonomy.head.classes == ("Bags", "Belts", "Boots", "Hats")
    # Six kept: a is forgotten. A relisted product with a new category replaces its example.
    taxonomy.learn([_example("b", 3, "Belts"), _example("h", 3, "Belts")])
    assert taxonomy.head.classes == ("Bags", "Belts", "Hats")  # the boots (a, c) are forgotten, b is a belt now


def test_no_head_until_enough_listings_of_two_categories():
    taxonomy = StoreTaxonomy(TaxonomyConfig(min_examples=3, refit_min=1))
    taxonomy.learn([_example("a", 0, "Boots"), _example("b", 0, "Boots"), _example("c", 0, "Boots")])
    assert taxonomy.head is None and taxonomy.classify(np.eye(4, dtype=np.float32)) is None
    taxonomy.learn([_example("d", 1, "Bags")])
    assert taxonomy.head is not None


def test_confidence_is_calibrated_again_once_as_many_new_listings_arrived_or_the_categories_change():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))

    def listings(start: int, n: int, classes: int = 2) -> list[tuple[str, np.ndarray, str]]:
        return [(f"p{i}", centres[i % classes] + rng.normal(size=8), f"c{i % classes}") for i in range(start, start + n)]

    taxonomy = StoreTaxonomy(TaxonomyConfig(min_examples=10, refit_min=10, refit_share=0.1))
    taxonomy.learn(listings(0, 40))
    first = taxonomy.head
    assert first is not None
    taxonomy.learn(listings(40, 20))  # refitted, on the temperature chosen on 40
    assert taxonomy.head is not first and taxonomy.head.temperature == first.temperature
    taxonomy.learn(listings(60, 20))  # 40 new since: as many as it was calibrated on
    calibrated = taxonomy.head
    assert calibrated.temperature != first.temperature
    taxonomy.learn(listings(80, 10, classes=3))  # a new category: calibrated at once
    assert taxonomy.head.classes == ("c0", "c1", "c2") and taxonomy.head.temperature != calibrated.temperature
