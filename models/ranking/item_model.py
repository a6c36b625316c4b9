"""An item-to-item model over shoppers' whole histories: EASE (Steck, WWW 2019).

Co-visitation sees what a shopper did in the last few minutes; this sees everything they ever
touched. It learns, for every pair of items, how much having item i in a history says about
item j *given the rest of that history* — a ridge regression of each item's column on all the
others, with zero self-weight, in closed form:

    P = (XᵀX + λI)⁻¹,    B = I − P · diag(1 / diag(P))

where X is the binary shopper × item matrix. Only the Gram matrix XᵀX is needed, and it can be
learned one event at a time (:class:`CoOccurrence`): a shopper touching a new item adds one to
its diagonal cell and to its cell with every item already in that shopper's history. Gram
matrices of disjoint shoppers add up, so several workers' counts merge by summing
(:func:`merge_counts`). A shopper is scored by summing the rows of B of their history.

The price is memory and one matrix inverse per fit: both grow with the number of items
modelled, which is bounded (``max_items``; the item touched least lately makes room for a new one).
2,000 items: 16 MB of counts and about 1.5 s per fit on two cores; 5,000: 100 MB and 8 s.

>>> co = CoOccurrence(max_items=10)
>>> for user, items in {"u1": "abc", "u2": "abd", "u3": "ab", "u4": "cd"}.items():
...     for item in items:
...         co.learn_one(user, item)
>>> items, gram = co.counts()
>>> items, int(gram[items.index("a"), items.index("b")]), int(gram[items.index("a"), items.index("a")])
(['a', 'b', 'c', 'd'], 3, 3)
>>> model = ItemWeights.fit(items, gram, l2=1.0)
>>> everything, _ = model.scores(["a"], ["b", "c", "d", "zzz"])
>>> [round(float(x), 3) for x in everything]  # b goes with a; zzz is unknown
[0.714, 0.105, 0.105, 0.0]
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

L2 = 200.0  # the best HR@10 of 50, 200, 500 on the MovieLens validation window (docs/benchmarks.md)


class CoOccurrence:
    """The Gram matrix XᵀX of shopper × item, learned online and bounded in items and shoppers' memories.

    To count a new item against a shopper's history, the history must be remembered: the latest
    ``history`` items of the ``shoppers`` most recently active shoppers (a shopper forgotten and
    back starts a new history; what was counted stays counted).
    """

    def __init__(self, max_items: int = 2_000, history: int = 200, shoppers: int = 20_000) -> None:
        self.max_items, self.history, self.shoppers_kept = max_items, history, shoppers
        self._index: dict[str, int] = {}
        self._items: list[str | None] = []  # slot → item
        self._gram = np.zeros((0, 0), dtype=np.float32)
        # How often each item was touched lately: every ``max_items`` admissions it is halved, so a
        # product that stopped selling gives way, and a new one can stay long enough to count.
        self._touched = np.zeros(0, dtype=np.float32)
        self._admissions = 0
        # Per shopper, newest first, distinct; least recently active first. Items are the slot
        # table's own strings, so a checkpoint pickles each one once, not once per history.
        self._histories: OrderedDict[str, list[str]] = OrderedDict()

    @classmethod
    def of(cls, histories: Sequence[Sequence[str]], max_items: int = 2_000) -> "CoOccurrence":
        """Counts of ``histories`` (one per shopper, oldest item first)."""
        counts = cls(max_items=max_items)
        for n, history in enumerate(histories):
            for item in history:
                counts.learn_one(f"shopper-{n}", item)
        return counts

    def __len__(self) -> int:
        return len(self._index)

    def histories(self) -> list[list[str]]:
        """The remembered shoppers' histories (newest item first): what a low-rank fit reads."""
        return [list(history) for history in self._histories.values()]

    @property
    def shoppers(self) -> int:
        """Shoppers whose history is remembered."""
        return len(self._histories)

    def learn_one(self, user: str, item: str) -> None:
        """``user`` touched ``item`` (once per item and shopper counts; a repeat only refreshes it)."""
        if self.max_items <= 0:
            return
        history = self._histories.setdefault(user, [])
        self._histories.move_to_end(user)
        while len(self._histories) > self.shoppers_kept:
            self._histories.popitem(last=False)
        if item in history:
            history.insert(0, history.pop(history.index(item)))
            return
        slot = self._slot(item)
        others = [self._index[o] for o in history if o in self._index]
        self._gram[slot, slot] += 1.0
        self._touched[slot] += 1.0
        if others:
            self._gram[slot, others] += 1.0
            self._gram[others, slot] += 1.0
        history.insert(0, self._items[slot])  # type: ignore[arg-type]
        del history[self.history :]

    def forget_user(self, user: str) -> None:
        """Stop remembering ``user``'s history; what it already counted stays counted."""
        self._histories.pop(user, None)

    def resize(self, max_items: int) -> None:
        """A new bound; over it, the items touched least lately are forgotten at once."""
        self.max_items = max_items
        if len(self._index) <= max_items:
            return
        items, gram = self.counts()
        touched = self._touched[: len(items)]
        keep = sorted(np.argsort(-touched, kind="stable")[: max(0, max_items)].tolist())
        self._items = [items[k] for k in keep]
        self._index = {item: n for n, item in enumerate(self._items)}  # type: ignore[misc]
        self._gram = gram[np.ix_(keep, keep)].copy()
        self._touched = touched[keep].copy()

    def counts(self) -> tuple[list[str], np.ndarray]:
        """(items, their Gram matrix) over the items modelled, as a compact copy."""
        n = len(self._items)
        return list(self._items), self._gram[:n, :n].copy()  # type: ignore[arg-type]

    def _slot(self, item: str) -> int:
        slot = self._index.get(item)
        if slot is not None:
            return slot
        self._admissions += 1
        if self._admissions >= self.max_items:
            self._touched *= 0.5
            self._admissions = 0
        if len(self._items) < self.max_items:
            slot = len(self._items)
            self._items.append(None)
            if slot >= len(self._gram):
                self._grow(min(self.max_items, max(64, 2 * len(self._gram))))
        else:
            # Full: the item touched least lately makes room (its pairs are forgotten).
            slot = int(np.argmin(self._touched[: len(self._items)]))
            del self._index[self._items[slot]]  # type: ignore[arg-type]
            self._gram[slot, :] = 0.0
            self._gram[:, slot] = 0.0
            self._touched[slot] = 0.0
        self._items[slot] = item
        self._index[item] = slot
        return slot

    def _grow(self, size: int) -> None:
        grown = np.zeros((size, size), dtype=np.float32)
        n = len(self._gram)
        grown[:n, :n] = self._gram
        self._gram = grown
        self._touched = np.concatenate([self._touched, np.zeros(size - n, dtype=np.float32)])


def merge_counts(parts: Sequence[tuple[list[str], np.ndarray]]) -> tuple[list[str], np.ndarray]:
    """Several workers' counts as one: their shoppers are disjoint, so the Gram matrices add up."""
    if len(parts) == 1:
        return parts[0]
    items = list(dict.fromkeys(i for names, _ in parts for i in names))
    index = {item: n for n, item in enumerate(items)}
    gram = np.zeros((len(items), len(items)), dtype=np.float32)
    for names, part in parts:
        at = [index[i] for i in names]
        gram[np.ix_(at, at)] += part
    return items, gram


def _rows(index: dict[str, int], history: Sequence[str]) -> tuple[list[int], np.ndarray]:
    """The model's rows for the known items of ``history`` (newest first), and each one's place in it."""
    places, rows = [], []
    for place, item in enumerate(history):
        row = index.get(item)
        if row is not None:
            places.append(place)
            rows.append(row)
    return rows, np.asarray(places, dtype=np.float64)


@dataclass(frozen=True)
class ItemWeights:
    """B, fitted: ``weights[i, j]`` is what having item i says about item j."""

    items: list[str]
    index: dict[str, int]
    weights: np.ndarray  # (items, items), float32, zero diagonal

    @classmethod
    def empty(cls) -> "ItemWeights":
        return cls([], {}, np.zeros((0, 0), dtype=np.float32))

    @classmethod
    def fit(cls, items: list[str], gram: np.ndarray, l2: float = L2) -> "ItemWeights":
        if not items:
            return cls.empty()
        regularised = gram.astype(np.float64) + l2 * np.eye(len(items))
        inverse = np.linalg.inv(regularised)
        weights = -inverse / np.diagonal(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        return cls(list(items), {item: n for n, item in enumerate(items)}, weights.astype(np.float32))

    def _rows(self, history: Sequence[str]) -> tuple[list[int], np.ndarray]:
        return _rows(self.index, history)

    def scores(self, history: Sequence[str], candidates: Sequence[str], decay: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """For each candidate: B summed over the whole ``history`` (newest first), and the same with
        the n-th newest item weighing ``decay ** n``; 0 for items the model does not know."""
        everything, recent = np.zeros(len(candidates)), np.zeros(len(candidates))
        rows, places = self._rows(history)
        columns = [(n, self.index[c]) for n, c in enumerate(candidates) if c in self.index]
        if not rows or not columns:
            return everything, recent
        at, cols = zip(*columns, strict=True)
        block = self.weights[np.ix_(rows, list(cols))].astype(np.float64)
        everything[list(at)] = block.sum(axis=0)
        recent[list(at)] = (decay**places) @ block
        return everything, recent

    def top(self, history: Sequence[str], limit: int) -> list[tuple[str, float]]:
        """The ``limit`` items that ``history`` says most about, items of the history left out."""
        rows, _ = self._rows(history)
        if not rows or limit <= 0:
            return []
        scores = self.weights[rows].sum(axis=0)
        scores[rows] = -np.inf
        best = np.argsort(-scores, kind="stable")[:limit]
        return [(self.items[i], float(scores[i])) for i in best if np.isfinite(scores[i])]


def _histories_matrix(histories: Sequence[Sequence[str]]) -> tuple[list[str], "csr_matrix"]:
    """The binary shopper × item matrix of ``histories`` (items in order of first appearance)."""
    from scipy.sparse import csr_matrix

    index: dict[str, int] = {}
    rows, columns = [], []
    for row, history in enumerate(histories):
        for item in dict.fromkeys(history):
            rows.append(row)
            columns.append(index.setdefault(item, len(index)))
    data = np.ones(len(rows), dtype=np.float32)
    return list(index), csr_matrix((data, (rows, columns)), shape=(len(histories), len(index)))


@dataclass(frozen=True)
class LowRankItemWeights:
    """EASE on a rank-``r`` view of the Gram matrix, for catalogues too large for :class:`ItemWeights`.

    With XᵀX ≈ V S² Vᵀ (the top ``r`` right singular vectors of the shopper × item matrix X),
    the inverse EASE needs is exact in closed form, P = (1/λ)(I − V D Vᵀ) with D = S²/(S²+λ),
    so B never has to be stored: what item i says about item j is
    ``v_i·D·v_j / (1 − v_j·D·v_j)``. Memory is ``items × r`` floats (100,000 products at rank 64:
    26 MB), a shopper's scores cost ``r`` multiplications per candidate, and a fit is a randomized
    SVD of the sparse X. At full rank it is EASE exactly:

    >>> histories = [list("abc"), list("abd"), list("ab"), list("cd")]
    >>> exact = ItemWeights.fit(*CoOccurrence.of(histories).counts(), l2=1.0)
    >>> low = LowRankItemWeights.fit(histories, rank=4, l2=1.0)
    >>> np.allclose(low.scores(["a"], list("bcd"))[0], exact.scores(["a"], list("bcd"))[0], atol=1e-5)
    True
    """

    items: list[str]
    index: dict[str, int]
    vectors: np.ndarray  # V: (items, r)
    shrink: np.ndarray  # D: (r,)
    denominators: np.ndarray  # 1 − v_j·D·v_j: (items,)

    @classmethod
    def fit(cls, histories: Sequence[Sequence[str]], rank: int = 64, l2: float = L2, seed: int = 0) -> "LowRankItemWeights":
        items, x = _histories_matrix(histories)
        if not items:
            empty = np.zeros((0, 0), dtype=np.float32)
            return cls([], {}, empty, np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32))
        r = max(1, min(rank, *x.shape))
        if r >= min(x.shape) - 1:  # small: the exact decomposition
            _, s, vt = np.linalg.svd(x.toarray(), full_matrices=False)
            s, vt = s[:r], vt[:r]
        else:
            from sklearn.utils.extmath import randomized_svd

            _, s, vt = randomized_svd(x, n_components=r, n_iter=4, random_state=seed)
        shrink = (s**2 / (s**2 + l2)).astype(np.float64)
        vectors = vt.T.astype(np.float64)
        denominators = 1.0 - np.einsum("ij,j,ij->i", vectors, shrink, vectors)
        return cls(
            items,
            {item: n for n, item in enumerate(items)},
            vectors.astype(np.float32),
            shrink.astype(np.float32),
            np.maximum(denominators, 1e-6).astype(np.float32),
        )

    def _rows(self, history: Sequence[str]) -> tuple[list[int], np.ndarray]:
        return _rows(self.index, history)

    def scores(self, history: Sequence[str], candidates: Sequence[str], decay: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ItemWeights.scores`: B summed over the history, and with older items weighing less."""
        everything, recent = np.zeros(len(candidates)), np.zeros(len(candidates))
        rows, places = self._rows(history)
        columns = [(n, self.index[c]) for n, c in enumerate(candidates) if c in self.index]
        if not rows or not columns:
            return everything, recent
        at, cols = (list(x) for x in zip(*columns, strict=True))
        weights = np.stack([np.ones(len(rows)), decay**places])  # (2, history): plain and decayed sums
        summed = weights @ self.vectors[rows].astype(np.float64)  # (2, r)
        said = self.vectors[cols].astype(np.float64) * self.shrink / self.denominators[cols, None]  # (candidates, r)
        totals = said @ summed.T  # (candidates, 2)
        # B has no diagonal: a candidate that is in the history says nothing about itself.
        own: dict[int, np.ndarray] = {}
        for n, row in enumerate(rows):
            own[row] = own.get(row, 0.0) + weights[:, n]
        for n, col in enumerate(cols):
            if col in own:
                totals[n] -= own[col] * float(said[n] @ self.vectors[col])
        everything[at], recent[at] = totals[:, 0], totals[:, 1]
        return everything, recent

    def top(self, history: Sequence[str], limit: int) -> list[tuple[str, float]]:
        rows, _ = self._rows(history)
        if not rows or limit <= 0:
            return []
        taste = (self.vectors[rows].sum(axis=0) * self.shrink).astype(np.float32)
        scores = (self.vectors @ taste) / self.denominators
        scores[rows] = -np.inf
        limit = min(limit, len(scores))
        best = np.argpartition(-scores, limit - 1)[:limit] if limit < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.items[i], float(scores[i])) for i in best if np.isfinite(scores[i])]

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.shrink.nbytes + self.denominators.nbytes)


ItemModel = ItemWeights | LowRankItemWeights


def fit_item_model(
    counts: tuple[list[str], np.ndarray], histories: Sequence[Sequence[str]], exact_items: int = 2_000, rank: int = 64, l2: float = L2
) -> ItemModel:
    """EASE over every product the remembered histories hold: exact from the counted Gram matrix
    while they hold at most ``exact_items`` products (and the counts cover them), else on a
    rank-``rank`` view of the histories, which covers any number of products.

    >>> histories = [list("abc"), list("abd"), list("ab"), list("cd")]
    >>> type(fit_item_model(CoOccurrence.of(histories).counts(), histories, exact_items=4)).__name__
    'ItemWeights'
    >>> type(fit_item_model(CoOccurrence.of(histories).counts(), histories, exact_items=3)).__name__
    'LowRankItemWeights'
    """
    items, gram = counts
    held = {item for history in histories for item in history}
    if len(held) <= exact_items and held <= set(items):
        return ItemWeights.fit(items, gram, l2)
    return LowRankItemWeights.fit(histories, rank=rank, l2=l2)
