"""librdkafka configuration derived from the settings, in one place."""

from schemas.limits import LIMITS
from services.settings import Settings

# A dead letter wraps the original value (base64 at worst: 4/3 larger) plus a small envelope.
DLQ_MESSAGE_BYTES = 2 * LIMITS.event_bytes
# The producer must accept the largest message any topic takes.
PRODUCER_MESSAGE_BYTES = DLQ_MESSAGE_BYTES + 64 * 1024


def producer_config(settings: Settings, **overrides: object) -> dict[str, object]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "enable.idempotence": True,  # acks=all and no duplicates from producer retries
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": PRODUCER_MESSAGE_BYTES,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: object) -> dict[str, object]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,  # commit only after the work is done: at-least-once
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 8 * PRODUCER_MESSAGE_BYTES,
        "max.partition.fetch.bytes": PRODUCER_MESSAGE_BYTES,
        **overrides,
    }
