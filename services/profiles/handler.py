"""Applying a batch of click events: validate, dedupe, join with items, update, write once, learn.

Runs inside the Faust agent but knows nothing of Faust: it takes raw messages and returns
what happened, so it can be tested, benchmarked and replayed (``shelfsight evaluate-recs``)
on its own.

The learners are updated only after the batch's Redis transaction has succeeded, so a batch
retried because Redis was away is never learned twice.
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from schemas import ClickEvent, ContractError, decode
from services.profiles.choices import ServedList, choice, pick_list
from services.profiles.learners import CHOICE_KINDS, Learners
from services.profiles.profile import ClickParams, Profile, apply, forward_decay_score
from services.profiles.state import ProfileState, encode_profile
from services.profiles.writes import WriteBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    refused: list[tuple[RawMessage, str]] = field(default_factory=list)
    users: set[str] = field(default_factory=set)
    choices_learned: int = 0  # choices joined with the list they were made from


DeadLetterSink = Callable[[RawMessage, str], None]


@dataclass
class _Pending:
    """What one batch will write and learn, built up event by event."""

    pipe: WriteBatch = field(default_factory=WriteBatch)
    learning: list[Callable[[], None]] = field(default_factory=list)
    choices: list[tuple[ServedList, str]] = field(default_factory=list)
    neighbours: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    trending: set[str | None] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    purchasers: set[str] = field(default_factory=set)
    dismissers: set[str] = field(default_factory=set)
    impressions: dict[str, set[str]] = field(default_factory=dict)  # request id → products reported seen in this batch


class ClickHandler:
    def __init__(
        self,
        state: ProfileState,
        learners: Learners,
        params: ClickParams,
        dead_letter: DeadLetterSink,
        clock: Callable[[], float] = time.time,
        item_wait_s: float = 1.0,
        seed: int = 0,
    ) -> None:
        self._state = state
        self._learners = learners
        self._params = params
        self._dead_letter = dead_letter
        self._clock = clock
        self._item_wait_s = item_wait_s
        self._rng = random.Random(seed)

    async def handle(self, messages: list[RawMessage]) -> BatchResult:
        result = BatchResult()
        events: list[tuple[RawMessage, ClickEvent]] = []
        now = self._clock()
        for m in messages:
            try:
                event = decode(ClickEvent, m.value)
            except ContractError as exc:
                result.refused.append((m, exc.reason))
                continue
            if event.occurred_at.timestamp() > now + self._params.max_future_s:
                result.refused.append((m, f"occurred_at is more than {self._params.max_future_s:.0f} s in the future"))
                continue
            events.append((m, event))
        if events:
            await self._apply(events, result)
        for message, reason in result.refused:
            self._dead_letter(message, reason)
        return result

    async def _apply(self, events: list[tuple[RawMessage, ClickEvent]], result: BatchResult) -> None:
        keys, p = self._state.keys, self._params
        loaded = await self._state.load(
            [e.event_id for _, e in events],
            {e.product_id for _, e in events},
            {e.user_id for _, e in events},
            {e.session_id for _, e in events},
            {e.user_id for _, e in events if e.kind.value in CHOICE_KINDS},
        )
        missing = {i for i, item in loaded.items.items() if item is None}
        if missing and self._item_wait_s > 0:
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
        w = _Pending()
        for message, e in events:
            if loaded.seen.get(e.event_id) or e.event_id in done:
                result.duplicates += 1
                continue
            item = loaded.items.get(e.product_id)
            if item is None:
                result.refused.append((message, f"unknown product {e.product_id}: no products.indexed event for it yet"))
                continue
            kind, at, user, product = e.kind.value, e.occurred_at.timestamp(), e.user_id, e.product_id
            before = profiles.get(user) or loaded.profiles.get(user) or Profile.empty(item.vector.size)
            if before.vector.size != item.vector.size:
                before = Profile.empty(item.vector.size)  # the model changed dimensions: start afresh
            w.learning.append(partial(self._learners.learn_event, user, product, kind, p.weights[kind]))
            done.add(e.event_id)
            result.applied += 1
            w.pipe.call("SET", keys.seen(e.event_id), 1, "EX", p.dedupe_ttl_s)
            if kind == "impression":
                if e.context is not None and e.context.request_id is not None:
                    w.pipe.call("SADD", keys.impressed(e.context.request_id), product)
                    w.impressions.setdefault(e.context.request_id, set()).add(product)
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
                    w.choices.append((chosen_from, product))
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
        self._trims(w, result.users, profiles)
        if result.applied:
            await w.pipe.execute(self._state.redis)
            for learn in w.learning:
                learn()

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
        impressed = await self._state.impressed({served.request_id for served, _ in w.choices})
        for request_id, products in w.impressions.items():  # reported in this batch, not yet written
            impressed.setdefault(request_id, set()).update(products)
        for served, product in w.choices:
            p = self._params
            example = choice(served, product, impressed.get(served.request_id), p.choice_negatives, self._rng, p.shown_negatives)
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
        for request_id in w.impressions:
            pipe.call("EXPIRE", keys.impressed(request_id), p.served_ttl_s)
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

