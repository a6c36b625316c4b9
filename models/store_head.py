"""A store's own categories, learned from its listings: a softmax head over fused vectors.

The product model's classifier knows the ten classes it was trained on. A store has its own
taxonomy, and every listing that carries a ``category_hint`` is a labelled example of it.
This head is a multinomial logistic regression over those listings' fused vectors (the
backbone stays frozen), refitted on all kept examples: with a few thousand examples and 256
dimensions a full-batch fit takes well under a second, and never drifts the way a long online
run can. A refit may start from the previous head's weights (``start``): the problem is convex,
so where it starts changes how long the fit takes (about half), not where it ends.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> centres = {"boots": np.eye(8)[0], "bags": np.eye(8)[1]}
>>> vectors = np.array([centres[c] + 0.1 * rng.normal(size=8) for c in ["boots", "bags"] * 10], dtype=np.float32)
>>> head = StoreHead.fit(vectors, ["boots", "bags"] * 10)
>>> head.classes
('bags', 'boots')
>>> [(c, p > 0.8) for c, p in head.predict(np.array([centres["boots"]], dtype=np.float32))]
[('boots', True)]
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StoreHead:
    """Softmax weights over fused vectors for the store's ``classes`` (sorted names)."""

    classes: tuple[str, ...]
    weight: np.ndarray  # [classes, dims], divided by the calibration temperature
    bias: np.ndarray  # [classes], likewise
    temperature: float = 1.0
    calibrated: bool = False  # whether the temperature was chosen out of fold (not 1.0 for want of examples)

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        labels: Sequence[str],
        l2: float = 1e-3,
        max_iter: int = 100,
        folds: int = 3,
        start: "StoreHead | None" = None,
        temperature: float | None = None,
    ) -> "StoreHead":
        """Fit on ``vectors`` [n, dims] labelled ``labels``; needs at least two classes.

        Probabilities are calibrated: a temperature is chosen on out-of-fold predictions
        (``folds`` fits on the rest, each scored on its held-out part), so a 0.8 means right
        about 8 times in 10 on listings the head has not seen. A given ``temperature`` is used
        as it is instead (three fits fewer); ``start`` is a head to begin the fit from.
        """
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise ValueError("a store head needs listings of at least two categories")
        index = {c: i for i, c in enumerate(classes)}
        x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        y = torch.as_tensor([index[label] for label in labels])
        usable = start is not None and start.weight.shape[1] == x.shape[1]
        weight, bias = _fit(x, y, len(classes), l2, max_iter, start._raw(classes) if usable and start else None)
        if temperature is None:
            calibrated = len(y) >= 10 * folds
            temperature = _temperature(x, y, len(classes), l2, max_iter, folds) if calibrated else 1.0
        else:
            calibrated = start is not None and start.calibrated
        return cls(classes, weight / temperature, bias / temperature, temperature, calibrated)

    def _raw(self, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated weights laid out for ``classes``: a class new to this head starts at zero."""
        weight = np.zeros((len(classes), self.weight.shape[1]), dtype=np.float32)
        bias = np.zeros(len(classes), dtype=np.float32)
        rows = {c: i for i, c in enumerate(self.classes)}
        for i, c in enumerate(classes):
            if c in rows:
                weight[i], bias[i] = self.weight[rows[c]] * self.temperature, self.bias[rows[c]] * self.temperature
        return weight, bias

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """[n, classes] softmax probabilities."""
        logits = np.asarray(vectors, dtype=np.float32) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> list[tuple[str, float]]:
        """The likeliest class of each vector and its probability."""
        p = self.probabilities(vectors)
        best = p.argmax(axis=1)
        return [(self.classes[int(b)], float(p[i, b])) for i, b in enumerate(best)]


def _fit(
    x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int, start: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    linear = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        if start is None:
            linear.weight.zero_()
            linear.bias.zero_()
        else:
            linear.weight.copy_(torch.as_tensor(start[0]))
            linear.bias.copy_(torch.as_tensor(start[1]))
    optimiser = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    return linear.weight.detach().numpy().copy(), linear.bias.detach().numpy().copy()


def _temperature(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int, folds: int) -> float:
    """The temperature that minimises the log loss of out-of-fold logits (1-D, by golden section).
    Each fold's fit starts from zero: one started from the fit on all examples, which has seen the
    held-out part, would score it too well whenever L-BFGS stops short of the optimum."""
    fold = torch.arange(len(y)) % folds
    logits = torch.zeros(len(y), classes)
    for k in range(folds):
        held = fold == k
        weight, bias = _fit(x[~held], y[~held], classes, l2, max_iter)
        logits[held] = x[held] @ torch.as_tensor(weight).T + torch.as_tensor(bias)

    def nll(t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / t, y))

    lo, hi = 0.05, 20.0
    golden = (5**0.5 - 1) / 2
    for _ in range(40):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return (lo + hi) / 2
