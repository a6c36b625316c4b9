"""Reading back what a test produced, straight from the broker."""

from services.bus.tail import TailedMessage, tail
from services.settings import Settings


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 20.0) -> list[TailedMessage]:
    """The first ``expected`` messages of ``topic`` (fewer if the topic goes quiet for ``timeout`` s)."""
    return list(tail(settings, topic, from_beginning=True, max_messages=expected, idle_timeout=timeout))


def committed_offsets(settings: Settings, topic: str, group: str) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: the next offset ``group`` will read (its committed offset, or the
    log's start when it has none), and the partition's end."""
    from confluent_kafka import Consumer, TopicPartition

    from services.bus.config import consumer_config

    consumer = Consumer(consumer_config(settings, group))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)}
        out = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            done = committed.get(p, -1)
            out[p] = (done if done >= 0 else low, high)
        return out
    finally:
        consumer.close()


def group_lag(settings: Settings, topic: str, group: str) -> int:
    """Messages of ``topic`` that consumer group ``group`` has not committed yet."""
    return sum(high - done for done, high in committed_offsets(settings, topic, group).values())


def group_caught_up(settings: Settings, topic: str, group: str) -> bool:
    """Whether consumer group ``group`` has committed every message of ``topic``."""
    return group_lag(settings, topic, group) == 0


def wait_caught_up(settings: Settings, topic: str, group: str, timeout: float = 120.0) -> None:
    """Block until ``group`` has committed all of ``topic``; AssertionError after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group_caught_up(settings, topic, group):
            return
        time.sleep(0.25)
    raise AssertionError(f"{group} did not commit everything on {topic} within {timeout} s")
