"""The store head: a softmax regression over fused vectors, calibrated out of fold."""

import numpy as np
import pytest

from models.store_head import StoreHead


def _blobs(n: int, classes: int, dims: int, noise: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims))
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + noise * rng.normal(size=(n, dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"c{k}" for k in labels]


def test_confidence_matches_accuracy_on_unseen_listings():
    x, y = _blobs(3_000, 6, 32, noise=3.0, seed=0)  # overlapping classes: neither sure nor hopeless
    head = StoreHead.fit(x[:1_500], y[:1_500])
    found = head.predict(x[1_500:])
    correct = np.array([c == t for (c, _), t in zip(found, y[1_500:], strict=True)])
    confidence = np.array([p for _, p in found])
    assert 0.5 < correct.mean() < 0.95
    assert abs(confidence.mean() - correct.mean()) < 0.05  # calibrated on average …
    sure = confidence > 0.8
    assert correct[sure].mean() > correct[~sure].mean() + 0.2  # … and confidence ranks right from wrong


def test_one_category_is_not_enough():
    with pytest.raises(ValueError, match="two categories"):
        StoreHead.fit(np.eye(3, dtype=np.float32), ["a", "a", "a"])


def test_a_refit_from_the_previous_head_ends_where_a_fit_from_scratch_does():
    x, y = _blobs(1_200, 5, 32, noise=3.0, seed=1)
    before = StoreHead.fit(x[:800], y[:800])
    # More listings, and one category the previous head has never seen.
    x_new, _ = _blobs(100, 1, 32, noise=0.5, seed=2)
    x_all, y_all = np.vstack([x, x_new]), [*y, *["c-new"] * 100]
    cold = StoreHead.fit(x_all, y_all)
    warm = StoreHead.fit(x_all, y_all, start=before)
    assert warm.classes == cold.classes and "c-new" in warm.classes
    np.testing.assert_allclose(warm.probabilities(x_all), cold.probabilities(x_all), atol=2e-3)
    assert warm.temperature == pytest.approx(cold.temperature, rel=0.02)


def test_a_given_temperature_is_used_as_it_is():
    x, y = _blobs(600, 3, 16, noise=2.0, seed=3)
    calibrated = StoreHead.fit(x, y)
    assert calibrated.temperature != 1.0
    kept = StoreHead.fit(x, y, start=calibrated, temperature=2.5)
    raw = StoreHead.fit(x, y, temperature=1.0)
    assert kept.temperature == 2.5
    np.testing.assert_allclose(kept.weight * 2.5, raw.weight, atol=1e-3)
