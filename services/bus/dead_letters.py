"""Sending refused messages to a dead-letter topic, with the reason."""

import base64
from datetime import UTC, datetime

from schemas.dead_letters import DeadLetter
from schemas.serde import EncodedMessage

REASON_HEADER = "shelfsight-reason"
SOURCE_HEADER = "shelfsight-source-topic"


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
    """Wrap a refused message so nothing of it is lost and the reason travels with it."""
    raw = value or b""
    try:
        original, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(raw).decode(), "base64"
    letter = DeadLetter(
        reason=reason[:1000],
        source_topic=source_topic,
        source_partition=partition,
        source_offset=offset,
        service=service,
        original=original,
        original_encoding=encoding,  # type: ignore[arg-type]
        failed_at=datetime.now(UTC),
    )
    return EncodedMessage(
        key=key or b"",
        value=letter.model_dump_json().encode(),
        headers=[
            ("content-type", b"application/json"),
            ("schema", b"DeadLetter"),
            (REASON_HEADER, letter.reason.encode()),
            (SOURCE_HEADER, source_topic.encode()),
        ],
    )
