"""What every consumer reads off a confluent-kafka message."""

from confluent_kafka import Message


def position(message: Message) -> tuple[str, int, int]:
    """The topic, partition and offset of a consumed message.

    confluent-kafka types them optional: only an error event (``message.error()`` set) lacks
    them, and consumers set those aside before they ask.
    """
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"a message without a position ({message.error()})")
    return topic, partition, offset
