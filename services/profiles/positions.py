"""Where each clicks partition stands, kept in Redis with the effects of the events before it.

Kafka's committed offset says what the worker *read*; Redis must say what it *applied*. The
two diverge when Redis loses its last writes (AOF ``everysec``: up to a second) after Kafka
has committed them, or when a batch's offsets are committed without being applied (an agent
cancelled mid-batch, a rebalance). So every batch's Lua write also moves its partitions'
positions, and only if they still hold the values read before the batch (compare-and-set):

- events below the stored position were applied already: skipped (a redelivery);
- a batch that starts after the stored position has a gap: the events in between are read
  back from Kafka (:class:`KafkaRangeReader`) and applied first;
- a write whose positions moved meanwhile (another worker owns the partition now, or this
  worker's own retried batch got through) is refused whole and recomputed.

Each stored position also counts the writes that touched its partition, so a write that
moves no offset (applying parked clicks) still fences every other write on that partition.

>>> m = [RawMessage(b"u", b"{}", 0, o, "clicks") for o in (4, 5, 6)]
>>> fresh, done = split_applied(m, {("clicks", 0): Position(5, 3)})
>>> [x.offset for x in fresh], [x.offset for x in done]
([5, 6], [4])
>>> gaps(fresh, {("clicks", 0): Position(2, 1)})
{('clicks', 0): (2, 5)}
>>> Position.parse(b"7/2").after(9).text()
'9/3'
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.bus.messages import position
from services.profiles.messages import RawMessage

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Position:
    """What Redis holds for one partition: the next offset to apply, and how many writes so far."""

    offset: int
    writes: int = 0

    @classmethod
    def parse(cls, raw: bytes | str | None) -> "Position | None":
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        offset, _, writes = text.partition("/")
        return cls(int(offset), int(writes or 0))

    def text(self) -> str:
        return f"{self.offset}/{self.writes}"

    def after(self, offset: int | None = None) -> "Position":
        """The position once one more write went through, moving the offset to ``offset`` if given."""
        return Position(self.offset if offset is None else offset, self.writes + 1)


Stored = dict[Partition, Position | None]


def advance(current: Position | None, offset: int | None = None) -> Position:
    """The position after one more write on a partition, moving the offset to ``offset`` if
    given; the first write on a partition (``current`` None) must give one."""
    if current is None:
        if offset is None:
            raise ValueError("the first write on a partition must set its offset")
        return Position(offset, 1)
    return current.after(offset)


def partitions_of(messages: list[RawMessage]) -> set[Partition]:
    return {(m.topic, m.partition) for m in messages if m.topic is not None}


def split_applied(messages: list[RawMessage], stored: Stored) -> tuple[list[RawMessage], list[RawMessage]]:
    """Messages not applied yet, in offset order per partition, and those below their stored position."""
    fresh: list[RawMessage] = []
    done: list[RawMessage] = []
    for m in sorted(messages, key=lambda m: (m.topic or "", m.partition, m.offset)) if stored else messages:
        position = stored.get((m.topic, m.partition)) if m.topic is not None else None
        (done if position is not None and m.offset < position.offset else fresh).append(m)
    return fresh, done


def gaps(fresh: list[RawMessage], stored: Stored) -> dict[Partition, tuple[int, int]]:
    """Partitions whose first fresh offset lies beyond the stored position: (stored, first fresh)."""
    first: dict[Partition, int] = {}
    for m in fresh:
        if m.topic is not None:
            key = (m.topic, m.partition)
            first[key] = min(first.get(key, m.offset), m.offset)
    holes = {}
    for p, f in first.items():
        position = stored.get(p)
        if position is not None and f > position.offset:
            holes[p] = (position.offset, f)
    return holes


def next_positions(messages: list[RawMessage]) -> dict[Partition, int]:
    """The position each partition moves to once ``messages`` are applied."""
    out: dict[Partition, int] = {}
    for m in messages:
        if m.topic is not None:
            key = (m.topic, m.partition)
            out[key] = max(out.get(key, 0), m.offset + 1)
    return out


class RangeReader(Protocol):
    async def read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[RawMessage]:
        """Up to ``limit`` messages with offsets in [start, end), oldest first."""
        ...

    async def end_offset(self, topic: str, partition: int) -> int:
        """The partition's next offset (high watermark)."""
        ...


class RangeReadFailed(ConnectionError):
    """Kafka did not deliver a range in time; the batch is retried like any connection error."""


class KafkaRangeReader:
    """Reads offset ranges with a plain assigned consumer: no group membership, no commits."""

    def __init__(self, config: dict[str, Any], timeout_s: float = 30.0) -> None:
        self._config = {
            **config,
            "group.id": f"shelfsight-range-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        self._timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    async def read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[RawMessage]:
        return await asyncio.to_thread(self._read, topic, partition, start, end, limit)

    async def end_offset(self, topic: str, partition: int) -> int:
        def high() -> int:
            try:
                return int(self._client().get_watermark_offsets(TopicPartition(topic, partition), timeout=self._timeout_s)[1])
            except KafkaException as exc:
                raise RangeReadFailed(f"watermarks of {topic}[{partition}]: {exc}") from exc

        return await asyncio.to_thread(high)

    def _read(self, topic: str, partition: int, start: int, end: int, limit: int) -> list[RawMessage]:
        consumer = self._client()
        consumer.assign([TopicPartition(topic, partition, start)])
        out: list[RawMessage] = []
        deadline = time.monotonic() + self._timeout_s
        try:
            while len(out) < limit:
                if time.monotonic() > deadline:
                    raise RangeReadFailed(f"{topic}[{partition}] offsets {start}..{end}: not delivered within {self._timeout_s:.0f} s")
                for message in consumer.consume(min(500, limit - len(out)), timeout=1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return out
                        raise RangeReadFailed(f"{topic}[{partition}]: {error}")
                    _, _, offset = position(message)
                    if offset >= end:
                        return out
                    out.append(RawMessage(message.key(), message.value(), partition, offset, topic))
            return out
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
