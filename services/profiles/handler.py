"""Applying a batch of click events: validate, dedupe, join with items, update, write once.

Runs inside the Faust agent but knows nothing of Faust: it takes raw messages and returns
what happened, so it can be tested and benchmarked on its own.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from schemas import ClickEvent, ContractError, decode
from services.profiles.learners import Learners, features
from services.profiles.profile import ClickParams, Profile, apply, forward_decay_score
from services.profiles.state import ProfileState, encode_profile
from services.profiles.writes import WriteBatch

log = logging.getLogger(__name__)

POSITIVE_KINDS = {"view", "click", "add_to_cart", "purchase"}


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


DeadLetterSink = Callable[[RawMessage, str], None]


class ClickHandler:
    def __init__(
        self,
        state: ProfileState,
        learners: Learners,
        params: ClickParams,
        dead_letter: DeadLetterSink,
        clock: Callable[[], float] = time.time,
        item_wait_s: float = 1.0,
    ) -> None:
        self._state = state
        self._learners = learners
        self._params = params
        self._dead_letter = dead_letter
        self._clock = clock
        self._item_wait_s = item_wait_s

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
        )
        missing = {i for i, item in loaded.items.items() if item is None}
        if missing and self._item_wait_s > 0:
            # products.indexed is read by another agent of this worker; on a cold start it may
            # be a moment behind the clicks. Give it that moment before calling a product unknown.
            await asyncio.sleep(self._item_wait_s)
            loaded.items.update(await self._state.items(missing))
        epoch = await self._state.current_epoch(self._clock())
        profiles: dict[str, Profile] = {}
        sessions = {s: list(items) for s, items in loaded.sessions.items()}
        done: set[str] = set()
        pipe = WriteBatch()
        touched_neighbours: set[str] = set()
        touched_trending: set[str | None] = set()
        touched_sessions: set[str] = set()
        purchasers: set[str] = set()
        dismissers: set[str] = set()
        for message, e in events:
            if loaded.seen.get(e.event_id) or e.event_id in done:
                result.duplicates += 1
                continue
            item = loaded.items.get(e.product_id)
            if item is None:
                result.refused.append((message, f"unknown product {e.product_id}: no products.indexed event for it yet"))
                continue
            kind, at = e.kind.value, e.occurred_at.timestamp()
            before = profiles.get(e.user_id) or loaded.profiles.get(e.user_id) or Profile.empty(item.vector.size)
            if before.vector.size != item.vector.size:
                before = Profile.empty(item.vector.size)  # the model changed dimensions: start afresh
            total = sum(abs(v) for v in before.categories.values()) or 1.0
            norm = float(np.linalg.norm(before.vector)) or 1.0
            self._learners.learn_one(
                e.user_id, e.product_id, kind, p.weights[kind],
                features(
                    similarity=float(before.vector @ item.vector) / norm,
                    category_share=before.categories.get(item.category, 0.0) / total,
                    popularity=loaded.popularity.get(e.product_id, 0.0),
                    price=item.price,
                    seconds_since_last=at - before.updated_at if before.updated_at else 0.0,
                ),
            )
            done.add(e.event_id)
            result.applied += 1
            pipe.call("SET", keys.seen(e.event_id), 1, "EX", p.dedupe_ttl_s)
            if kind == "impression":
                continue  # the click model has learned from it; profile, trending and sessions stay
            after = apply(before, p, vector=item.vector, category=item.category, kind=kind, at=at)
            profiles[e.user_id] = after
            result.users.add(e.user_id)
            pipe.call("LPUSH", keys.recent(e.user_id), e.product_id)
            if kind == "purchase":
                pipe.call("ZADD", keys.purchased(e.user_id), at, e.product_id)
                purchasers.add(e.user_id)
            if kind == "dismiss":
                pipe.call("ZADD", keys.dismissed(e.user_id), at, e.product_id)
                dismissers.add(e.user_id)
                continue
            score = forward_decay_score(p, p.weights[kind], at, epoch)
            pipe.call("ZINCRBY", keys.trending(), score, e.product_id)
            pipe.call("ZINCRBY", keys.trending(item.category), score, e.product_id)
            touched_trending.update({None, item.category})
            session = sessions.setdefault(e.session_id, [])
            for other in list(dict.fromkeys(session))[: p.covisit_window]:
                if other != e.product_id:
                    pipe.call("ZINCRBY", keys.neighbours(e.product_id), 1, other)
                    pipe.call("ZINCRBY", keys.neighbours(other), 1, e.product_id)
                    touched_neighbours.update({e.product_id, other})
            session.insert(0, e.product_id)
            del session[p.session_items :]
            pipe.call("LPUSH", keys.session(e.session_id), e.product_id)
            touched_sessions.add(e.session_id)
        # Trims and TTLs once per key and batch, not once per event.
        for user in result.users:
            pipe.call("LTRIM", keys.recent(user), 0, p.recent_items - 1)
            pipe.call("EXPIRE", keys.recent(user), p.profile_ttl_s)
        for user in purchasers:
            pipe.call("ZREMRANGEBYRANK", keys.purchased(user), 0, -(p.purchased_items + 1))
            pipe.call("EXPIRE", keys.purchased(user), p.profile_ttl_s)
        for user in dismissers:
            pipe.call("ZREMRANGEBYRANK", keys.dismissed(user), 0, -(p.recent_items + 1))
            pipe.call("EXPIRE", keys.dismissed(user), p.profile_ttl_s)
        for session_id in touched_sessions:
            pipe.call("LTRIM", keys.session(session_id), 0, p.session_items - 1)
            pipe.call("EXPIRE", keys.session(session_id), p.session_ttl_s)
        for user, profile in profiles.items():
            pipe.call("HSET", keys.user(user), *[x for kv in encode_profile(profile).items() for x in kv])
            pipe.call("EXPIRE", keys.user(user), p.profile_ttl_s)
        for item_id in touched_neighbours:
            pipe.call("ZREMRANGEBYRANK", keys.neighbours(item_id), 0, -(p.neighbours + 1))
            pipe.call("EXPIRE", keys.neighbours(item_id), p.profile_ttl_s)
        for category in touched_trending:
            pipe.call("ZREMRANGEBYRANK", keys.trending(category), 0, -(p.trending + 1))
        for user in result.users:
            pipe.call("PUBLISH", keys.updates_channel, user)
        if result.applied:
            await pipe.execute(self._state.redis)
