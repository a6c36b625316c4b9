"""The base every contract derives from."""

import re
import time
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from schemas.limits import LIMITS

SCHEMA_VERSION: Final = 1

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$"

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=LIMITS.id_chars, pattern=ID_PATTERN),
    Field(description="Opaque identifier: letters, digits and . _ : @ / -; starts with a letter or digit."),
]

EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


def too_far_ahead(value: datetime, now: float) -> str | None:
    """Why an event time is refused as coming from the future, as seen at ``now`` (None: it is not).
    The one rule for every receiver: the contract applies it on decoding, the profiles worker
    again on its own clock.

    >>> too_far_ahead(datetime(2026, 1, 1, tzinfo=UTC), now=datetime(2026, 1, 1, tzinfo=UTC).timestamp() - 301)
    "must not be more than 300 s in the future: check the sender's clock"
    """
    if value.timestamp() > now + LIMITS.future_skew_s:
        return f"must not be more than {LIMITS.future_skew_s} s in the future: check the sender's clock"
    return None


def _plausible_time(value: datetime) -> datetime:
    # A wrong unit or a zero default (1970, "-1") would otherwise pass as a valid past time.
    if value < EARLIEST_EVENT:
        raise ValueError("must not be before 2000-01-01: send ISO 8601 with an offset, e.g. 2026-11-28T10:00:00Z")
    ahead = too_far_ahead(value, time.time())
    if ahead is not None:
        raise ValueError(ahead)
    return value


EventTime = Annotated[
    AwareDatetime,
    AfterValidator(_plausible_time),
    Field(description=f"ISO 8601 with an offset; from 2000-01-01 to {LIMITS.future_skew_s} s after the receiver's clock."),
]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str, limit: int = LIMITS.message_chars) -> str:
    r"""``text`` fit to quote in an error, a header or a log line: control characters written as
    escapes, line breaks as spaces, at most ``limit`` characters, never empty.

    >>> print(printable(chr(1) + ": Extra inputs are not permitted"))
    \x01: Extra inputs are not permitted
    >>> printable("x" * 20, limit=8), printable("")
    ('xxxxx...', '?')
    """
    clean = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.replace("\n", " ").replace("\r", " "))
    if len(clean) > limit:
        clean = clean[: max(0, limit - 3)] + "..."
    return clean or "?"


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def bounded_text(max_chars: int, min_chars: int = 0, description: str = "") -> object:
    """A string type with a length bound and no control characters."""
    return Annotated[
        str,
        StringConstraints(min_length=min_chars, max_length=max_chars),
        AfterValidator(_no_control_characters),
        Field(description=description),
    ]


class Contract(BaseModel):
    """A versioned, immutable, strictly validated event.

    ``partition_key_field`` names the field whose value becomes the Kafka message key,
    so that all events about one shopper (or one product) stay ordered on one partition.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        ser_json_inf_nan="strings",
    )

    partition_key_field: ClassVar[str]

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION,
        description="Version of this contract. Consumers reject versions they do not know.",
    )

    def partition_key(self) -> str:
        return str(getattr(self, self.partition_key_field))
