"""A product store whose backing collection can be swapped while it is read: `serve` reads
through one when the live model version changes (``shelfsight reembed``).

Every call runs on the collection current when it started; :meth:`SwitchableStore.swap`
returns the one it replaced once no call is using it any more, so its owner can close it
without pulling it from under a request.
"""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from services.vectors.store import ProductStore, SearchFilters, SearchHit, StoredProduct, VectorQuery

T = TypeVar("T")


class SwitchableStore:
    """>>> from unittest.mock import Mock
    >>> first, second = Mock(), Mock()
    >>> first.count.return_value, second.count.return_value = 1, 2
    >>> store = SwitchableStore(first)
    >>> store.count(), store.swap(second) is first, store.count()
    (1, True, 2)
    """

    def __init__(self, store: ProductStore) -> None:
        self._current = store
        self._users: dict[int, int] = {}  # id(store) -> calls running on it
        self._changed = threading.Condition()

    @property
    def current(self) -> ProductStore:
        return self._current

    @contextmanager
    def _using(self) -> Iterator[ProductStore]:
        with self._changed:
            store = self._current
            self._users[id(store)] = self._users.get(id(store), 0) + 1
        try:
            yield store
        finally:
            with self._changed:
                left = self._users[id(store)] - 1
                if left:
                    self._users[id(store)] = left
                else:
                    del self._users[id(store)]  # no count kept for a store nothing uses
                self._changed.notify_all()

    def _call(self, use: Callable[[ProductStore], T]) -> T:
        with self._using() as store:
            return use(store)

    def point_at(self, store: ProductStore) -> ProductStore:
        """Send new calls to ``store``; returns the one it replaces (calls may still run on it)."""
        with self._changed:
            old, self._current = self._current, store
        return old

    def drain(self, store: ProductStore, timeout_s: float = 60.0) -> bool:
        """Wait until no call runs on ``store`` (False if some still did after ``timeout_s``)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._users.get(id(store), 0) == 0, timeout=timeout_s)

    def swap(self, store: ProductStore, drain_s: float = 60.0) -> ProductStore:
        """Send new calls to ``store``; the one it replaces, once its running calls are done
        (or ``drain_s`` has passed)."""
        old = self.point_at(store)
        self.drain(old, drain_s)
        return old

    def ensure_collection(self, dims: dict[str, int]) -> None:
        self._call(lambda s: s.ensure_collection(dims))

    def upsert(self, products: list[StoredProduct]) -> None:
        self._call(lambda s: s.upsert(products))

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        return self._call(lambda s: s.update_payload(product_id, payload))

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        return self._call(lambda s: s.get(product_ids, with_vectors, fields))

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        return self._call(lambda s: s.labelled(limit, using))

    def search(self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        return self._call(lambda s: s.search(vector, using, limit, filters))

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        return self._call(lambda s: s.query_many(queries))

    def count(self) -> int:
        return self._call(lambda s: s.count())

    def close(self) -> None:
        self._current.close()
