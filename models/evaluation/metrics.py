"""Classification metrics from probabilities and labels.

>>> import numpy as np
>>> m = classification_metrics(np.array([[.9, .1], [.2, .8], [.6, .4]]), np.array([0, 1, 1]), ["a", "b"])
>>> round(m.accuracy, 3), m.confusion.tolist()
(0.667, [[1, 0], [1, 1]])
"""

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassReport:
    category: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    macro_f1: float
    top_k_accuracy: dict[int, float]
    expected_calibration_error: float
    per_class: list[ClassReport]
    confusion: np.ndarray  # rows: true category, columns: predicted
    reliability: list[tuple[float, float, int]]  # (mean confidence, accuracy, count) per bin
    samples: int


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, categories: list[str], ks: tuple[int, ...] = (1, 3, 5), bins: int = 15
) -> Metrics:
    n, c = probabilities.shape
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = []
    for i, name in enumerate(categories):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else 0.0
        recall = tp / confusion[i].sum() if confusion[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(ClassReport(name, float(precision), float(recall), float(f1), int(confusion[i].sum())))
    ranked = np.argsort(-probabilities, axis=1)
    top_k = {k: float((ranked[:, :k] == labels[:, None]).any(axis=1).mean()) for k in ks if k <= c}
    confidence = probabilities.max(axis=1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    reliability, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        members = (confidence > lo) & (confidence <= hi)
        if members.any():
            gap = abs(confidence[members].mean() - correct[members].mean())
            ece += members.mean() * gap
            reliability.append((float(confidence[members].mean()), float(correct[members].mean()), int(members.sum())))
    return Metrics(
        accuracy=float(correct.mean()),
        macro_f1=float(np.mean([r.f1 for r in per_class])),
        top_k_accuracy=top_k,
        expected_calibration_error=float(ece),
        per_class=per_class,
        confusion=confusion,
        reliability=reliability,
        samples=n,
    )
