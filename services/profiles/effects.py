"""What one write's events change: its Redis commands and what the learners learn, with no I/O.

The exactly-once driver (handler.py) reads the state a write depends on (snapshot.py), calls
:func:`effects`, fences the commands with the partitions' positions, writes them in one script
and, once that succeeded, teaches the learners the lessons. Keeping the computation apart means
every rule of what a click changes can be tested without Redis (test_effects.py), and a write
refused because a position moved is simply recomputed from fresh state.

Per applied event: a dedupe marker; an impression marks its served list (under the shopper's own
keys) and nothing else; any other kind moves the shopper's profile, recent items, seen set and
counters, a choice is joined with the list it was made from, and everything but a dismissal
counts for trending, co-visitation (same session) and history pairs (across sessions). Trims,
TTLs, pair sets (their amounts summed), the shop's clock and the update announcements come once
per key and write.
"""

import random
from dataclasses import dataclass, field, replace

import numpy as np

from models.ranking.learners import CHOICE_KINDS, Learners
from schemas import ClickEvent
from services.profiles.choices import ServedList, choice, pick_list, showed
from services.profiles.messages import RawMessage
from services.profiles.parking import ParkedAt, ParkedClicks, ParkingLot, Refusal
from services.profiles.positions import Partition
from services.profiles.profile import ClickParams, Profile, apply, forward_decay_score
from services.profiles.snapshot import Snapshot
from services.profiles.writes import WriteBatch
from state.experiments import KIND_METRIC
from state.keys import Keys
from state.values import Item, encode_profile, same_space

__all__ = ["BatchResult", "ChoiceLesson", "Chunk", "Effects", "EventLesson", "effects"]


@dataclass
class BatchResult:
    """What a batch did; the driver adds what the positions found (replayed, duplicates by offset, conflicts)."""

    applied: int = 0
    duplicates: int = 0  # an event id seen before, or an offset already applied
    refused: list[Refusal] = field(default_factory=list)
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


@dataclass(frozen=True)
class EventLesson:
    """One applied event, for the factorisation and the item model."""

    user: str
    product: str
    kind: str
    weight: float

    def teach(self, learners: Learners) -> None:
        learners.learn_event(self.user, self.product, self.kind, self.weight)


@dataclass(frozen=True)
class ChoiceLesson:
    """One choice joined with the list it was made from: the chosen row and the skipped ones, for the ranker."""

    names: tuple[str, ...]
    chosen: dict[str, float]
    skipped: list[dict[str, float]]

    def teach(self, learners: Learners) -> None:
        learners.learn_choice(self.names, self.chosen, self.skipped)


Lesson = EventLesson | ChoiceLesson


@dataclass(frozen=True)
class Chunk:
    """One write's input: the parked clicks it looks at, then its own messages, checked on sight."""

    parked: ParkedClicks
    fresh: list[tuple[RawMessage, ClickEvent]]  # its own valid events, in order
    invalid: list[Refusal]  # its own messages that break the contract or come from the future

    @property
    def events(self) -> list[tuple[RawMessage, ClickEvent]]:
        return self.parked.events + self.fresh


@dataclass
class Effects:
    writes: WriteBatch  # the commands, not yet fenced by the positions
    learn: list[Lesson]  # in order, once the write succeeded
    result: BatchResult
    unparked_from: set[Partition]  # partitions whose parked clicks the write takes out: their positions fence it too


def effects(chunk: Chunk, snapshot: Snapshot, keys: Keys, params: ClickParams, rng: random.Random) -> Effects:
    """The effects of one write's events on ``snapshot``; ``rng`` samples the skipped candidates of choices.

    Nothing is read or written: calling it again on the same snapshot (and an ``rng`` in the
    same state) gives the same effects.
    """
    batch = _Batch(keys, params, snapshot, chunk.parked.held)
    for message, origin, reason in chunk.parked.unreadable:
        batch.lot.take_out(origin, message)
        batch.result.refused.append((message, reason))
    batch.result.refused += chunk.invalid
    for message, event in chunk.events:
        batch.event(message, event, chunk.parked.origins.get(message))
    if chunk.events:
        batch.join_choices(rng)
        if batch.result.applied:
            batch.trims()
    batch.result.parked = batch.lot.parked
    return Effects(batch.writes, batch.learn, batch.result, batch.lot.unparked_from)


@dataclass
class _Batch:
    """The effects of one write, built up event by event."""

    keys: Keys
    params: ClickParams
    snapshot: Snapshot
    held: dict[str, int]  # parked set → how many it held when read
    writes: WriteBatch = field(default_factory=WriteBatch)
    learn: list[Lesson] = field(default_factory=list)
    result: BatchResult = field(default_factory=BatchResult)
    applied: set[str] = field(default_factory=set)  # event ids applied by this write
    profiles: dict[str, Profile] = field(default_factory=dict)  # as this write leaves them
    sessions: dict[str, list[str]] = field(default_factory=dict)  # newest first, as this write leaves them
    histories: dict[str, list[str]] = field(default_factory=dict)  # newest first, distinct, as this write leaves them
    choices: list[tuple[str, ServedList, str]] = field(default_factory=list)  # (shopper, list, chosen product)
    # item → the products paired with it by this write, and by how much: each pair set is grown
    # once per write, its members' amounts summed (state.pairs)
    co: dict[str, dict[str, float]] = field(default_factory=dict)  # in sessions (co-visitation)
    ch: dict[str, dict[str, float]] = field(default_factory=dict)  # in histories, nearer ones weighing more
    trending: set[str | None] = field(default_factory=set)  # categories whose trending set grew (None: all)
    session_ids: set[str] = field(default_factory=set)
    purchasers: set[str] = field(default_factory=set)
    dismissers: set[str] = field(default_factory=set)
    impressions: dict[tuple[str, str], set[str]] = field(
        default_factory=dict
    )  # (shopper, request id) → products reported seen in this write
    latest: float | None = None  # the latest event time applied: the shop's clock moves to it

    def __post_init__(self) -> None:
        self.lot = ParkingLot(self.writes, self.keys, self.params, self.held, self.snapshot.now)
        self.sessions = {session: list(items) for session, items in self.snapshot.loaded.sessions.items()}
        self.histories = {user: list(items) for user, items in self.snapshot.loaded.recent.items()}
        self.history_weights = [round(self.params.history_decay**distance, 6) for distance in range(self.params.history_items)]

    def event(self, message: RawMessage, event: ClickEvent, origin: ParkedAt | None) -> None:
        """One event: skipped as a duplicate, parked (or refused) for want of its product, or applied."""
        loaded = self.snapshot.loaded
        if loaded.seen.get(event.event_id) or event.event_id in self.applied:
            if origin is not None:
                self.lot.take_out(origin, message)
            else:
                self.result.duplicates += 1
            return
        item = loaded.items.get(event.product_id)
        if item is None:
            refusal = self.lot.park_or_refuse(message, event, origin)
            if refusal is not None:
                self.result.refused.append(refusal)
            return
        if origin is not None:
            self.lot.take_out(origin, message)
            self.result.unparked += 1
        kind = event.kind.value
        self.learn.append(EventLesson(event.user_id, event.product_id, kind, self.params.weights[kind]))
        self.applied.add(event.event_id)
        self.result.applied += 1
        at = event.occurred_at.timestamp()
        self.latest = at if self.latest is None else max(self.latest, at)
        self.writes.call("SET", self.keys.seen(event.event_id), 1, "EX", self.params.dedupe_ttl_s)
        if kind == "impression":
            self._impression(event)
        else:
            self._interaction(event, item)

    def _impression(self, event: ClickEvent) -> None:
        """It marks what was seen in one of the shopper's lists, and counts towards the product's
        click-through (the exploration bandit reads it); profile, trending and sessions stay."""
        self.writes.call("ZINCRBY", self.keys.impressions, 1, event.product_id)
        if event.context is not None and event.context.request_id is not None:
            self.writes.call("SADD", self.keys.impressed(event.user_id, event.context.request_id), event.product_id)
            self.impressions.setdefault((event.user_id, event.context.request_id), set()).add(event.product_id)

    def _interaction(self, event: ClickEvent, item: Item) -> None:
        keys, params, writes = self.keys, self.params, self.writes
        kind, at, user, product = event.kind.value, event.occurred_at.timestamp(), event.user_id, event.product_id
        before = self.profiles.get(user) or self.snapshot.loaded.profiles.get(user) or Profile.empty(item.vector.size)
        if before.vector.size != item.vector.size or not same_space(before.model_version, item.model_version, self.snapshot.unversioned):
            # The live model changed (`shelfsight reembed`): the taste starts afresh in the new space;
            # categories, counts and prices are the model's no more than before, and stay.
            before = replace(before, vector=np.zeros(item.vector.size, dtype=np.float32))
        before = replace(before, model_version=item.model_version or before.model_version)
        self.profiles[user] = apply(before, params, vector=item.vector, category=item.category, kind=kind, at=at, price=item.price)
        self.result.users.add(user)
        writes.call("LPUSH", keys.recent(user), product)
        writes.call("ZADD", keys.seen_items(user), at, product)
        writes.call("ZINCRBY", keys.interactions, 1, product)
        if kind in CHOICE_KINDS:
            writes.call("ZINCRBY", keys.choices, 1, product)
            request_id = event.context.request_id if event.context else None
            lists = self.snapshot.served.get(user, [])
            made_from = pick_list(lists, request_id, at, params.served_ttl_s)
            if made_from is not None:
                self.choices.append((user, made_from, product))
            self._attribute(user, kind, item, product, showed(lists, request_id, product, at, params.attribution_window_s))
        if kind == "purchase":
            writes.call("ZADD", keys.purchased(user), at, product)
            self.purchasers.add(user)
        if kind == "dismiss":
            writes.call("ZADD", keys.dismissed(user), at, product)
            self.dismissers.add(user)
            return
        score = forward_decay_score(params, params.weights[kind], at, self.snapshot.epoch)
        writes.call("ZINCRBY", keys.trending(), score, product)
        writes.call("ZINCRBY", keys.trending(item.category), score, product)
        self.trending.update({None, item.category})
        self._covisit(self.sessions.setdefault(event.session_id, []), product, event.session_id)
        self._pair_with_history(self.histories.setdefault(user, []), product)

    def _attribute(self, user: str, kind: str, item: Item, product: str, shown_in: ServedList | None) -> None:
        """A choice of a product a list of an experiment showed counts for that list's variant, once
        per product and kind however often it is repeated; a purchase also adds its price. In this
        write, so exactly once with the event."""
        if shown_in is None or shown_in.experiment is None:
            return
        experiment_id, variant = shown_in.experiment
        shopper, totals = self.keys.in_experiment(user, experiment_id), self.keys.experiment_totals(experiment_id)
        credit = WriteBatch()
        credit.experiment_add(shopper, totals, variant, KIND_METRIC[kind], 1.0)
        if kind == "purchase" and item.price:
            credit.experiment_add(shopper, totals, variant, "revenue", float(item.price))
        if shown_in.teams is not None:
            control, challenger, teams = shown_in.teams
            team = teams[shown_in.products.index(product)]
            other = challenger if team == control else control
            # Preference per shopper: +1 for a challenger's product, −1 for the control's.
            credit.experiment_add(shopper, totals, variant, "preference", 1.0 if team == challenger else -1.0)
            credit.interleave_win(self.keys.drafted(user, shown_in.request_id), totals, team, other, self.params.served_ttl_s)
        self.writes.once(self.keys.credited(user, shown_in.request_id), f"{product}|{kind}", self.params.served_ttl_s, len(credit))
        self.writes.extend(credit)

    def _covisit(self, session: list[str], product: str, session_id: str) -> None:
        """Pairs with the session's latest items: what is looked at together."""
        keys, params, co = self.keys, self.params, self.co
        mine = co.setdefault(product, {})
        for other in list(dict.fromkeys(session))[: params.covisit_window]:
            if other != product:
                mine[other] = mine.get(other, 0.0) + 1.0
                theirs = co.setdefault(other, {})
                theirs[product] = theirs.get(product, 0.0) + 1.0
        session.insert(0, product)
        del session[params.session_items :]
        self.writes.call("LPUSH", keys.session(session_id), product)
        self.session_ids.add(session_id)

    def _pair_with_history(self, recent: list[str], product: str) -> None:
        """Pairs with the shopper's latest distinct items across sessions, nearer ones weighing more."""
        params, ch = self.params, self.ch
        mine = ch.setdefault(product, {})
        for other, weight in zip(recent[: params.history_items], self.history_weights, strict=False):
            if other != product:
                mine[other] = mine.get(other, 0.0) + weight
                theirs = ch.setdefault(other, {})
                theirs[product] = theirs.get(product, 0.0) + weight
        recent[:] = [product, *(item for item in recent if item != product)][: 2 * params.history_items]

    def join_choices(self, rng: random.Random) -> None:
        """Each choice made from a served list becomes a ranking lesson: skipped are shown items
        reported as seen (in Redis or in this write) and a sample of lower candidates."""
        if not self.choices:
            return
        impressed = {made_for: set(products) for made_for, products in self.snapshot.impressed.items()}
        for made_for, products in self.impressions.items():  # reported in this write, not yet in Redis
            impressed.setdefault(made_for, set()).update(products)
        params = self.params
        for user, served, product in self.choices:
            example = choice(
                served, product, impressed.get((user, served.request_id)), params.choice_negatives, rng, params.shown_negatives
            )
            if example is not None:
                self.learn.append(ChoiceLesson(served.names, *example))
                self.result.choices_learned += 1

    def _grow_pairs(self) -> None:
        """Each pair set once, then the bound on them all (state.pairs); stale after the profile TTL."""
        keys, params, writes, stamp = self.keys, self.params, self.writes, self.snapshot.now
        grown = False
        for key_of, paired in ((keys.neighbours, self.co), (keys.history, self.ch)):
            for item_id, members in paired.items():
                if members:
                    writes.pairs(key_of(item_id), keys.pair_sets, stamp, params.neighbours, members)
                    grown = True
        if grown:
            writes.pairs_bound(keys.pair_count, keys.pair_sets, params.pair_members // keys.shards, stamp - params.profile_ttl_s)

    def trims(self) -> None:
        """Trims and TTLs once per key and write, not once per event; then the clock and the announcements."""
        keys, params, writes, users = self.keys, self.params, self.writes, self.result.users
        for user in users:
            writes.call("LTRIM", keys.recent(user), 0, params.recent_items - 1)
            writes.call("EXPIRE", keys.recent(user), params.profile_ttl_s)
            writes.call("ZREMRANGEBYRANK", keys.seen_items(user), 0, -(params.seen_items + 1))
            writes.call("EXPIRE", keys.seen_items(user), params.profile_ttl_s)
        for user in self.purchasers:
            writes.call("ZREMRANGEBYRANK", keys.purchased(user), 0, -(params.purchased_items + 1))
            writes.call("EXPIRE", keys.purchased(user), params.profile_ttl_s)
        for user in self.dismissers:
            writes.call("ZREMRANGEBYRANK", keys.dismissed(user), 0, -(params.recent_items + 1))
            writes.call("EXPIRE", keys.dismissed(user), params.profile_ttl_s)
        for session_id in self.session_ids:
            writes.call("LTRIM", keys.session(session_id), 0, params.session_items - 1)
            writes.call("EXPIRE", keys.session(session_id), params.session_ttl_s)
        for user, profile in self.profiles.items():
            writes.call("HSET", keys.user(user), *[word for pair in encode_profile(profile).items() for word in pair])
            writes.call("EXPIRE", keys.user(user), params.profile_ttl_s)
        self._grow_pairs()
        for category in self.trending:
            writes.call("ZREMRANGEBYRANK", keys.trending(category), 0, -(params.trending + 1))
        if self.trending:
            writes.call("SADD", keys.trending_sets, *sorted(keys.trending(category) for category in self.trending))
        for user, request_id in self.impressions:
            writes.call("EXPIRE", keys.impressed(user, request_id), params.served_ttl_s)
        if self.latest is not None:
            writes.call("ZADD", keys.clock, "GT", repr(self.latest), "latest")
        for user in users:
            writes.call("PUBLISH", keys.updates_channel, user)
