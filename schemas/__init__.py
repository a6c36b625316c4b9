"""Shelfsight's event contracts: the only thing the services share.

Every message on a Shelfsight topic is one of these pydantic models, serialised as
UTF-8 JSON, keyed by the field that keeps related events on one partition.

>>> from schemas import ClickEvent, encode, decode
>>> click = ClickEvent.model_validate_json(
...     '{"event_id": "e-1", "user_id": "u-7", "product_id": "p-42", "kind": "click",'
...     ' "occurred_at": "2026-11-27T10:00:00Z", "session_id": "s-1"}')
>>> message = encode(click)
>>> message.key
b'u-7'
>>> decode(ClickEvent, message.value) == click
True
"""

from schemas.base import SCHEMA_VERSION, Contract
from schemas.clicks import ClickContext, ClickEvent, ClickKind
from schemas.dead_letters import DeadLetter
from schemas.errors import ContractError
from schemas.limits import LIMITS, Limits
from schemas.products import ProductIndexed, ProductListed, ProductUpdated
from schemas.recommendations import (
    RecommendationError,
    RecommendationFilters,
    RecommendationRequest,
    RecommendationResponse,
    RecommendationServed,
    RecommendedItem,
)
from schemas.serde import EncodedMessage, decode, encode, partition_key
from schemas.topics import TOPICS, Topic, topic_for

__all__ = [
    "LIMITS",
    "SCHEMA_VERSION",
    "TOPICS",
    "ClickContext",
    "ClickEvent",
    "ClickKind",
    "Contract",
    "ContractError",
    "DeadLetter",
    "EncodedMessage",
    "Limits",
    "ProductIndexed",
    "ProductListed",
    "ProductUpdated",
    "RecommendationError",
    "RecommendationFilters",
    "RecommendationRequest",
    "RecommendationResponse",
    "RecommendationServed",
    "RecommendedItem",
    "Topic",
    "decode",
    "encode",
    "partition_key",
    "topic_for",
]
