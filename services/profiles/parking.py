"""Clicks whose product is not indexed yet: parked in Redis until it is, bounded in time and number.

``products.indexed`` is read by another agent and may be behind the clicks (a cold start, a
catch-up, a slow embedder), so a click on an unknown product is not lost: it waits in its
partition's parked set (``parked:<topic>:<partition>``), written with the batch, so it is as
durable as an applied click. Each write looks at the oldest parked clicks of the partitions it
touches and applies those whose product has arrived. A parked click waits at most
``ClickParams.park_s`` and at most ``ClickParams.park_max`` wait per partition; the rest are
dead-lettered.

Taking a parked click out is part of the write that applies (or refuses) it, and that write is
refused if the click is gone: whoever takes it first applies it, so it counts once. Nothing
here does I/O: :func:`read_parked` decodes what the driver read, and :class:`ParkingLot` adds
to the write being built (effects.py).
"""

from dataclasses import dataclass, field

from schemas import ClickEvent, ContractError, decode
from services.profiles.messages import RawMessage
from services.profiles.positions import Partition
from services.profiles.profile import ClickParams
from services.profiles.writes import WriteBatch
from state.keys import Keys

Refusal = tuple[RawMessage, str]  # a message for the dead-letter topic, and why
Waiting = dict[Partition, tuple[int, list[tuple[bytes, float]]]]  # per partition: how many wait, the oldest (value, parked at)


@dataclass(frozen=True)
class ParkedAt:
    """Where a parked click waits, and since when."""

    partition: Partition
    key: str  # the partition's parked set
    at: float  # when it was parked


@dataclass
class ParkedClicks:
    """The parked clicks one write looks at."""

    held: dict[str, int] = field(default_factory=dict)  # parked set → how many it holds
    events: list[tuple[RawMessage, ClickEvent]] = field(default_factory=list)  # readable: applied if their product is there
    origins: dict[RawMessage, ParkedAt] = field(default_factory=dict)  # where each readable one waits
    unreadable: list[tuple[RawMessage, ParkedAt, str]] = field(default_factory=list)  # with the reason: taken out, dead-lettered


def read_parked(waiting: Waiting, keys: Keys) -> ParkedClicks:
    """The parked clicks ``ProfileState.parked`` read, as messages without a place in Kafka."""
    clicks = ParkedClicks()
    for (topic, partition), (count, rows) in waiting.items():
        key = keys.parked(topic, partition)
        clicks.held[key] = count
        for value, at in rows:
            message = RawMessage(None, value, partition, -1)
            origin = ParkedAt((topic, partition), key, at)
            try:
                clicks.events.append((message, decode(ClickEvent, value)))
            except ContractError as exc:  # valid when parked; the contract may have changed since
                clicks.unreadable.append((message, origin, exc.reason))
                continue
            clicks.origins[message] = origin
    return clicks


class ParkingLot:
    """The parked sets as one write leaves them: clicks parked, clicks taken out."""

    def __init__(self, writes: WriteBatch, keys: Keys, params: ClickParams, held: dict[str, int], now: float) -> None:
        self._writes = writes
        self._keys = keys
        self._params = params
        self._held = dict(held)  # parked set → how many it holds, as this write leaves it
        self._now = now
        self.parked = 0  # clicks parked by this write
        self.unparked_from: set[Partition] = set()  # partitions whose parked clicks this write takes out

    def take_out(self, origin: ParkedAt, message: RawMessage) -> None:
        """Take a parked click out with this write; another worker taking it first refuses the write."""
        self._writes.require(origin.key, message.value)
        self.unparked_from.add(origin.partition)
        self._writes.call("ZREM", origin.key, message.value)

    def park_or_refuse(self, message: RawMessage, event: ClickEvent, origin: ParkedAt | None) -> Refusal | None:
        """A click whose product is unknown: parked (or, parked already, left to wait), or refused
        when it waited too long, cannot be parked (no place in Kafka) or too many wait already."""
        params = self._params
        if origin is not None:
            if self._now - origin.at > params.park_s:
                self.take_out(origin, message)
                keyed = RawMessage(event.user_id.encode(), message.value, message.partition, message.offset)
                return keyed, f"unknown product {event.product_id}: not indexed within {params.park_s:.0f} s"
            return None
        if message.topic is None:
            return message, f"unknown product {event.product_id}: no products.indexed event for it yet"
        key = self._keys.parked(message.topic, message.partition)
        held = self._held.get(key, 0)
        if held >= params.park_max:
            return message, f"unknown product {event.product_id}: {params.park_max} clicks already wait for their products"
        self._held[key] = held + 1
        self._writes.call("ZADD", key, repr(self._now), message.value)
        self.parked += 1
        return None
