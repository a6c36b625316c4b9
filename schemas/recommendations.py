"""Asking for recommendations over Kafka, and the answer."""

import math
import struct
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Contract, EventTime, Identifier, bounded_text
from schemas.experiments import ExperimentTag, Teams
from schemas.limits import LIMITS
from schemas.products import CategoryName, Currency, Price

ReplyTopic = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description=(
            "Where the answer goes: `recommendations.responses`, or a topic whose name starts with the "
            "responder's reply prefix (`SHELFSIGHT_REPLY_TOPIC_PREFIX`, by default `recommendations.responses.`), "
            "created beforehand; any other topic is refused."
        ),
    ),
]


class RecommendationFilters(BaseModel):
    """Business constraints every returned item must satisfy."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    category: CategoryName | None = None
    min_price: Price | None = None
    max_price: Price | None = None
    in_stock: bool | None = Field(default=True, description="Only items in stock (the default).")

    @model_validator(mode="after")
    def _ordered_range(self) -> "RecommendationFilters":
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError("min_price is greater than max_price")
        return self


class RecommendationRequest(Contract):
    """Ask for ``k`` recommendations for a shopper; the answer goes to ``reply_topic``."""

    partition_key_field: ClassVar[str] = "user_id"

    request_id: Identifier = Field(description="Echoed in the response, for correlation.")
    user_id: Identifier
    k: Annotated[int, Field(ge=1, le=LIMITS.recommendations)] = 10
    filters: RecommendationFilters = Field(default_factory=RecommendationFilters)
    context_product_id: Identifier | None = Field(default=None, description="The product on the page, for 'more like this'.")
    reply_topic: ReplyTopic = "recommendations.responses"
    requested_at: EventTime


class RecommendedItem(BaseModel):
    """One recommended product and why it was chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    product_id: Identifier
    score: Annotated[float, Field(allow_inf_nan=False)]
    reason: bounded_text(LIMITS.reason_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    # What a product card needs, so a storefront renders the answer without a second lookup.
    title: bounded_text(LIMITS.title_chars) | None = None  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    category: CategoryName | None = None
    price: Price | None = None
    currency: Currency | None = None
    image_url: Annotated[str, Field(max_length=LIMITS.url_chars)] | None = Field(
        default=None, description="The product's own image URL, or the API path that serves its thumbnail."
    )


class RecommendationError(BaseModel):
    """Why no recommendations could be given."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    code: Annotated[str, Field(pattern=r"^[a-z_]{1,64}$")]
    message: bounded_text(LIMITS.message_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime


class RecommendationResponse(Contract):
    """The answer to one request: items, or an error (never both)."""

    partition_key_field: ClassVar[str] = "user_id"

    request_id: bounded_text(LIMITS.id_chars, min_chars=1)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    user_id: bounded_text(LIMITS.id_chars)  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    items: list[RecommendedItem] = Field(default_factory=list, max_length=LIMITS.recommendations)
    error: RecommendationError | None = None
    model_version: bounded_text(LIMITS.id_chars) | None = None  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    experiment: ExperimentTag | None = Field(
        default=None, description="The live experiment and variant that ranked the list; the widget sends it back with its events."
    )
    generated_at: EventTime

    @model_validator(mode="after")
    def _items_or_error(self) -> "RecommendationResponse":
        if self.error is not None and self.items:
            raise ValueError("an error response carries no items")
        return self


FeatureName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class RecommendationServed(Contract):
    """What the recommender served for one request, with the features it ranked every candidate by.

    Logged on ``recommendations.served`` (keyed by user_id). The profiles worker joins it with
    the clicks that follow and learns the ranking from them; because the features travel with
    the list, training sees exactly what serving computed.

    ``products`` starts with the ``shown`` items in the order they were shown, then the other
    ranked candidates, best first. ``features`` holds one float32 row (little-endian) per product,
    one column per name in ``feature_names``.
    """

    partition_key_field: ClassVar[str] = "user_id"

    request_id: Identifier
    user_id: Identifier
    served_at: EventTime
    shown: Annotated[int, Field(ge=0, le=LIMITS.recommendations)]
    products: list[Identifier] = Field(max_length=LIMITS.served_candidates)
    feature_names: list[FeatureName] = Field(min_length=1, max_length=LIMITS.feature_names)
    features: bytes = Field(
        max_length=4 * LIMITS.served_candidates * LIMITS.feature_names,
        description="float32 little-endian, row-major: len(products) rows of len(feature_names) values; base64 in JSON.",
    )
    ranker: bounded_text(LIMITS.id_chars, min_chars=1) = Field(  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
        description="Which ranking ordered the list: `prior`, or `learned` after enough examples."
    )
    model_version: bounded_text(LIMITS.id_chars) | None = Field(  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
        default=None, description="The product model whose vectors the list was found with (`shelfsight reembed` changes it)."
    )
    experiment: ExperimentTag | None = Field(
        default=None, description="The experiment and variant that ranked the list: clicks on it count for that variant."
    )
    interleaving: Teams | None = Field(default=None, description="An interleaving experiment's list: who placed each shown product.")

    @model_validator(mode="after")
    def _consistent(self) -> "RecommendationServed":
        if self.shown > len(self.products):
            raise ValueError("shown is larger than the number of products")
        if self.interleaving is not None and len(self.interleaving.teams) != self.shown:
            raise ValueError("interleaving.teams must name one variant per shown product")
        if len(set(self.products)) != len(self.products):
            raise ValueError("products are listed twice")
        if len(self.features) != 4 * len(self.products) * len(self.feature_names):
            raise ValueError("features must hold one float32 per product and feature name")
        if not all(math.isfinite(v) for (v,) in struct.iter_unpack("<f", self.features)):
            raise ValueError("features must be finite")
        return self
