"""The interface every product store backend implements."""

import functools
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

VECTOR_NAMES = ("image", "text", "fused")
# qdrant-edge-py 0.9 matches no boolean (MatchValue(True) finds nothing, indexed or not), so
# stock is also stored as the keyword `availability`, which both backends filter on.
HINT = "category_hint"  # the store's own category of a product, in its payload (None when it gave none)
INDEXED_FIELDS = {"category": "keyword", "availability": "keyword", "price": "float", "listed_ts": "float"}


def availability(in_stock: bool) -> str:
    return "in_stock" if in_stock else "out_of_stock"


def with_availability(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` plus the keyword mirror of its ``in_stock`` flag, when it has one."""
    if "in_stock" in payload:
        return {**payload, "availability": availability(bool(payload["in_stock"]))}
    return payload


def stored_field(payload: dict[str, Any], field: str) -> Any:
    """``field`` of ``payload`` as :func:`with_availability` would store it, without copying the payload."""
    if field == "availability" and "in_stock" in payload:
        return availability(bool(payload["in_stock"]))
    return payload.get(field)


# Point ids are derived from product ids, so a redelivered or re-listed product overwrites
# its point instead of adding a duplicate.
_NAMESPACE = uuid.UUID("6f1c1f2e-6a55-4b59-9d4a-5e1f3c2b7a10")


@functools.lru_cache(maxsize=100_000)  # uuid5 hashes: recommendations ask for the same ids again and again
def point_id(product_id: str) -> str:
    """The Qdrant point id of a product: a UUIDv5 of its product_id.

    >>> point_id("sku-1") == point_id("sku-1") != point_id("sku-2")
    True
    """
    return str(uuid.uuid5(_NAMESPACE, product_id))


def read_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    """The payload a point came back with: every read asks for one (``product_id`` at least).

    >>> read_payload({"product_id": "sku-1"})
    {'product_id': 'sku-1'}
    """
    if payload is None:
        raise ValueError("a point came back without the payload it was read with")
    return payload


def read_vectors(vector: object) -> dict[str, list[float]]:
    """The vectors a point came back with, by name: the stores hold named dense vectors only
    (``{}`` when it was read without them).

    >>> read_vectors({"fused": [1.0, 0.0]}), read_vectors(None)
    ({'fused': [1.0, 0.0]}, {})
    """
    if not vector:
        return {}
    if not isinstance(vector, dict):
        raise TypeError(f"a point came back with an unnamed vector ({type(vector).__name__}); the stores hold named vectors only")
    return dict(vector)


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
    vector: list[float] | None = None  # the searched space's vector, when asked for


@dataclass(frozen=True)
class SearchFilters:
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock: bool | None = None
    listed_after: float | None = None  # epoch seconds: only products listed since
    exclude: frozenset[str] = field(default_factory=frozenset)  # product ids

    def excluding(self, product_ids: Iterable[str]) -> "SearchFilters":
        """The same filters, also leaving out ``product_ids``."""
        return replace(self, exclude=self.exclude | frozenset(product_ids))


def vector_selection(which: bool | tuple[str, ...]) -> bool | list[str]:
    """``with_vectors`` as both backends take it: all, none, or a list of names."""
    return list(which) if isinstance(which, tuple) else which


@dataclass(frozen=True)
class Match:
    """A payload field equal to a keyword."""

    field: str
    value: str


@dataclass(frozen=True)
class Within:
    """A numeric payload field present and inside [gte, lte] (an open end: None)."""

    field: str
    gte: float | None = None
    lte: float | None = None


Condition = Match | Within


def conditions(filters: SearchFilters) -> list[Condition]:
    """The filter rule, written once: what a product's payload must satisfy to pass ``filters``
    (besides not being excluded). Each backend translates these into its own Qdrant dialect, and
    :func:`matches` applies them to payloads in memory.

    >>> conditions(SearchFilters(category="Bag", in_stock=True, max_price=30.0))
    [Match(field='category', value='Bag'), Match(field='availability', value='in_stock'), Within(field='price', gte=None, lte=30.0)]
    """
    out: list[Condition] = []
    if filters.category is not None:
        out.append(Match("category", filters.category))
    if filters.in_stock is not None:
        out.append(Match("availability", availability(filters.in_stock)))
    if filters.min_price is not None or filters.max_price is not None:
        out.append(Within("price", filters.min_price, filters.max_price))
    if filters.listed_after is not None:
        out.append(Within("listed_ts", gte=filters.listed_after))
    return out


def _holds(condition: Condition, payload: dict[str, Any]) -> bool:
    value = stored_field(payload, condition.field)
    if isinstance(condition, Match):
        return value == condition.value
    if value is None:
        return False
    return (condition.gte is None or value >= condition.gte) and (condition.lte is None or value <= condition.lte)


def matches(payload: dict[str, Any], filters: SearchFilters) -> bool:
    """Whether a stored product passes ``filters``: the same conditions the backends push into Qdrant.

    >>> matches({"category": "Bag", "price": 20.0, "in_stock": True}, SearchFilters(category="Bag", max_price=30.0))
    True
    >>> matches({"category": "Bag", "price": 20.0, "in_stock": False}, SearchFilters(in_stock=True))
    False
    """
    return matcher(filters)(payload)


def matcher(filters: SearchFilters) -> Callable[[dict[str, Any]], bool]:
    """:func:`matches` for many payloads: the conditions are worked out once, not per payload."""
    rules, exclude = conditions(filters), filters.exclude

    def passes(payload: dict[str, Any]) -> bool:
        return payload.get("product_id") not in exclude and all(_holds(c, payload) for c in rules)

    return passes


@dataclass(frozen=True)
class VectorQuery:
    """One search: nearest to ``vector``, or — with ``positives`` — a recommend query that
    scores each product by its best likeness to a positive example against the negatives."""

    vector: list[float] | None = None
    positives: tuple[list[float], ...] = ()
    negatives: tuple[list[float], ...] = ()
    using: str = "fused"
    limit: int = 10
    filters: SearchFilters | None = None
    fields: tuple[str, ...] | None = None  # payload fields to return; None: all of them
    with_vector: bool = False

    def __post_init__(self) -> None:
        if (self.vector is None) == (not self.positives):
            raise ValueError("a VectorQuery has either a vector or positive examples")


class ProductStore(Protocol):
    """Where product vectors and their payload live."""

    def ensure_collection(self, dims: dict[str, int]) -> None:
        """Create the collection for these vector sizes, or check an existing one matches."""

    def upsert(self, products: list[StoredProduct]) -> None:
        """Insert or overwrite products (idempotent: the point id comes from product_id)."""

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        """Change payload fields of a stored product; False when there is no such product."""

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        """The stored products among ``product_ids``, in no particular order.

        ``with_vectors``: all named vectors, or those named; ``fields``: a subset of the payload.
        """

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        """Up to ``limit`` products the store gave a category (``category_hint``), with the
        ``using`` vector and only that payload field: the store head's examples."""

    def search(self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        """Nearest products to ``vector`` in the named space, best first."""

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        """Several searches planned as one batch; one hit list per query, best first."""

    def count(self) -> int: ...

    def close(self) -> None: ...
