"""Profile state in Redis: key layout, batched reads, and one transaction of writes per batch.

Every key has a TTL or a cap, so memory stays bounded (see docs/profiles.md for sizes).
"""

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis

from schemas import ProductIndexed

from services.profiles.positions import Position
from services.profiles.profile import RESCALE_AFTER_HALF_LIVES, ClickParams, Profile
from services.profiles.writes import ReadBatch, as_hash


@dataclass
class Keys:
    prefix: str

    def user(self, u: str) -> str:
        return f"{self.prefix}u:{u}"

    def recent(self, u: str) -> str:
        return f"{self.prefix}u:{u}:recent"

    def purchased(self, u: str) -> str:
        return f"{self.prefix}u:{u}:purchased"

    def dismissed(self, u: str) -> str:
        return f"{self.prefix}u:{u}:dismissed"

    def item(self, i: str) -> str:
        return f"{self.prefix}i:{i}"

    def session(self, s: str) -> str:
        return f"{self.prefix}s:{s}"

    def neighbours(self, i: str) -> str:
        """Items seen in the same sessions (co-visitation)."""
        return f"{self.prefix}co:{i}"

    def history(self, i: str) -> str:
        """Items close to it in shoppers' histories, closer ones weighing more."""
        return f"{self.prefix}ch:{i}"

    def seen_items(self, u: str) -> str:
        """Everything the shopper interacted with, newest scored highest: never recommended again."""
        return f"{self.prefix}u:{u}:seen"

    def served(self, u: str) -> str:
        """The shopper's latest served lists (``RecommendationServed`` JSON), for joining with choices."""
        return f"{self.prefix}u:{u}:served"

    def impressed(self, request_id: str) -> str:
        """Products of one served list the widget reported as seen."""
        return f"{self.prefix}req:{request_id}:imp"

    @property
    def interactions(self) -> str:
        """Interactions per item (not decayed): how much evidence there is about it."""
        return f"{self.prefix}stats:interactions"

    @property
    def choices(self) -> str:
        """Clicks, carts and purchases per item (not decayed)."""
        return f"{self.prefix}stats:choices"

    @property
    def catalogue_since(self) -> str:
        """The earliest listing time seen: before the shop is older than "new", nothing is new."""
        return f"{self.prefix}catalogue:since"

    def seen(self, event_id: str) -> str:
        return f"{self.prefix}seen:{event_id}"

    def trending(self, category: str | None = None) -> str:
        return f"{self.prefix}pop:all" if category is None else f"{self.prefix}pop:cat:{category}"

    @property
    def updates_channel(self) -> str:
        return f"{self.prefix}profile-updated"

    @property
    def trending_epoch(self) -> str:
        return f"{self.prefix}pop:epoch"

    @property
    def trending_sets(self) -> str:
        """The names of every trending set (written with them): rescaling reads it instead of SCAN."""
        return f"{self.prefix}pop:sets"

    @property
    def trending_sets_complete(self) -> str:
        """Set once the sets written before the registry existed have been registered."""
        return f"{self.prefix}pop:sets:complete"

    def learners(self, worker: str) -> str:
        return f"{self.prefix}learners:{worker}"

    @property
    def learners_workers(self) -> str:
        """Which workers checkpoint learners, scored by when they last did: the recommender merges them."""
        return f"{self.prefix}learners:workers"

    def learners_digest(self, worker: str) -> str:
        """A digest of the checkpoint, written with it: readers skip downloading an unchanged one."""
        return f"{self.prefix}learners:{worker}:digest"

    def parked(self, topic: str, partition: int) -> str:
        """Clicks of one partition waiting for their product (member: the event's JSON, score: parked at)."""
        return f"{self.prefix}parked:{topic}:{partition}"

    def positions(self, topic: str) -> str:
        """Per partition of ``topic``, the next offset to apply: written with each batch's effects."""
        return f"{self.prefix}positions:{topic}"


# A learners checkpoint (and its worker's registration) is kept this long after its last write.
CHECKPOINT_KEEP_S = 7 * 24 * 3600.0


def checkpoint_names(client: redis.Redis, keys: Keys, now: float, keep_s: float = CHECKPOINT_KEEP_S) -> list[str]:
    """The workers whose learners checkpoints are current, then ``main`` (a single-process replay's)."""
    names = [n.decode() for n in client.zrangebyscore(keys.learners_workers, now - keep_s, "+inf")]
    return list(dict.fromkeys([*names, "main"]))


@dataclass(frozen=True)
class Item:
    vector: np.ndarray
    category: str
    price: float
    in_stock: bool


def encode_profile(p: Profile) -> dict[str, Any]:
    return {
        "vec": p.vector.astype(np.float32).tobytes(),
        "t": repr(p.updated_at),
        "cats": json.dumps(p.categories),
        "counts": json.dumps(p.counts),
        "lp": repr(p.log_price),
        "lpw": repr(p.price_weight),
    }


def decode_profile(raw: dict[bytes, bytes]) -> Profile | None:
    if not raw or b"vec" not in raw:
        return None
    return Profile(
        np.frombuffer(raw[b"vec"], dtype=np.float32).copy(),
        json.loads(raw[b"cats"]),
        float(raw[b"t"]),
        {k: int(v) for k, v in json.loads(raw[b"counts"]).items()},
        float(raw.get(b"lp", 0.0)),
        float(raw.get(b"lpw", 0.0)),
    )


def decode_item(raw: dict[bytes, bytes]) -> Item | None:
    if not raw or b"vec" not in raw:
        return None
    return Item(
        np.frombuffer(raw[b"vec"], dtype=np.float32).copy(),
        raw[b"category"].decode(),
        float(raw[b"price"]),
        raw[b"in_stock"] == b"1",
    )


@dataclass
class Loaded:
    seen: dict[str, bool] = field(default_factory=dict)
    items: dict[str, Item | None] = field(default_factory=dict)
    profiles: dict[str, Profile | None] = field(default_factory=dict)
    sessions: dict[str, list[str]] = field(default_factory=dict)
    recent: dict[str, list[str]] = field(default_factory=dict)  # newest first, distinct
    served: dict[str, list[bytes]] = field(default_factory=dict)  # newest first


# SET the key to ARGV[1] unless it already holds a smaller number.
_KEEP_SMALLER = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) > tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class ProfileState:
    def __init__(self, client: aioredis.Redis, keys: Keys, params: ClickParams) -> None:
        self.redis = client
        self.keys = keys
        self.params = params

    async def put_item(self, product_id: str, vector: list[float], category: str, price: float, in_stock: bool,
                       listed_ts: float | None = None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            self.keys.item(product_id),
            mapping={"vec": np.asarray(vector, dtype=np.float32).tobytes(), "category": category, "price": repr(price), "in_stock": "1" if in_stock else "0"},
        )
        if listed_ts is not None:
            pipe.eval(_KEEP_SMALLER, 1, self.keys.catalogue_since, repr(listed_ts))
        await pipe.execute()

    async def put_indexed(self, item: ProductIndexed) -> None:
        """What the ``items`` agent does with each ``products.indexed`` event."""
        await self.put_item(item.product_id, item.vectors["fused"], item.category, item.price, item.in_stock, item.listed_at.timestamp())

    async def delete_item(self, product_id: str) -> None:
        await self.redis.delete(self.keys.item(product_id))

    async def load(self, event_ids: list[str], items: set[str], users: set[str], sessions: set[str],
                   choosers: set[str] = frozenset()) -> Loaded:  # type: ignore[assignment]
        """Everything a batch needs, in one round trip; ``choosers``' served lists too."""
        p = self.params
        batch = ReadBatch()
        for e in event_ids:
            batch.call("EXISTS", self.keys.seen(e))
        for i in items:
            batch.call("HGETALL", self.keys.item(i))
        for u in users:
            batch.call("HGETALL", self.keys.user(u))
            batch.call("LRANGE", self.keys.recent(u), 0, 2 * p.history_items - 1)
        for s in sessions:
            batch.call("LRANGE", self.keys.session(s), 0, -1)
        for u in choosers:
            batch.call("LRANGE", self.keys.served(u), 0, p.served_lists - 1)
        results = iter(await batch.execute(self.redis))
        loaded = Loaded()
        loaded.seen = {e: bool(next(results)) for e in event_ids}
        loaded.items = {i: decode_item(as_hash(next(results))) for i in items}
        for u in users:
            loaded.profiles[u] = decode_profile(as_hash(next(results)))
            loaded.recent[u] = list(dict.fromkeys(x.decode() for x in next(results)))
        loaded.sessions = {s: [x.decode() for x in next(results)] for s in sessions}
        loaded.served = {u: list(next(results)) for u in choosers}
        return loaded

    async def positions(self, partitions: set[tuple[str, int]]) -> dict[tuple[str, int], Position | None]:
        """The stored position of each (topic, partition); None where nothing was applied yet."""
        if not partitions:
            return {}
        ordered = sorted(partitions)
        pipe = self.redis.pipeline(transaction=False)
        for topic, partition in ordered:
            pipe.hget(self.keys.positions(topic), str(partition))
        return {p: Position.parse(v) for p, v in zip(ordered, await pipe.execute(), strict=True)}

    async def parked(self, partitions: set[tuple[str, int]], limit: int) -> dict[tuple[str, int], tuple[int, list[tuple[bytes, float]]]]:
        """Per partition: how many clicks are parked, and the oldest ``limit`` with when they were parked."""
        if not partitions:
            return {}
        ordered = sorted(partitions)
        pipe = self.redis.pipeline(transaction=False)
        for topic, partition in ordered:
            pipe.zcard(self.keys.parked(topic, partition))
            pipe.zrange(self.keys.parked(topic, partition), 0, limit - 1, withscores=True)
        results = iter(await pipe.execute())
        return {p: (next(results), [(m, float(s)) for m, s in next(results)]) for p in ordered}

    async def parked_count(self, partitions: set[tuple[str, int]]) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for topic, partition in sorted(partitions):
            pipe.zcard(self.keys.parked(topic, partition))
        return sum(await pipe.execute()) if partitions else 0

    async def impressed(self, request_ids: set[str]) -> dict[str, set[str]]:
        """The products reported as seen in each served list (lists without reports are left out)."""
        if not request_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for r in request_ids:
            pipe.smembers(self.keys.impressed(r))
        return {r: {x.decode() for x in members} for r, members in zip(request_ids, await pipe.execute(), strict=True) if members}

    async def remember_served(self, user: str, value: bytes) -> None:
        """Keep one served list (the JSON as it came) among the shopper's latest few."""
        p, key = self.params, self.keys.served(user)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(key, value)
        pipe.ltrim(key, 0, p.served_lists - 1)
        pipe.expire(key, p.served_ttl_s)
        await pipe.execute()

    async def current_epoch(self, now: float) -> float:
        """The forward-decay epoch of the trending sets, moved forward (and the sets rescaled) when due."""
        epoch_key = self.keys.trending_epoch
        await self.redis.set(epoch_key, repr(now), nx=True)
        epoch = float(await self.redis.get(epoch_key))
        behind = (now - epoch) / self.params.half_life_s
        if behind <= RESCALE_AFTER_HALF_LIVES:
            return epoch
        factor = 2.0 ** -behind
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(epoch_key)  # another worker rescaling first wins; we re-read
                keys = await self._trending_sets()
                pipe.multi()
                for key in keys:
                    pipe.zunionstore(key, {key: factor})
                pipe.set(epoch_key, repr(now))
                await pipe.execute()
            except aioredis.WatchError:
                pass
        return float(await self.redis.get(epoch_key))

    async def _trending_sets(self) -> list[bytes]:
        if not await self.redis.exists(self.keys.trending_sets_complete):
            # Sets written before the registry existed: found once (SCAN walks the whole
            # keyspace, on one node), registered, and never looked for again.
            found = [k async for k in self.redis.scan_iter(match=self.keys.trending())]
            found += [k async for k in self.redis.scan_iter(match=self.keys.trending("*"))]
            if found:
                await self.redis.sadd(self.keys.trending_sets, *found)
            await self.redis.set(self.keys.trending_sets_complete, 1)
        return sorted(await self.redis.smembers(self.keys.trending_sets))

    async def items(self, product_ids: set[str]) -> dict[str, Item | None]:
        pipe = self.redis.pipeline(transaction=False)
        for i in product_ids:
            pipe.hgetall(self.keys.item(i))
        return {i: decode_item(raw) for i, raw in zip(product_ids, await pipe.execute(), strict=True)}

    async def profile(self, user: str) -> Profile | None:
        return decode_profile(await self.redis.hgetall(self.keys.user(user)))
