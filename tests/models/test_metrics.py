import numpy as np
import pytest

from models.evaluation.metrics import classification_metrics


def test_metrics_by_hand():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5], [0.05, 0.15, 0.8]])
    labels = np.array([0, 1, 1, 2, 0])
    m = classification_metrics(probabilities, labels, ["a", "b", "c"], ks=(1, 2))
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.confusion.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 1]]
    a, b, c = m.per_class
    assert (a.precision, a.recall) == (pytest.approx(0.5), pytest.approx(0.5))
    assert (b.precision, b.recall) == (pytest.approx(1.0), pytest.approx(0.5))
    assert (c.precision, c.recall) == (pytest.approx(0.5), pytest.approx(1.0))
    assert m.macro_f1 == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert m.top_k_accuracy == {1: pytest.approx(0.6), 2: pytest.approx(0.8)}
    # bins (15 of them): {0.5, 0.5} right half the time → gap 0; 0.6 right → 0.4; 0.7 right → 0.3; 0.8 wrong → 0.8
    assert m.expected_calibration_error == pytest.approx((0 + 0.4 + 0.3 + 0.8) / 5)
