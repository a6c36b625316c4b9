"""Applying a batch of click events: validate, dedupe, join with items, update, write once, learn.

Runs inside the Faust agent but knows nothing of Faust: it takes raw messages and returns
what happened, so it can be tested, benchmarked and replayed (``shelfsight evaluate-recs``)
on its own.

Messages read from Kafka carry their topic: their partitions' positions are written by the
same script as their effects, so each event takes effect exactly once even when Redis loses
its last writes or Kafka redelivers (see positions.py). Dead letters are delivered before
that write, and the learners are updated only after it has succeeded, so a batch retried
because Redis was away is never learned twice.

With the state split into key groups for Redis Cluster (keys.py), each group is written by
its own script and keeps its own positions: a batch is applied group by group, each group
taking the events of its shoppers and passing over the rest, as if each group were a
consumer of the partition of its own. One group's write never waits for, or undoes, another's.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from models.ranking.learners import CHOICE_KINDS, Learners
from schemas import ClickEvent, ContractError, decode
from services.profiles.choices import ServedList, choice, pick_list
from services.profiles.messages import RawMessage
from services.profiles.positions import (
    Partition,
    RangeReader,
    Stored,
    advance,
    gaps,
    next_positions,
    partitions_of,
    split_applied,
)
from services.profiles.profile import ClickParams, Profile, apply, forward_decay_score
from services.profiles.state import ProfileState
from services.profiles.writes import WriteBatch
from state.values import encode_profile

log = logging.getLogger(__name__)


__all__ = ["BatchResult", "ClickHandler", "RawMessage", "StalePositions"]


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0  # an event id seen before, or an offset already applied
    refused: list[tuple[RawMessage, str]] = field(default_factory=list)
    users: set[str] = field(default_factory=set)
    choices_learned: int = 0  # choices joined with the list they were made from
    replayed: int = 0  # events read back from Kafka to fill a gap before the batch
    conflicts: int = 0  # writes refused because a partition's position had moved
    parked: int = 0  # clicks set aside until their product is indexed
    unparked: int = 0  # parked clicks applied now that their product is known (also in ``applied``)

    def add(self, other: "BatchResult") -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.refused += other.refused
        self.users |= other.users
        self.choices_learned += other.choices_learned
        self.replayed += other.replayed
        self.conflicts += other.conflicts
        self.parked += other.parked
        self.unparked += other.unparked


DeadLetterSink = Callable[[RawMessage, str], None]


class StalePositions(RuntimeError):
    """A batch's write kept being refused: its partitions' positions keep moving under it."""


@dataclass(frozen=True)
class _ParkedAt:
    partition: Partition
    key: str  # the partition's parked set
    at: float  # when it was parked


@dataclass
class _Pending:
    """What one batch will write and learn, built up event by event."""

    pipe: WriteBatch = field(default_factory=WriteBatch)
    learning: list[Callable[[], None]] = field(default_factory=list)
    choices: list[tuple[str, ServedList, str]] = field(default_factory=list)  # (shopper, list, chosen product)
    neighbours: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    trending: set[str | None] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    purchasers: set[str] = field(default_factory=set)
    dismissers: set[str] = field(default_factory=set)
    impressions: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (shopper, request id) → products reported seen in this batch
    parked: dict[str, int] = field(default_factory=dict)  # parked set → how many it holds (as this batch leaves it)
    unparked_from: set[Partition] = field(default_factory=set)  # partitions whose parked clicks this write takes out
    latest: float | None = None  # the latest event time applied: the shop's clock moves to it


# Each message decoded once per batch, whichever groups look at it: by its place in Kafka (a gap
# read back by one group and again by another is the same message), or by ``id`` without one.
Decoded = dict[object, ClickEvent | ContractError]


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
        self._learners = learners
        self._params = params
        self._dead_letter = dead_letter
        self._flush_dead_letters = flush_dead_letters  # raises when they could not be delivered
        self._reader = reader
        self._max_conflicts = max_conflicts
        self._clock = clock
        self._item_wait_s = item_wait_s
        self._groups = [_GroupHandler(group, self, seed + group.keys.group) for group in state.groups()]
        self.partitions = set()

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
        return await self._each(lambda g: g.handle(messages, decoded))

    async def retry_parked(self) -> BatchResult:
        """Apply parked clicks whose product has arrived since, and dead-letter those that waited
        too long (a timer calls this, so parked clicks move on when their partition is quiet)."""
        return await self._each(lambda g: g.retry_parked())

    async def parked_count(self) -> int:
        return sum(await asyncio.gather(*(g.parked_count() for g in self._groups)))

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
        outcomes = await asyncio.gather(*(run(g) for g in self._groups), return_exceptions=True)
        total = BatchResult()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            total.add(outcome)
        return total


class _GroupHandler:
    """Applies the events of one key group's shoppers, fenced by that group's positions."""

    def __init__(self, state: ProfileState, owner: ClickHandler, seed: int) -> None:
        self._state = state
        self._learners = owner._learners
        self._params = owner._params
        self._dead_letter = owner._dead_letter
        self._flush_dead_letters = owner._flush_dead_letters
        self._reader = owner._reader
        self._max_conflicts = owner._max_conflicts
        self._clock = owner._clock
        self._item_wait_s = owner._item_wait_s
        self._rng = random.Random(seed)
        self.partitions: set[Partition] = set()  # every partition handled so far: where parked clicks may wait

    async def retry_parked(self) -> BatchResult:
        for _ in range(self._max_conflicts):
            result = BatchResult()
            if await self._handle_chunk([], await self._state.positions(self.partitions), result, {}, self.partitions):
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
            chunk = missing or fresh
            result = BatchResult(replayed=sum(1 for m in missing if self._mine(m, decoded)))
            if await self._handle_chunk(chunk, stored, result, decoded):
                total.add(result)
                if not missing:
                    total.duplicates += sum(1 for m in done if self._mine(m, decoded))
                    total.conflicts = conflicts
                    return total
                log.warning("gap filled from kafka", extra={"events": len(missing)})
                continue
            conflicts += 1
            log.info("positions moved under the batch; recomputing", extra={"attempt": conflicts})
            if conflicts >= self._max_conflicts:
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
        if self._reader is None:
            log.warning("gap before the batch not filled: no reader", extra={"gaps": str(holes)})
            return []
        out: list[RawMessage] = []
        for (topic, partition), (start, end) in sorted(holes.items()):
            out += await self._reader.read(topic, partition, start, end, self._params.replay_batch)
        return out

    async def _forget_reset_topics(self, done: list[RawMessage], stored: Stored) -> bool:
        """A stored position beyond the end of its partition belongs to a deleted and recreated
        topic: forget it, or every event would be skipped as applied. True when one was forgotten."""
        forgot = False
        if self._reader is None:
            return forgot
        for topic, partition in partitions_of(done):
            position = stored[(topic, partition)]
            end = await self._reader.end_offset(topic, partition)
            if position is not None and end < position.offset:
                log.error("stored position beyond the end of the partition: the topic was recreated; starting over",
                          extra={"topic": topic, "partition": partition, "stored": position, "end": end})
                stored[(topic, partition)] = None
                await self._state.redis.hdel(self._state.keys.positions(topic), str(partition))
                forgot = True
        return forgot

    def _decode(self, m: RawMessage, decoded: Decoded) -> ClickEvent | ContractError:
        place = (m.topic, m.partition, m.offset) if m.topic is not None else id(m)
        if place not in decoded:
            try:
                decoded[place] = decode(ClickEvent, m.value)
            except ContractError as exc:
                decoded[place] = exc
        return decoded[place]

    def _mine(self, m: RawMessage, decoded: Decoded) -> bool:
        """Whether ``m`` belongs to this group: its shopper's, or (unreadable) its key's."""
        keys = self._state.keys
        if keys.shards == 1:
            return True
        event = self._decode(m, decoded)
        owner = event.user_id if isinstance(event, ClickEvent) else (m.key or b"").decode(errors="replace")
        return keys.group_of(owner) == keys.group

    async def _handle_chunk(self, messages: list[RawMessage], stored: Stored, result: BatchResult,
                            decoded: Decoded, parked_in: set[Partition] | None = None) -> bool:
        """Write one chunk (guarded by its partitions' positions), with the parked clicks of
        ``parked_in`` (default: the chunk's partitions) whose product may have arrived. Every
        partition the write touches has its position checked and its write count moved on, so
        no two writes on one partition ever interleave (two workers, or the parked-clicks timer
        and a batch of the same worker)."""
        events: list[tuple[RawMessage, ClickEvent]] = []
        now = self._clock()
        parked: dict[RawMessage, _ParkedAt] = {}
        waiting = await self._state.parked(partitions_of(messages) if parked_in is None else parked_in, self._params.park_retry)
        w = _Pending()
        for (topic, partition), (count, rows) in waiting.items():
            key = self._state.keys.parked(topic, partition)
            w.parked[key] = count
            for value, at in rows:
                m = RawMessage(None, value, partition, -1)
                try:
                    events.append((m, decode(ClickEvent, value)))
                except ContractError as exc:  # valid when parked; the contract may have changed since
                    self._unpark(w, _ParkedAt((topic, partition), key, at), m)
                    result.refused.append((m, exc.reason))
                    continue
                parked[m] = _ParkedAt((topic, partition), key, at)
        for m in messages:
            if not self._mine(m, decoded):
                continue  # another group's: only this group's position passes over it
            event = self._decode(m, decoded)
            if isinstance(event, ContractError):
                result.refused.append((m, event.reason))
                continue
            if event.occurred_at.timestamp() > now + self._params.max_future_s:
                result.refused.append((m, f"occurred_at is more than {self._params.max_future_s:.0f} s in the future"))
                continue
            events.append((m, event))
        if events:
            await self._apply(events, result, w, parked)
        for message, reason in result.refused:
            self._dead_letter(message, reason)
        if result.refused:
            self._flush_dead_letters()  # out before the positions pass them
        moved = next_positions(messages)
        for part in sorted(set(moved) | w.unparked_from):
            current = stored.get(part)
            if current is None and part not in moved:
                continue  # parked clicks always come after a positioned write; nothing to fence against
            after = advance(current, moved.get(part))
            w.pipe.guard(self._state.keys.positions(part[0]), str(part[1]), current.text() if current else None, after.text())
        if w.pipe and not await w.pipe.execute(self._state.redis, self._state.keys.routing):
            return False  # a position moved: nothing was written, nothing is learned
        for learn in w.learning:
            learn()
        return True

    async def _apply(self, events: list[tuple[RawMessage, ClickEvent]], result: BatchResult, w: "_Pending",
                     parked: dict[RawMessage, _ParkedAt]) -> None:
        keys, p = self._state.keys, self._params
        loaded = await self._state.load(
            [e.event_id for _, e in events],
            {e.product_id for _, e in events},
            {e.user_id for _, e in events},
            {e.session_id for _, e in events},
            {e.user_id for _, e in events if e.kind.value in CHOICE_KINDS},
        )
        missing = {i for i, item in loaded.items.items() if item is None}
        can_park = any(m.topic is not None for m, _ in events)
        if missing and self._item_wait_s > 0 and not can_park:
            # products.indexed is read by another agent of this worker; on a cold start it may
            # be a moment behind the clicks. Give it that moment before calling a product unknown.
            await asyncio.sleep(self._item_wait_s)
            loaded.items.update(await self._state.items(missing))
        epoch = await self._state.current_epoch(self._clock())
        served = {u: _served_lists(blobs) for u, blobs in loaded.served.items()}
        profiles: dict[str, Profile] = {}
        sessions = {s: list(items) for s, items in loaded.sessions.items()}
        histories = {u: list(items) for u, items in loaded.recent.items()}
        done: set[str] = set()
        for message, e in events:
            origin = parked.get(message)
            if loaded.seen.get(e.event_id) or e.event_id in done:
                if origin is not None:
                    self._unpark(w, origin, message)
                else:
                    result.duplicates += 1
                continue
            item = loaded.items.get(e.product_id)
            if item is None:
                self._park_or_refuse(w, result, message, e, origin)
                continue
            if origin is not None:
                self._unpark(w, origin, message)
                result.unparked += 1
            kind, at, user, product = e.kind.value, e.occurred_at.timestamp(), e.user_id, e.product_id
            before = profiles.get(user) or loaded.profiles.get(user) or Profile.empty(item.vector.size)
            if before.vector.size != item.vector.size:
                before = Profile.empty(item.vector.size)  # the model changed dimensions: start afresh
            w.learning.append(partial(self._learners.learn_event, user, product, kind, p.weights[kind]))
            done.add(e.event_id)
            result.applied += 1
            w.latest = at if w.latest is None else max(w.latest, at)
            w.pipe.call("SET", keys.seen(e.event_id), 1, "EX", p.dedupe_ttl_s)
            if kind == "impression":
                if e.context is not None and e.context.request_id is not None:
                    w.pipe.call("SADD", keys.impressed(user, e.context.request_id), product)
                    w.impressions.setdefault((user, e.context.request_id), set()).add(product)
                continue  # it marks what was seen; profile, trending and sessions stay
            profiles[user] = apply(before, p, vector=item.vector, category=item.category, kind=kind, at=at, price=item.price)
            result.users.add(user)
            w.pipe.call("LPUSH", keys.recent(user), product)
            w.pipe.call("ZADD", keys.seen_items(user), at, product)
            w.pipe.call("ZINCRBY", keys.interactions, 1, product)
            if kind in CHOICE_KINDS:
                w.pipe.call("ZINCRBY", keys.choices, 1, product)
                chosen_from = pick_list(served.get(user, []), e.context.request_id if e.context else None, at, p.served_ttl_s)
                if chosen_from is not None:
                    w.choices.append((user, chosen_from, product))
            if kind == "purchase":
                w.pipe.call("ZADD", keys.purchased(user), at, product)
                w.purchasers.add(user)
            if kind == "dismiss":
                w.pipe.call("ZADD", keys.dismissed(user), at, product)
                w.dismissers.add(user)
                continue
            score = forward_decay_score(p, p.weights[kind], at, epoch)
            w.pipe.call("ZINCRBY", keys.trending(), score, product)
            w.pipe.call("ZINCRBY", keys.trending(item.category), score, product)
            w.trending.update({None, item.category})
            self._covisit(w, sessions.setdefault(e.session_id, []), product, e.session_id)
            self._history(w, histories.setdefault(user, []), product)
        await self._join_choices(w, result)
        if result.applied:
            self._trims(w, result.users, profiles)

    def _park_or_refuse(self, w: _Pending, result: BatchResult, message: RawMessage, e: ClickEvent,
                        origin: _ParkedAt | None) -> None:
        """A click whose product is not indexed yet: products.indexed may be behind (a catch-up,
        a slow embedder), so it waits in Redis — bounded in time and number — rather than being lost."""
        p, now = self._params, self._clock()
        if origin is not None:
            if now - origin.at > p.park_s:
                self._unpark(w, origin, message)
                result.refused.append((RawMessage(e.user_id.encode(), message.value, message.partition, message.offset),
                                       f"unknown product {e.product_id}: not indexed within {p.park_s:.0f} s"))
            return
        if message.topic is None:
            result.refused.append((message, f"unknown product {e.product_id}: no products.indexed event for it yet"))
            return
        key = self._state.keys.parked(message.topic, message.partition)
        held = w.parked.get(key, 0)
        if held >= p.park_max:
            result.refused.append((message, f"unknown product {e.product_id}: {p.park_max} clicks already wait for their products"))
            return
        w.parked[key] = held + 1
        w.pipe.call("ZADD", key, repr(now), message.value)
        result.parked += 1

    def _unpark(self, w: _Pending, origin: _ParkedAt, message: RawMessage) -> None:
        w.pipe.require(origin.key, message.value)  # another worker taking it first refuses this write
        w.unparked_from.add(origin.partition)
        w.pipe.call("ZREM", origin.key, message.value)

    def _covisit(self, w: _Pending, session: list[str], product: str, session_id: str) -> None:
        """Pairs with the session's latest items: what is looked at together."""
        keys, p = self._state.keys, self._params
        for other in list(dict.fromkeys(session))[: p.covisit_window]:
            if other != product:
                w.pipe.call("ZINCRBY", keys.neighbours(product), 1, other)
                w.pipe.call("ZINCRBY", keys.neighbours(other), 1, product)
                w.neighbours.update({product, other})
        session.insert(0, product)
        del session[p.session_items :]
        w.pipe.call("LPUSH", keys.session(session_id), product)
        w.sessions.add(session_id)

    def _history(self, w: _Pending, recent: list[str], product: str) -> None:
        """Pairs with the shopper's latest distinct items across sessions, nearer ones weighing more."""
        keys, p = self._state.keys, self._params
        for distance, other in enumerate(recent[: p.history_items]):
            if other != product:
                weight = round(p.history_decay**distance, 6)
                w.pipe.call("ZINCRBY", keys.history(product), weight, other)
                w.pipe.call("ZINCRBY", keys.history(other), weight, product)
                w.history.update({product, other})
        recent[:] = [product, *(x for x in recent if x != product)][: 2 * p.history_items]

    async def _join_choices(self, w: _Pending, result: BatchResult) -> None:
        """Each choice made from a served list becomes ranking examples (learned after the write)."""
        if not w.choices:
            return
        impressed = await self._state.impressed({(user, served.request_id) for user, served, _ in w.choices})
        for made_for, products in w.impressions.items():  # reported in this batch, not yet written
            impressed.setdefault(made_for, set()).update(products)
        for user, served, product in w.choices:
            p = self._params
            example = choice(served, product, impressed.get((user, served.request_id)), p.choice_negatives, self._rng,
                             p.shown_negatives)
            if example is not None:
                w.learning.append(partial(self._learners.learn_choice, served.names, *example))
                result.choices_learned += 1

    def _trims(self, w: _Pending, users: set[str], profiles: dict[str, Profile]) -> None:
        """Trims and TTLs once per key and batch, not once per event."""
        keys, p, pipe = self._state.keys, self._params, w.pipe
        for user in users:
            pipe.call("LTRIM", keys.recent(user), 0, p.recent_items - 1)
            pipe.call("EXPIRE", keys.recent(user), p.profile_ttl_s)
            pipe.call("ZREMRANGEBYRANK", keys.seen_items(user), 0, -(p.seen_items + 1))
            pipe.call("EXPIRE", keys.seen_items(user), p.profile_ttl_s)
        for user in w.purchasers:
            pipe.call("ZREMRANGEBYRANK", keys.purchased(user), 0, -(p.purchased_items + 1))
            pipe.call("EXPIRE", keys.purchased(user), p.profile_ttl_s)
        for user in w.dismissers:
            pipe.call("ZREMRANGEBYRANK", keys.dismissed(user), 0, -(p.recent_items + 1))
            pipe.call("EXPIRE", keys.dismissed(user), p.profile_ttl_s)
        for session_id in w.sessions:
            pipe.call("LTRIM", keys.session(session_id), 0, p.session_items - 1)
            pipe.call("EXPIRE", keys.session(session_id), p.session_ttl_s)
        for user, profile in profiles.items():
            pipe.call("HSET", keys.user(user), *[x for kv in encode_profile(profile).items() for x in kv])
            pipe.call("EXPIRE", keys.user(user), p.profile_ttl_s)
        for key_of, items in ((keys.neighbours, w.neighbours), (keys.history, w.history)):
            for item_id in items:
                pipe.call("ZREMRANGEBYRANK", key_of(item_id), 0, -(p.neighbours + 1))
                pipe.call("EXPIRE", key_of(item_id), p.profile_ttl_s)
        for category in w.trending:
            pipe.call("ZREMRANGEBYRANK", keys.trending(category), 0, -(p.trending + 1))
        if w.trending:
            pipe.call("SADD", keys.trending_sets, *sorted(keys.trending(c) for c in w.trending))
        for user, request_id in w.impressions:
            pipe.call("EXPIRE", keys.impressed(user, request_id), p.served_ttl_s)
        if w.latest is not None:
            pipe.call("ZADD", keys.clock, "GT", repr(w.latest), "latest")
        for user in users:
            pipe.call("PUBLISH", keys.updates_channel, user)


def _served_lists(blobs: list[bytes]) -> list[ServedList]:
    lists = []
    for blob in blobs:
        try:
            lists.append(ServedList.from_json(blob))
        except (ValueError, KeyError, TypeError) as exc:  # written by this worker's own agent; never fatal
            log.warning("served list ignored", extra={"error": str(exc)[:200]})
    return lists

