"""Every topic Shelfsight uses, declared once: its contract, key and retention.

Names here are logical; a deployment may put a prefix in front of all of them
(``SHELFSIGHT_TOPIC_PREFIX``) to share a cluster.
"""

from dataclasses import dataclass

from schemas.base import Contract
from schemas.clicks import ClickEvent
from schemas.products import ProductIndexed, ProductListed
from schemas.recommendations import RecommendationRequest, RecommendationResponse


@dataclass(frozen=True)
class Topic:
    """A topic and the contract of its messages."""

    name: str
    contract: type[Contract]
    compacted: bool = False
    has_dlq: bool = False
    description: str = ""

    @property
    def dlq(self) -> str:
        """The dead-letter topic for messages that fail this topic's contract."""
        if not self.has_dlq:
            raise ValueError(f"topic {self.name} has no dead-letter topic")
        return f"{self.name}.dlq"


PRODUCTS_LISTED = Topic(
    "products.listed", ProductListed, has_dlq=True, description="Products put on sale or changed."
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

TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        PRODUCTS_LISTED,
        PRODUCTS_INDEXED,
        CLICKS,
        RECOMMENDATION_REQUESTS,
        RECOMMENDATION_RESPONSES,
    )
}


def topic_for(contract: type[Contract]) -> Topic:
    """The topic whose messages follow ``contract``."""
    for topic in TOPICS.values():
        if topic.contract is contract:
            return topic
    raise KeyError(f"no topic carries {contract.__name__}")
