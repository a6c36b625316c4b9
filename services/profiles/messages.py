"""A click message as the worker sees it: bytes and where they came from, nothing Faust-specific."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    # The Kafka topic it was read from. Messages with a topic have their partition's position
    # kept in Redis with the batch's effects (see positions.py); replays and tests leave it out.
    topic: str | None = None
