"""Reading a topic for people: one line per message, large fields shortened."""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.serde import Headers
from services.bus.config import consumer_config
from services.bus.messages import position
from services.errors import UserError
from services.settings import Settings

_SHORTEN = 120


@dataclass(frozen=True)
class TailedMessage:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    headers: dict[str, str]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The next offset of every partition of ``topic``: where messages sent from now on land."""
    consumer = Consumer(consumer_config(settings, group_id=f"shelfsight-tail-{uuid.uuid4()}"))
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            raise UserError(f"topic {topic} does not exist; create it with `shelfsight topics create`")
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in found.partitions}
    finally:
        consumer.close()


def tail(
    settings: Settings,
    topic: str,
    from_beginning: bool = True,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    since: dict[int, int] | None = None,
) -> Iterator[TailedMessage]:
    """Yield messages of ``topic`` without joining a consumer group or committing.

    ``since`` (from :func:`end_offsets`) starts each partition at a given offset instead.
    """
    consumer = Consumer(consumer_config(settings, group_id=f"shelfsight-tail-{uuid.uuid4()}", **{"enable.partition.eof": False}))
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise UserError(f"topic {topic} does not exist; create it with `shelfsight topics create`")
        partitions = found.partitions
        start = -2 if from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
        consumer.assign([TopicPartition(topic, p, (since or {}).get(p, start)) for p in partitions])
        seen, last = 0, time.monotonic()
        while max_messages is None or seen < max_messages:
            message = consumer.poll(0.5)
            if message is None:
                if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                    return
                continue
            if message.error():
                raise KafkaException(message.error())
            last = time.monotonic()
            seen += 1
            at_topic, partition, offset = position(message)
            key = message.key()
            yield TailedMessage(
                topic=at_topic,
                partition=partition,
                offset=offset,
                key=key.decode(errors="replace") if key else None,
                value=(message.value() or b"").decode(errors="replace"),
                headers=_text_headers(message.headers()),
            )
    finally:
        consumer.close()


def _text_headers(headers: Headers | dict[str, str | bytes | None] | None) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else v or "" for k, v in pairs}


def shorten(value: str, width: int = _SHORTEN) -> str:
    """A JSON value with long strings (inline images, vectors) cut down for display."""
    try:
        data = json.loads(value)
    except ValueError:
        return value if len(value) <= width * 4 else value[: width * 4] + "…"

    def cut(item: object) -> object:
        if isinstance(item, str) and len(item) > width:
            return item[:width] + f"…({len(item)} chars)"
        if isinstance(item, list) and len(item) > 8:
            return [cut(i) for i in item[:4]] + [f"…({len(item)} items)"]
        if isinstance(item, dict):
            return {k: cut(v) for k, v in item.items()}
        return item

    return json.dumps(cut(data), ensure_ascii=False)
