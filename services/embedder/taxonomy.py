"""The store's own categories for listings that come without one.

Every listing with a ``category_hint`` teaches the store head (``models.store_head``); a
listing without one gets the head's category when it is sure enough, ``UNSURE`` when it is
not, and the product model's own prediction while the store has labelled fewer than two
categories. The examples are the stored products themselves: at start the embedder reads the
labelled ones back from the store, so a restart (or a second embedder on a Qdrant server)
knows what the others learned without any state of its own.

>>> import numpy as np
>>> taxonomy = StoreTaxonomy(TaxonomyConfig(min_examples=4, unsure_below=0.6))
>>> taxonomy.classify(np.eye(4, dtype=np.float32)[:1]) is None  # nothing labelled yet
True
>>> taxonomy.learn([("a", np.eye(4)[0], "Boots"), ("b", np.eye(4)[1], "Bags"),
...                 ("c", np.eye(4)[0], "Boots"), ("d", np.eye(4)[1], "Bags")])
>>> [(c.category, c.source) for c in taxonomy.classify(np.eye(4, dtype=np.float32)[:2])]
[('Boots', 'store_head'), ('Bags', 'store_head')]
>>> [(c.category, c.source) for c in taxonomy.classify(np.array([[0, 0, 1, 0]], dtype=np.float32))]
[('Uncategorised', 'unsure')]
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.store_head import StoreHead
from services.vectors.store import HINT, ProductStore

log = logging.getLogger(__name__)

UNSURE = "Uncategorised"


@dataclass(frozen=True)
class TaxonomyConfig:
    unsure_below: float = 0.5  # below this probability the head says it is unsure
    max_examples: int = 20_000  # labelled listings kept (the latest per product), the oldest forgotten first
    min_examples: int = 10  # labelled listings before the head is used at all
    refit_share: float = 0.1  # refit once this share of new examples arrived since the last fit …
    refit_min: int = 20  # … and at least this many
    # Calibrating the head's confidence costs three fits more than the fit itself; the temperature
    # moves little between refits, so it is chosen again once as many new examples arrived as it
    # was chosen on (or the categories changed), not at every refit.
    recalibrate_share: float = 1.0


@dataclass(frozen=True)
class Classification:
    category: str
    confidence: float  # the head's probability of its best category
    guess: str  # the head's best category, also when unsure
    source: Literal["store_head", "unsure"]


class StoreTaxonomy:
    def __init__(self, config: TaxonomyConfig | None = None) -> None:
        self.config = config or TaxonomyConfig()
        self._examples: OrderedDict[str, tuple[np.ndarray, str]] = OrderedDict()
        self._head: StoreHead | None = None
        self._new_since_fit = 0
        self._new_since_calibration = 0
        self._calibrated_on = 0
        self._lock = threading.Lock()

    @property
    def head(self) -> StoreHead | None:
        return self._head

    def learn(self, examples: Iterable[tuple[str, np.ndarray, str]]) -> None:
        """``(product_id, fused vector, store category)``: a relisted product replaces its example,
        so a redelivered batch teaches nothing twice."""
        with self._lock:
            for product_id, vector, category in examples:
                if self._examples.get(product_id, (None, None))[1] != category:
                    self._new_since_fit += 1
                    self._new_since_calibration += 1
                self._examples[product_id] = (np.asarray(vector, dtype=np.float32), category)
                self._examples.move_to_end(product_id)
                while len(self._examples) > self.config.max_examples:
                    self._examples.popitem(last=False)
            if self._due():
                self._refit()

    def classify(self, vectors: np.ndarray) -> list[Classification] | None:
        """One classification per vector; None while the store head cannot be used."""
        head = self._head
        if head is None:
            return None
        found = []
        for guess, p in head.predict(vectors):
            sure = p >= self.config.unsure_below
            found.append(Classification(guess if sure else UNSURE, p, guess, "store_head" if sure else "unsure"))
        return found

    def _due(self) -> bool:
        n = len(self._examples)
        if n < self.config.min_examples or self._new_since_fit == 0:
            return False
        fitted = n - self._new_since_fit
        return self._head is None or self._new_since_fit >= max(self.config.refit_min, self.config.refit_share * fitted)

    def _refit(self) -> None:
        labels = [c for _, c in self._examples.values()]
        if len(set(labels)) < 2:
            return
        started = time.perf_counter()
        previous = self._head
        recalibrate = (
            previous is None
            or not previous.calibrated
            or previous.classes != tuple(sorted(set(labels)))
            or self._new_since_calibration >= self.config.recalibrate_share * self._calibrated_on
        )
        vectors = np.stack([v for v, _ in self._examples.values()])
        self._head = StoreHead.fit(
            vectors, labels, start=previous, temperature=None if recalibrate or previous is None else previous.temperature
        )
        self._new_since_fit = 0
        if recalibrate:
            self._new_since_calibration, self._calibrated_on = 0, len(labels)
        log.debug(
            "store head refitted",
            extra={
                "examples": len(labels),
                "categories": len(self._head.classes),
                "calibrated": recalibrate,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )


def restore_taxonomy(store: ProductStore, config: TaxonomyConfig) -> StoreTaxonomy:
    """A store head that starts from every labelled product already in ``store``."""
    started = time.perf_counter()
    taxonomy = StoreTaxonomy(config)
    examples = store.labelled(config.max_examples)
    taxonomy.learn((p.product_id, np.asarray(p.vectors["fused"]), p.payload[HINT]) for p in examples if "fused" in p.vectors)
    log.info(
        "store head restored",
        extra={
            "examples": len(examples),
            "seconds": round(time.perf_counter() - started, 3),
            "categories": len(taxonomy.head.classes) if taxonomy.head else 0,
        },
    )
    return taxonomy
