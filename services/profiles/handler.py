"""Applying click batches exactly once: positions, gaps read back from Kafka, refused writes retried.

Runs inside the Faust agent but knows nothing of Faust: it takes raw messages and returns what
happened, so it can be tested, benchmarked and replayed (``shelfsight evaluate-recs``) on its
own. Each write's messages are taken in by intake.py, its state read by snapshot.py, its
effects computed with no I/O by effects.py (clicks for products not indexed yet: parking.py).

Messages read from Kafka carry their topic: their partitions' positions are written by the same
script as their effects, so each event takes effect exactly once even when Redis loses its last
writes or Kafka redelivers (see positions.py). Dead letters are delivered before that write, and
the learners are updated only after it has succeeded, so a batch retried because Redis was away
is never learned twice.

With the state split into key groups for Redis Cluster (keys.py), each group is written by its
own script and keeps its own positions: a batch is applied group by group, each group taking the
events of its shoppers and passing over the rest, as if each group were a consumer of the
partition of its own. One group's write never waits for, or undoes, another's.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from models.ranking.learners import Learners
from services.profiles.effects import BatchResult, Chunk, effects
from services.profiles.intake import Decoded, belongs, take_in
from services.profiles.messages import RawMessage
from services.profiles.parking import read_parked
from services.profiles.positions import Partition, RangeReader, Stored, advance, gaps, next_positions, partitions_of, split_applied
from services.profiles.profile import ClickParams
from services.profiles.snapshot import read_snapshot
from services.profiles.state import ProfileState
from services.profiles.writes import WriteBatch

log = logging.getLogger(__name__)


__all__ = ["BatchResult", "ClickHandler", "HandlerConfig", "RawMessage", "StalePositions"]

DeadLetterSink = Callable[[RawMessage, str], None]


class StalePositions(RuntimeError):
    """A batch's write kept being refused: its partitions' positions keep moving under it."""


@dataclass(frozen=True)
class HandlerConfig:
    """What every key group's driver works with, shared by all of them."""

    learners: Learners
    params: ClickParams
    dead_letter: DeadLetterSink
    flush_dead_letters: Callable[[], None]  # raises when they could not be delivered
    reader: RangeReader | None  # reads gaps back from Kafka; without one a gap is logged and left
    max_conflicts: int  # refused writes in a row before a batch gives up (StalePositions)
    clock: Callable[[], float]
    item_wait_s: float  # without a place in Kafka to park from, how long to wait for an unknown product


class ClickHandler:
    """Applies click batches to every key group of the layout (one group on a single Redis)."""

    def __init__(
        self,
        state: ProfileState,
        learners: Learners,
        params: ClickParams,
        dead_letter: DeadLetterSink,
        clock: Callable[[], float] = time.time,
        item_wait_s: float = 1.0,
        seed: int = 0,
        flush_dead_letters: Callable[[], None] = lambda: None,
        reader: RangeReader | None = None,
        max_conflicts: int = 50,
    ) -> None:
        self.config = HandlerConfig(learners, params, dead_letter, flush_dead_letters, reader, max_conflicts, clock, item_wait_s)
        self._groups = [_GroupHandler(group, self.config, seed + group.keys.group) for group in state.groups()]
        self.partitions = set()

    @property
    def _learners(self) -> Learners:  # what the tests look at after a batch
        return self.config.learners

    @property
    def partitions(self) -> set[Partition]:
        """Every partition handled so far: where parked clicks may wait."""
        return self._groups[0].partitions

    @partitions.setter
    def partitions(self, value: set[Partition]) -> None:
        for group in self._groups:
            group.partitions = value  # one set, shared

    async def handle(self, messages: list[RawMessage]) -> BatchResult:
        """Apply ``messages``: those already applied are skipped, a gap before them is filled from
        Kafka first, and a write refused because a position moved is recomputed from fresh state."""
        decoded: Decoded = {}
        return await self._each(lambda group: group.handle(messages, decoded))

    async def retry_parked(self) -> BatchResult:
        """Apply parked clicks whose product has arrived since, and dead-letter those that waited
        too long (a timer calls this, so parked clicks move on when their partition is quiet)."""
        return await self._each(lambda group: group.retry_parked())

    async def parked_count(self) -> int:
        return sum(await asyncio.gather(*(group.parked_count() for group in self._groups)))

    async def skip(self, messages: list[RawMessage]) -> None:
        """Move the positions past ``messages`` without applying them: after a batch that failed
        on a bug was dead-lettered, so the next batch does not read it back as a gap."""
        for group in self._groups:
            await group.skip(messages)

    async def _each(self, run: Callable[["_GroupHandler"], Awaitable[BatchResult]]) -> BatchResult:
        if len(self._groups) == 1:
            return await run(self._groups[0])
        # Every group runs to its end before an error is raised: a retry must not start while
        # a group of the failed attempt is still writing.
        outcomes = await asyncio.gather(*(run(group) for group in self._groups), return_exceptions=True)
        total = BatchResult()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            total.add(outcome)
        return total


class _GroupHandler:
    """Applies the events of one key group's shoppers, fenced by that group's positions."""

    def __init__(self, state: ProfileState, config: HandlerConfig, seed: int) -> None:
        self._state = state
        self._config = config
        self._rng = random.Random(seed)
        self.partitions: set[Partition] = set()  # every partition handled so far: where parked clicks may wait

    async def retry_parked(self) -> BatchResult:
        for _ in range(self._config.max_conflicts):
            result = await self._write([], await self._state.positions(self.partitions), {}, self.partitions)
            if result is not None:
                return result
        raise StalePositions("parked clicks kept being taken by another worker")

    async def parked_count(self) -> int:
        return await self._state.parked_count(self.partitions)

    async def handle(self, messages: list[RawMessage], decoded: Decoded) -> BatchResult:
        total = BatchResult()
        tracked = partitions_of(messages)
        self.partitions |= tracked
        conflicts = 0
        while True:
            stored = await self._state.positions(tracked)
            fresh, done = split_applied(messages, stored)
            if await self._forget_reset_topics(done, stored):
                fresh, done = split_applied(messages, stored)
            missing = await self._missing(gaps(fresh, stored))
            result = await self._write(missing or fresh, stored, decoded)
            if result is not None:
                result.replayed = sum(1 for message in missing if belongs(message, self._state.keys, decoded))
                total.add(result)
                if not missing:
                    total.duplicates += sum(1 for message in done if belongs(message, self._state.keys, decoded))
                    total.conflicts = conflicts
                    return total
                log.warning("gap filled from kafka", extra={"events": len(missing)})
                continue
            conflicts += 1
            log.info("positions moved under the batch; recomputing", extra={"attempt": conflicts})
            if conflicts >= self._config.max_conflicts:
                raise StalePositions(f"write refused {conflicts} times: partition positions keep moving")

    async def skip(self, messages: list[RawMessage]) -> None:
        for (topic, partition), position in next_positions(messages).items():
            current = (await self._state.positions({(topic, partition)}))[(topic, partition)]
            moved = advance(current, max(current.offset, position) if current is not None else position)
            await self._state.redis.hset(self._state.keys.positions(topic), str(partition), moved.text())

    async def _missing(self, holes: dict[Partition, tuple[int, int]]) -> list[RawMessage]:
        """Events between a partition's stored position and the batch, read back from Kafka."""
        if not holes:
            return []
        reader = self._config.reader
        if reader is None:
            log.warning("gap before the batch not filled: no reader", extra={"gaps": str(holes)})
            return []
        out: list[RawMessage] = []
        for (topic, partition), (start, end) in sorted(holes.items()):
            out += await reader.read(topic, partition, start, end, self._config.params.replay_batch)
        return out

    async def _forget_reset_topics(self, done: list[RawMessage], stored: Stored) -> bool:
        """A stored position beyond the end of its partition belongs to a deleted and recreated
        topic: forget it, or every event would be skipped as applied. True when one was forgotten."""
        forgot = False
        reader = self._config.reader
        if reader is None:
            return forgot
        for topic, partition in partitions_of(done):
            position = stored[(topic, partition)]
            end = await reader.end_offset(topic, partition)
            if position is not None and end < position.offset:
                log.error(
                    "stored position beyond the end of the partition: the topic was recreated; starting over",
                    extra={"topic": topic, "partition": partition, "stored": position, "end": end},
                )
                stored[(topic, partition)] = None
                await self._state.redis.hdel(self._state.keys.positions(topic), str(partition))
                forgot = True
        return forgot

    async def _write(
        self, messages: list[RawMessage], stored: Stored, decoded: Decoded, parked_in: set[Partition] | None = None
    ) -> BatchResult | None:
        """Write one chunk with the parked clicks of ``parked_in`` (default: the chunk's partitions);
        None when a position moved (nothing written, nothing learned). Every partition the write
        touches has its position checked and its write count moved on, so no two writes on one
        partition ever interleave (two workers, or the parked-clicks timer and a batch)."""
        config, state = self._config, self._state
        now = config.clock()
        waiting = await state.parked(partitions_of(messages) if parked_in is None else parked_in, config.params.park_retry)
        fresh, invalid = take_in(messages, state.keys, decoded, now)
        chunk = Chunk(read_parked(waiting, state.keys), fresh, invalid)
        snapshot = await read_snapshot(state, chunk.events, config.clock, config.item_wait_s)
        outcome = effects(chunk, snapshot, state.keys, config.params, self._rng)
        for message, reason in outcome.result.refused:
            config.dead_letter(message, reason)
        if outcome.result.refused:
            config.flush_dead_letters()  # out before the positions pass them
        self._fence(outcome.writes, messages, stored, outcome.unparked_from)
        if outcome.writes and not await outcome.writes.execute(state.redis, state.keys.routing):
            return None  # a position moved: nothing was written, nothing is learned
        for lesson in outcome.learn:
            lesson.teach(config.learners)
        return outcome.result

    def _fence(self, writes: WriteBatch, messages: list[RawMessage], stored: Stored, unparked_from: set[Partition]) -> None:
        """Guard the write with the position of every partition it moves or takes parked clicks from."""
        moved = next_positions(messages)
        for partition in sorted(set(moved) | unparked_from):
            current = stored.get(partition)
            if current is None and partition not in moved:
                continue  # parked clicks always come after a positioned write; nothing to fence against
            after = advance(current, moved.get(partition))
            writes.guard(self._state.keys.positions(partition[0]), str(partition[1]), current.text() if current else None, after.text())
