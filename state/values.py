"""The values stored under the keys of ``state.keys``: a shopper's profile and a product's item
hash, each with its codec. The worker writes them, the recommender and the benches read and
write them through these functions only.

>>> item = Item(np.array([1.0, 0.0], dtype=np.float32), "Bag", 25.0, True)
>>> decode_item({k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in encode_item(item).items()}) == item
True
"""

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

log = logging.getLogger(__name__)

# What each kind of event adds to a shopper's profile vector (times the product's vector): the
# worker moves profiles by them, and the recommender weighs a shopper's recent and dismissed
# products by them where it builds a taste without a stored profile.
KIND_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "dismiss": -3.0, "impression": 0.0}


@dataclass
class Profile:
    """A shopper's decayed preferences in the fused space (``services.profiles.profile`` moves them)."""

    vector: np.ndarray  # decayed, weighted sum of item vectors (not normalised)
    categories: dict[str, float]
    updated_at: float
    counts: dict[str, int]
    log_price: float = 0.0  # decayed, weighted sum of log(1 + price) of what the shopper wanted
    price_weight: float = 0.0  # ... and the sum of those weights: their ratio is the usual log price
    model_version: str | None = None  # whose space ``vector`` is in (None: written before versions were kept)

    @classmethod
    def empty(cls, dims: int) -> "Profile":
        return cls(np.zeros(dims, dtype=np.float32), {}, 0.0, {})

    @property
    def usual_log_price(self) -> float | None:
        return self.log_price / self.price_weight if self.price_weight > 1e-9 else None


@dataclass(frozen=True)
class Item:
    """What the worker and the recommender need of an indexed product, kept beside the profiles."""

    vector: np.ndarray
    category: str
    price: float
    in_stock: bool
    model_version: str | None = None  # whose space ``vector`` is in (None: written before versions were kept)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Item)
            and np.array_equal(self.vector, other.vector)
            and (self.category, self.price, self.in_stock, self.model_version)
            == (other.category, other.price, other.in_stock, other.model_version)
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose (its vector is an array); typeshed wants a method


def encode_profile(p: Profile) -> dict[str, Any]:
    return {
        "vec": p.vector.astype(np.float32).tobytes(),
        "t": repr(p.updated_at),
        "cats": json.dumps(p.categories),
        "counts": json.dumps(p.counts),
        "lp": repr(p.log_price),
        "lpw": repr(p.price_weight),
        "mv": p.model_version or "",
    }


def same_space(a: str | None, b: str | None, unversioned: str | None = None) -> bool:
    """Whether vectors of model versions ``a`` and ``b`` may be compared. A vector written before
    versions were recorded (None) is of ``unversioned``, the version live before the first switch
    (``state.catalogue``); before any switch there was one space, and it matches everything.

    >>> same_space("m-1", "m-1"), same_space(None, "m-2"), same_space("m-1", "m-2")
    (True, True, False)
    >>> same_space(None, "m-2", unversioned="m-1"), same_space(None, "m-1", unversioned="m-1")
    (False, True)
    """
    a, b = a or unversioned, b or unversioned
    return a is None or b is None or a == b


def decode_profile(raw: dict[bytes, bytes]) -> Profile | None:
    """The stored profile; None when there is none, or when what is stored is not a profile
    (a writer of another version): the shopper then starts afresh instead of failing every batch.

    >>> decode_profile({b"vec": b"", b"cats": b"not json"}) is None
    True
    """
    if not raw or b"vec" not in raw:
        return None
    try:
        return _profile(raw)
    except (KeyError, ValueError, TypeError, AttributeError):
        log.warning("stored profile ignored: not in this version's format")
        return None


def _profile(raw: dict[bytes, bytes]) -> Profile:
    return Profile(
        np.frombuffer(raw[b"vec"], dtype=np.float32).copy(),
        json.loads(raw[b"cats"]),
        float(raw[b"t"]),
        {k: int(v) for k, v in json.loads(raw[b"counts"]).items()},
        float(raw.get(b"lp", 0.0)),
        float(raw.get(b"lpw", 0.0)),
        raw.get(b"mv", b"").decode() or None,
    )


def encode_item(item: Item) -> "dict[FieldT, EncodableT]":
    return {
        "vec": np.asarray(item.vector, dtype=np.float32).tobytes(),
        "category": item.category,
        "price": repr(float(item.price)),
        "in_stock": "1" if item.in_stock else "0",
        "mv": item.model_version or "",
    }


def decode_item(raw: dict[bytes, bytes]) -> Item | None:
    """The stored item; None when there is none or it is not in this version's format."""
    if not raw or b"vec" not in raw:
        return None
    try:
        return _item(raw)
    except (KeyError, ValueError, TypeError, AttributeError):
        log.warning("stored item ignored: not in this version's format")
        return None


def _item(raw: dict[bytes, bytes]) -> Item:
    return Item(
        np.frombuffer(raw[b"vec"], dtype=np.float32).copy(),
        raw[b"category"].decode(),
        float(raw[b"price"]),
        raw[b"in_stock"] == b"1",
        raw.get(b"mv", b"").decode() or None,
    )
