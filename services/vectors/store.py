"""The interface every product store backend implements."""

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

VECTOR_NAMES = ("image", "text", "fused")
# qdrant-edge-py 0.9 matches no boolean (MatchValue(True) finds nothing, indexed or not), so
# stock is also stored as the keyword `availability`, which both backends filter on.
INDEXED_FIELDS = {"category": "keyword", "availability": "keyword", "price": "float"}


def availability(in_stock: bool) -> str:
    return "in_stock" if in_stock else "out_of_stock"


def with_availability(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus the keyword mirror of its ``in_stock`` flag, when it has one."""
    if "in_stock" in payload:
        return {**payload, "availability": availability(bool(payload["in_stock"]))}
    return payload

# Point ids are derived from product ids, so a redelivered or re-listed product overwrites
# its point instead of adding a duplicate.
_NAMESPACE = uuid.UUID("6f1c1f2e-6a55-4b59-9d4a-5e1f3c2b7a10")


def point_id(product_id: str) -> str:
    """The Qdrant point id of a product: a UUIDv5 of its product_id.

    >>> point_id("sku-1") == point_id("sku-1") != point_id("sku-2")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, product_id))


class StoreMismatch(RuntimeError):
    """The existing collection was made for other vector dimensions or names."""


@dataclass(frozen=True)
class StoredProduct:
    product_id: str
    vectors: dict[str, list[float]]  # a subset of VECTOR_NAMES; "fused" always
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchHit:
    product_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilters:
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)  # product ids


class ProductStore(Protocol):
    """Where product vectors and their payload live."""

    def ensure_collection(self, dims: dict[str, int]) -> None:
        """Create the collection for these vector sizes, or check an existing one matches."""

    def upsert(self, products: list[StoredProduct]) -> None:
        """Insert or overwrite products (idempotent: the point id comes from product_id)."""

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        """Change payload fields of a stored product; False when there is no such product."""

    def get(self, product_ids: list[str], with_vectors: bool = False) -> list[StoredProduct]:
        """The stored products among ``product_ids``, in no particular order."""

    def search(
        self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        """Nearest products to ``vector`` in the named space, best first."""

    def count(self) -> int: ...

    def close(self) -> None: ...
