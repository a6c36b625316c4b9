"""Turning contracts into Kafka messages and back."""

from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

from schemas.base import Contract
from schemas.errors import ContractError
from schemas.limits import LIMITS

CONTENT_TYPE = "application/json"

C = TypeVar("C", bound=Contract)

Headers = list[tuple[str, str | bytes | None]]
"""Kafka message headers as producers take them: name, value (text, bytes or none)."""


@dataclass(frozen=True)
class EncodedMessage:
    """A message ready for a producer: key, value and headers."""

    key: bytes
    value: bytes
    headers: Headers = field(default_factory=list)


def partition_key(event: Contract) -> str:
    """The Kafka key of ``event``: product_id for products, user_id for shoppers."""
    return event.partition_key()


def encode(event: Contract) -> EncodedMessage:
    """Serialise ``event`` as JSON, keyed by its partition key."""
    value = event.model_dump_json().encode()
    if len(value) > LIMITS.event_bytes:
        raise ContractError(f"event is {len(value)} bytes; the limit is {LIMITS.event_bytes}")
    return EncodedMessage(
        key=partition_key(event).encode(),
        value=value,
        headers=[
            ("content-type", CONTENT_TYPE.encode()),
            ("schema", type(event).__name__.encode()),
            ("schema-version", str(event.schema_version).encode()),
        ],
    )


def decode(contract: "type[C] | TypeAdapter[C]", value: bytes | str | None) -> C:
    """Parse and validate ``value`` as ``contract`` (a model, or a TypeAdapter of a union of them).

    Any failure is a :class:`ContractError`.
    """
    if value is None:
        raise ContractError("message has no value")
    if len(value) > LIMITS.event_bytes:
        raise ContractError(f"message is {len(value)} bytes; the limit is {LIMITS.event_bytes}")
    try:
        if isinstance(contract, TypeAdapter):
            return contract.validate_json(value)
        return contract.model_validate_json(value)
    except ValidationError as exc:
        raise ContractError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
