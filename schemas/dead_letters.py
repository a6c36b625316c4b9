"""What lands on a ``.dlq`` topic: the original message, untouched, and why it was refused."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import EventTime
from schemas.limits import LIMITS


class DeadLetter(BaseModel):
    """A refused message. Keyed like the original; the reason is also in the headers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    reason: Annotated[str, Field(max_length=LIMITS.message_chars)]
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    service: str = Field(description="Who refused it: a service name or `publish`.")
    original: str = Field(description="The original value: UTF-8 text, or base64 when not text.")
    original_encoding: Literal["utf-8", "base64"]
    failed_at: EventTime
