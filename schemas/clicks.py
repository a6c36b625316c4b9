"""What shoppers do: one event per view, click, add-to-cart, purchase or dismissal."""

from enum import Enum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Contract, EventTime, Identifier, bounded_text
from schemas.experiments import ExperimentTag
from schemas.limits import LIMITS


class ClickKind(str, Enum):
    """How strongly an event says the shopper wants the product."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    DISMISS = "dismiss"
    IMPRESSION = "impression"  # shown, e.g. in a recommendation widget: teaches the click model, moves no profile


class ClickContext(BaseModel):
    """Where the event happened, when it came from a recommendation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    widget: bounded_text(64) | None = None  # type: ignore[valid-type]  # pydantic reads the Annotated bounds at runtime
    position: Annotated[int, Field(ge=0, le=LIMITS.recommendations)] | None = None
    request_id: Identifier | None = None
    experiment: ExperimentTag | None = Field(
        default=None,
        description="As the answer named it. Informational: credit goes by the served list that request_id names, never by this field.",
    )


class ClickEvent(Contract):
    """One shopper interaction. Keyed by user_id so a shopper's events stay in order."""

    partition_key_field: ClassVar[str] = "user_id"

    event_id: Identifier = Field(description="Unique per event; redeliveries carry the same id.")
    user_id: Identifier
    product_id: Identifier
    kind: ClickKind
    occurred_at: EventTime
    session_id: Identifier
    context: ClickContext | None = None
