"""What lands on a ``.dlq`` topic: a bounded, sanitised copy of the refused message, and why it was refused."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import EventTime
from schemas.limits import LIMITS

# base64 makes 4 characters of every 3 bytes.
_COPY_CHARS = 4 * -(-LIMITS.dead_letter_copy_bytes // 3)


class DeadLetter(BaseModel):
    """A refused message. Keyed like the original; the reason is also in the headers.

    ``original`` is the message's text when it is UTF-8 without control characters, else its
    bytes in base64, so a dead letter never carries raw control bytes and is never more than
    4/3 of the copy. A message over ``LIMITS.dead_letter_copy_bytes`` is copied up to that
    length (``truncated``); its length, SHA-256 and place in the source topic find it whole.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    reason: Annotated[str, Field(max_length=LIMITS.message_chars)]
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    service: str = Field(description="Who refused it: a service name or `publish`.")
    original: str = Field(max_length=_COPY_CHARS, description="The original value: UTF-8 text, or base64 when not text or not printable.")
    original_encoding: Literal["utf-8", "base64"]
    original_bytes: int = Field(default=0, ge=0, description="Length of the original value in bytes.")
    original_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole original value.")
    truncated: bool = Field(default=False, description="Only the first `dead_letter_copy_bytes` of the original are copied.")
    failed_at: EventTime
