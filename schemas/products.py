"""Product contracts: what a store lists, and what the embedder makes of it."""

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from schemas.base import Contract, EventTime, Identifier, bounded_text
from schemas.limits import LIMITS

Price = Annotated[float, Field(ge=0, le=10_000_000, allow_inf_nan=False)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.")]
if TYPE_CHECKING:  # a str to type checkers; pydantic reads the bounds of the Annotated alias at runtime
    CategoryName = str
else:
    CategoryName = bounded_text(LIMITS.category_chars, min_chars=1, description="A category name.")
CategorySource = Literal["store", "store_head", "unsure", "model"]


class ProductListed(Contract):
    """A product put on sale, or listed again with new details (same product_id overwrites).

    The image travels inline (``image``, base64 in JSON) or by reference (``image_url``);
    a product with neither is indexed from its text alone.
    """

    partition_key_field: ClassVar[str] = "product_id"

    event: Literal["product.listed"] = Field(
        default="product.listed", description="Event type on products.listed; may be left out for listings."
    )
    product_id: Identifier
    title: bounded_text(LIMITS.title_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    description: bounded_text(LIMITS.description_chars) = ""  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    price: Price
    currency: Currency
    in_stock: bool = True
    category_hint: CategoryName | None = Field(default=None, description="The store's own category, if it has one.")
    attributes: dict[str, str] = Field(default_factory=dict, description="Free-form attributes such as colour or size.")
    image: bytes | None = Field(
        default=None,
        max_length=LIMITS.image_bytes,
        description="Image file bytes (JPEG, PNG or WebP); base64 in JSON.",
    )
    image_url: str | None = Field(
        default=None,
        max_length=LIMITS.url_chars,
        pattern=r"^(https?|file)://\S+$",
        description="Where the embedder may fetch the image, under its URL policy.",
    )
    listed_at: EventTime

    @field_validator("attributes")
    @classmethod
    def _bounded_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > LIMITS.attributes:
            raise ValueError(f"at most {LIMITS.attributes} attributes")
        for key, item in value.items():
            if not 0 < len(key) <= LIMITS.attribute_key_chars:
                raise ValueError(f"attribute names are 1-{LIMITS.attribute_key_chars} characters")
            if len(item) > LIMITS.attribute_value_chars:
                raise ValueError(f"attribute {key!r} is longer than {LIMITS.attribute_value_chars} characters")
        return value

    @field_validator("image")
    @classmethod
    def _non_empty_image(cls, value: bytes | None) -> bytes | None:
        if value is not None and len(value) == 0:
            raise ValueError("image is empty; leave it out for a text-only product")
        return value

    @model_validator(mode="after")
    def _one_image_source(self) -> "ProductListed":
        if self.image is not None and self.image_url is not None:
            raise ValueError("give either image or image_url, not both")
        return self


class ProductUpdated(Contract):
    """A change to a listed product that needs no new embedding: stock, price, or delisting.

    Travels on ``products.listed`` with the same key as the listing, so the two stay in order.
    Fields left out are unchanged.
    """

    partition_key_field: ClassVar[str] = "product_id"

    event: Literal["product.updated"]
    product_id: Identifier
    in_stock: bool | None = None
    price: Price | None = None
    currency: Currency | None = None
    delisted: bool = Field(default=False, description="True removes the product from recommendations.")
    updated_at: EventTime

    @model_validator(mode="after")
    def _changes_something(self) -> "ProductUpdated":
        if self.in_stock is None and self.price is None and not self.delisted:
            raise ValueError("an update changes in_stock, price, or delists the product")
        if (self.price is None) != (self.currency is None):
            raise ValueError("give price and currency together")
        return self


def _product_event_kind(value: Any) -> str:
    kind = value.get("event", "product.listed") if isinstance(value, dict) else getattr(value, "event", None)
    return str(kind)


ProductEvent = Annotated[
    Annotated[ProductListed, Tag("product.listed")] | Annotated[ProductUpdated, Tag("product.updated")],
    Discriminator(_product_event_kind),
]
PRODUCT_EVENTS: TypeAdapter[ProductListed | ProductUpdated] = TypeAdapter(ProductEvent)


def _unit_vector_values(vector: list[float]) -> list[float]:
    if not vector:
        raise ValueError("vectors must not be empty")
    if len(vector) > LIMITS.vector_dims:
        raise ValueError(f"vectors have at most {LIMITS.vector_dims} dimensions")
    if not all(math.isfinite(x) for x in vector):
        raise ValueError("vectors must be finite")
    return vector


class ProductIndexed(Contract):
    """A product as the embedder understood it: category, confidence and vectors.

    Published on a compacted topic keyed by product_id, so the latest state of every
    product can be rebuilt from the topic alone.
    """

    partition_key_field: ClassVar[str] = "product_id"

    product_id: Identifier
    title: bounded_text(LIMITS.title_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    price: Price
    currency: Currency
    in_stock: bool
    category: CategoryName = Field(
        description="The store's own category (the listing's category_hint); the classifier's prediction when the store gave none."
    )
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = Field(description="The classifier's confidence in predicted_category.")
    predicted_category: CategoryName | None = Field(
        default=None,
        description="What the classifier made of the product: the store head (trained on the store's own labelled listings) once it knows two of the store's categories, else the product model's classifier.",
    )
    category_source: CategorySource | None = Field(
        default=None,
        description="Where category came from: the listing's category_hint (store), the store head (store_head), nowhere sure enough ('unsure': category is 'Uncategorised'), or the product model's classes (model).",
    )
    vectors: dict[str, list[float]] = Field(description="Named L2-normalised vectors; 'fused' is always present.")
    image_error: bounded_text(LIMITS.message_chars) | None = Field(  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
        default=None, description="Why the image could not be used, when it could not."
    )
    model_version: bounded_text(LIMITS.id_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    listed_at: EventTime
    indexed_at: EventTime

    @field_validator("vectors")
    @classmethod
    def _valid_vectors(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        if "fused" not in value:
            raise ValueError("the 'fused' vector is required")
        if len(value) > LIMITS.vectors_per_event:
            raise ValueError(f"at most {LIMITS.vectors_per_event} named vectors")
        for name, vector in value.items():
            if not 0 < len(name) <= 32:
                raise ValueError("vector names are 1-32 characters")
            _unit_vector_values(vector)
        return value

    @model_validator(mode="after")
    def _indexed_after_listed(self) -> "ProductIndexed":
        if self.indexed_at < self.listed_at:
            raise ValueError("indexed_at is before listed_at")
        return self


__all__ = ["PRODUCT_EVENTS", "ProductEvent", "ProductIndexed", "ProductListed", "ProductUpdated"]
