"""Products' vectors kept in the serving process, in front of any product store.

A recommendation ranks 100–200 candidates by their fused vectors, and a product's vectors
change only when it is embedded again. Fetching them with every request was a fifth of an
embedded shard's request time and most of what a Qdrant server's answers carry
(``bench/serve.py``, docs/benchmarks.md), so :class:`VectorCache` asks the store for payloads
and scores only, and for the vectors of products it has not seen lately.

`serve` reads a Qdrant server through it (``services.vectors.factory.cached_store``; the
embedded shard is read directly, where fetching vectors costs about what a miss does). Writes
through the cache drop what they change, and `serve`'s own embedder writes through it, so what
it wrote is never read stale. Writes it cannot see — an embedder in another process — are
picked up once an entry is ``ttl_s`` old.

>>> from services.vectors.server import ServerProductStore
>>> from qdrant_client import QdrantClient
>>> store = ServerProductStore(QdrantClient(location=":memory:"))
>>> store.ensure_collection({"fused": 2})
>>> cache = VectorCache(store, ttl_s=60.0)
>>> cache.upsert([StoredProduct("a", {"fused": [1.0, 0.0]}, {"title": "A"})])
>>> [(p.product_id, [round(float(x), 3) for x in p.vectors["fused"]]) for p in cache.get(["a"], with_vectors=("fused",))]
[('a', [1.0, 0.0])]
>>> cache.upsert([StoredProduct("a", {"fused": [0.0, 1.0]}, {"title": "A"})])  # written through: forgotten
>>> [round(float(x), 3) for x in cache.get(["a"], with_vectors=("fused",))[0].vectors["fused"]]
[0.0, 1.0]
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from services.vectors.store import ProductStore, SearchFilters, SearchHit, StoredProduct, VectorQuery


class VectorCache:
    """A :class:`ProductStore` that remembers products' vectors for ``ttl_s``, for at most
    ``max_items`` products (least recently used go first). Cached vectors are float32 arrays."""

    def __init__(
        self, store: ProductStore, ttl_s: float = 60.0, max_items: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self._ttl_s = ttl_s
        self._max_items = max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, np.ndarray]]] = OrderedDict()  # product → (cached at, vectors)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- reads ----------------------------------------------------------------------------

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        results = self.store.query_many([replace(q, with_vector=False) if q.with_vector else q for q in queries])
        wanted = {(q.using, h.product_id) for q, hits in zip(queries, results, strict=True) if q.with_vector for h in hits}
        if not wanted:
            return results
        vectors = self._vectors(wanted)
        return [
            [replace(h, vector=vectors.get((q.using, h.product_id))) for h in hits] if q.with_vector else hits  # type: ignore[arg-type]  # cached vectors are float32 arrays, not lists (class docstring)
            for q, hits in zip(queries, results, strict=True)
        ]

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        if with_vectors is True or not with_vectors:
            # All of a product's vectors: which it has is the store's to say (a text-only product has no image).
            return self.store.get(product_ids, with_vectors, fields)
        names = tuple(with_vectors)
        products = self.store.get(product_ids, False, fields)
        vectors = self._vectors({(n, p.product_id) for p in products for n in names})
        return [
            replace(p, vectors={n: vectors[(n, p.product_id)] for n in names if (n, p.product_id) in vectors})  # type: ignore[misc]  # float32 arrays too
            for p in products
        ]

    def _vectors(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        now = self._clock()
        found: dict[tuple[str, str], np.ndarray] = {}
        with self._lock:
            for name, product_id in wanted:
                entry = self._items.get(product_id)
                if entry is not None and now - entry[0] < self._ttl_s and name in entry[1]:
                    self._items.move_to_end(product_id)
                    found[(name, product_id)] = entry[1][name]
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        missing: dict[str, list[str]] = {}
        for name, product_id in wanted - found.keys():
            missing.setdefault(name, []).append(product_id)
        fetched: dict[tuple[str, str], np.ndarray] = {}
        for name, ids in missing.items():
            for product in self.store.get(ids, with_vectors=(name,), fields=()):
                if name in product.vectors:
                    fetched[(name, product.product_id)] = np.asarray(product.vectors[name], dtype=np.float32)
        if fetched:
            with self._lock:
                for (name, product_id), vector in fetched.items():
                    entry = self._items.get(product_id)
                    if entry is None or now - entry[0] >= self._ttl_s:
                        entry = self._items[product_id] = (now, {})
                    entry[1][name] = vector
                    self._items.move_to_end(product_id)
                while len(self._items) > self._max_items:
                    self._items.popitem(last=False)
        return found | fetched

    # -- writes drop what they change -----------------------------------------------------

    def upsert(self, products: list[StoredProduct]) -> None:
        try:
            self.store.upsert(products)
        finally:  # a failed write may still have changed some points
            self._forget({p.product_id for p in products})

    def _forget(self, product_ids: set[str]) -> None:
        with self._lock:
            for product_id in product_ids:
                self._items.pop(product_id, None)

    # -- the rest is the store's ----------------------------------------------------------

    def ensure_collection(self, dims: dict[str, int]) -> None:
        self.store.ensure_collection(dims)

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        return self.store.update_payload(product_id, payload)

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        return self.store.labelled(limit, using)

    def search(self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        return self.store.search(vector, using, limit, filters)

    def count(self) -> int:
        return self.store.count()

    def close(self) -> None:
        self.store.close()
