"""Every topic Shelfsight uses, declared once: its contract, key and retention.

Names here are logical; a deployment may put a prefix in front of all of them
(``SHELFSIGHT_TOPIC_PREFIX``) to share a cluster.
"""

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from schemas.base import Contract
from schemas.clicks import ClickEvent
from schemas.products import (
    PRODUCT_EVENTS,
    ProductIndexed,
    ProductListed,
    ProductUpdated,
)
from schemas.recommendations import (
    RecommendationRequest,
    RecommendationResponse,
    RecommendationServed,
)


@dataclass(frozen=True)
class Topic:
    """A topic and the contract of its messages."""

    name: str
    contract: type[Contract]
    compacted: bool = False
    has_dlq: bool = False
    description: str = ""
    keep_forever: bool = False  # the source of truth: `shelfsight reindex` replays it from the start
    retention_hours: int | None = None  # shorter than the broker's default, for bulky short-lived messages
    also: tuple[type[Contract], ...] = ()  # further contracts that share the topic (and its keys)
    union: TypeAdapter[Any] | None = None  # reads any of them, by their `event` field

    @property
    def reader(self) -> "type[Contract] | TypeAdapter[Any]":
        """What to decode this topic's messages with (see ``schemas.serde.decode``)."""
        return self.union or self.contract

    @property
    def dlq(self) -> str:
        """The dead-letter topic for messages that fail this topic's contract."""
        if not self.has_dlq:
            raise ValueError(f"topic {self.name} has no dead-letter topic")
        return f"{self.name}.dlq"


PRODUCTS_LISTED = Topic(
    "products.listed",
    ProductListed,
    has_dlq=True,
    keep_forever=True,
    description="Products put on sale, and later changes to them (stock, price, delisting).",
    also=(ProductUpdated,),
    union=PRODUCT_EVENTS,
)
PRODUCTS_INDEXED = Topic(
    "products.indexed",
    ProductIndexed,
    compacted=True,
    has_dlq=True,
    description="Latest embedding and category of every product (compacted).",
)
CLICKS = Topic("clicks", ClickEvent, has_dlq=True, description="Shopper interactions.")
RECOMMENDATION_REQUESTS = Topic(
    "recommendations.requests",
    RecommendationRequest,
    has_dlq=True,
    description="Requests for recommendations.",
)
RECOMMENDATION_RESPONSES = Topic(
    "recommendations.responses",
    RecommendationResponse,
    description="Default reply topic for recommendation requests.",
)
RECOMMENDATIONS_SERVED = Topic(
    "recommendations.served",
    RecommendationServed,
    has_dlq=True,
    description="Every served list with the features it was ranked by: the ranking learns from it.",
    retention_hours=24,  # joined with clicks within 30 minutes; a day leaves room to replay a worker's backlog
)

TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        PRODUCTS_LISTED,
        PRODUCTS_INDEXED,
        CLICKS,
        RECOMMENDATION_REQUESTS,
        RECOMMENDATION_RESPONSES,
        RECOMMENDATIONS_SERVED,
    )
}


def topic_for(contract: type[Contract]) -> Topic:
    """The topic whose messages follow ``contract``."""
    for topic in TOPICS.values():
        if topic.contract is contract or contract in topic.also:
            return topic
    raise KeyError(f"no topic carries {contract.__name__}")
