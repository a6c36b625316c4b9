"""Sending refused messages to a dead-letter topic, with the reason.

A dead letter must always fit the producer's limit, whatever was refused: a message of
control bytes grows sixfold as JSON text (``\\u0001``), so anything that is not printable
UTF-8 is copied as base64 (4/3), and anything longer than the copy limit is cut, with its
length and SHA-256 kept. The reason is made printable too: it is quoted in headers and logs.
"""

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import Literal

from schemas.base import printable
from schemas.dead_letters import DeadLetter
from schemas.limits import LIMITS
from schemas.serde import EncodedMessage

REASON_HEADER = "shelfsight-reason"
SOURCE_HEADER = "shelfsight-source-topic"
KEY_BYTES = 1024  # a dead letter keeps at most this much of the original key

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def copy_of(raw: bytes, limit: int = LIMITS.dead_letter_copy_bytes) -> tuple[str, Literal["utf-8", "base64"], bool]:
    """The original as a dead letter carries it: (text, encoding, truncated).

    >>> copy_of(b'{"a": 1}')
    ('{"a": 1}', 'utf-8', False)
    >>> copy_of(bytes([1, 2, 3]))
    ('AQID', 'base64', False)
    >>> copy_of(b"abcdef", limit=4)
    ('abcd', 'utf-8', True)
    """
    truncated = len(raw) > limit
    kept = raw[:limit]
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    # Quotes, backslashes, line breaks and tabs double when escaped: past 4/3, base64 is the smaller copy.
    if text is not None and not _UNPRINTABLE.search(text) and len(kept) + _escaped(text) <= 4 * len(kept) / 3:
        return text, "utf-8", truncated
    return base64.b64encode(kept).decode(), "base64", truncated


def _escaped(text: str) -> int:
    """How many characters of ``text`` JSON writes as two."""
    return sum(text.count(c) for c in '"\\\n\r\t')


def dead_letter(
    *,
    value: bytes | None,
    key: bytes | None,
    reason: str,
    source_topic: str,
    service: str,
    partition: int | None = None,
    offset: int | None = None,
) -> EncodedMessage:
    """Wrap a refused message: a bounded, printable copy, where it came from, and why."""
    raw = value or b""
    original, encoding, truncated = copy_of(raw)
    letter = DeadLetter(
        reason=printable(reason, LIMITS.message_chars),
        source_topic=source_topic,
        source_partition=partition,
        source_offset=offset,
        service=service,
        original=original,
        original_encoding=encoding,
        original_bytes=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest(),
        truncated=truncated,
        failed_at=datetime.now(UTC),
    )
    return EncodedMessage(
        key=(key or b"")[:KEY_BYTES],
        value=letter.model_dump_json().encode(),
        headers=[
            ("content-type", b"application/json"),
            ("schema", b"DeadLetter"),
            (REASON_HEADER, letter.reason.encode()),
            (SOURCE_HEADER, source_topic.encode()),
        ],
    )
