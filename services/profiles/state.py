"""Profile state in Redis, as the worker reads and writes it: batched reads, and one transaction
of writes per batch and key group.

Key names, value codecs and bounds are the Redis contract (``state``). Every key has a TTL or
a cap, so memory stays bounded (see docs/profiles.md for sizes).
"""

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np
import redis.asyncio as aioredis

from schemas import ProductIndexed
from schemas.experiments import ExperimentTag
from services.profiles.positions import Position
from services.profiles.profile import RESCALE_AFTER_HALF_LIVES, ClickParams
from services.profiles.writes import ReadBatch, as_hash
from state.catalogue import decode_alias
from state.keys import Keys
from state.served import remember_async
from state.values import Item, Profile, decode_item, decode_profile, encode_item

log = logging.getLogger(__name__)


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


# Move the forward-decay epoch of one group's trending sets (KEYS[1]) to ARGV[1] (now) and
# rescale every set registered in KEYS[2], when the epoch is more than ARGV[3] half-lives
# (ARGV[2] s) behind; the epoch, as stored. Nil instead when a rescale is due but the registry
# may miss sets written before it existed (ARGV[4] '1' and KEYS[3] unset): they are to be found
# first. One script: atomic within the group's slot, whoever runs it first wins.
_MOVE_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
local behind = (tonumber(ARGV[1]) - tonumber(epoch)) / tonumber(ARGV[2])
if behind <= tonumber(ARGV[3]) then return epoch end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return false end
local factor = string.format('%.17g', 2 ^ (-behind))
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', factor)
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


_ALIAS_EVERY_S = 5.0


@dataclass
class _AliasRead:
    value: str | None = None
    read_at: float = float("-inf")


class ProfileState:
    """The profile keys of one group (``keys.group``); ``at(g)`` gives another group's."""

    def __init__(self, client: aioredis.Redis, keys: Keys, params: ClickParams, alias: "_AliasRead | None" = None) -> None:
        self.redis = client
        self.keys = keys
        self.params = params
        self._alias = alias or _AliasRead()  # shared by the groups' states

    def at(self, group: int) -> "ProfileState":
        return self if group == self.keys.group else ProfileState(self.redis, self.keys.at(group), self.params, self._alias)

    async def unversioned(self, now: float) -> str | None:
        """The version of vectors written without one (``state.catalogue``), read at most every
        few seconds: it changes at a shop's first `shelfsight reembed`, and then never again."""
        if now - self._alias.read_at >= _ALIAS_EVERY_S:
            try:
                alias = decode_alias(await self.redis.get(self.keys.catalogue))
            except ValueError:
                log.warning("the catalogue alias cannot be read; vectors without a version are taken as they are")
                alias = None
            self._alias.value, self._alias.read_at = (alias.unversioned if alias else None), now
        return self._alias.value

    def groups(self) -> list["ProfileState"]:
        return [self.at(g) for g in range(self.keys.shards)]

    async def put_item(
        self,
        product_id: str,
        vector: list[float],
        category: str,
        price: float,
        in_stock: bool,
        listed_ts: float | None = None,
        model_version: str | None = None,
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        item = Item(np.asarray(vector, dtype=np.float32), category, price, in_stock, model_version)
        pipe.hset(self.keys.item(product_id), mapping=encode_item(item))
        if listed_ts is not None:
            pipe.eval(_KEEP_SMALLER, 1, self.keys.catalogue_since, repr(listed_ts))
        await pipe.execute()

    async def put_indexed(self, item: ProductIndexed) -> None:
        """What the ``items`` agent does with each ``products.indexed`` event."""
        await self.put_item(
            item.product_id, item.vectors["fused"], item.category, item.price, item.in_stock, item.listed_at.timestamp(), item.model_version
        )

    async def delete_item(self, product_id: str) -> None:
        await self.redis.delete(self.keys.item(product_id))

    async def load(
        self,
        event_ids: list[str],
        items: set[str],
        users: set[str],
        sessions: set[str],
        choosers: "set[str] | frozenset[str]" = frozenset(),
    ) -> Loaded:
        """Everything a batch needs, one script per group (one round trip on a single Redis);
        ``users``, ``sessions`` and the events must be of this group; ``choosers``' served lists too."""
        p, keys = self.params, self.keys
        batches: dict[int, ReadBatch] = {}

        def read(group: int) -> ReadBatch:
            return batches.setdefault(group, ReadBatch())

        mine = read(keys.group)
        for e in event_ids:
            mine.call("EXISTS", keys.seen(e))
        for u in users:
            mine.call("HGETALL", keys.user(u))
            mine.call("LRANGE", keys.recent(u), 0, 2 * p.history_items - 1)
        for s in sessions:
            mine.call("LRANGE", keys.session(s), 0, -1)
        for u in choosers:
            mine.call("LRANGE", keys.served(u), 0, p.served_lists - 1)
        ordered_items = sorted(items)
        for i in ordered_items:
            read(keys.group_of(i)).call("HGETALL", keys.item(i))
        groups = sorted(batches)
        replies = await asyncio.gather(*(batches[g].execute(self.redis, keys.at(g).routing) for g in groups))
        results = {g: iter(r) for g, r in zip(groups, replies, strict=True)}
        own = results[keys.group]
        loaded = Loaded()
        loaded.seen = {e: bool(next(own)) for e in event_ids}
        for u in users:
            loaded.profiles[u] = decode_profile(as_hash(next(own)))
            loaded.recent[u] = list(dict.fromkeys(x.decode() for x in next(own)))
        loaded.sessions = {s: [x.decode() for x in next(own)] for s in sessions}
        loaded.served = {u: list(next(own)) for u in choosers}
        loaded.items = {i: decode_item(as_hash(next(results[keys.group_of(i)]))) for i in ordered_items}
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

    async def impressed(self, lists: set[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
        """The products reported as seen in each (shopper, request id) served list (lists without reports are left out)."""
        if not lists:
            return {}
        ordered = sorted(lists)
        pipe = self.redis.pipeline(transaction=False)
        for user, request_id in ordered:
            pipe.smembers(self.keys.impressed(user, request_id))
        return {r: {x.decode() for x in members} for r, members in zip(ordered, await pipe.execute(), strict=True) if members}

    async def remember_served(
        self, user: str, value: bytes, request_id: str | None = None, experiment: ExperimentTag | None = None
    ) -> None:
        """Keep one served list (the JSON as it came) among the shopper's latest few, unless `serve`
        kept it already; a list of an experiment counts for its variant once (``state.served``)."""
        params = self.params
        await remember_async(self.redis, self.keys, user, value, params.served_lists, params.served_ttl_s, request_id, experiment)

    async def current_epoch(self, now: float) -> float:
        """The forward-decay epoch of this group's trending sets, moved forward (and the sets
        rescaled) when due."""
        keys = self.keys
        # Only the untagged layout can hold sets from before the registry; looked for only when due.
        old_sets_possible = "0" if keys.tagged else "1"
        while True:
            epoch = await self.redis.eval(
                _MOVE_EPOCH,
                3,
                keys.trending_epoch,
                keys.trending_sets,
                keys.trending_sets_complete,
                repr(now),
                repr(self.params.half_life_s),
                repr(float(RESCALE_AFTER_HALF_LIVES)),
                old_sets_possible,
            )
            if epoch is not None:
                return float(epoch)
            await self._register_old_trending_sets()

    async def _register_old_trending_sets(self) -> None:
        """Sets written before the registry existed (untagged layout only): found once (SCAN walks
        the whole keyspace), registered, and never looked for again."""
        found = [k async for k in self.redis.scan_iter(match=self.keys.trending(), count=10_000)]
        found += [k async for k in self.redis.scan_iter(match=self.keys.trending("*"), count=10_000)]
        if found:
            await self.redis.sadd(self.keys.trending_sets, *found)
        await self.redis.set(self.keys.trending_sets_complete, 1)

    async def items(self, product_ids: set[str]) -> dict[str, Item | None]:
        pipe = self.redis.pipeline(transaction=False)
        for i in product_ids:
            pipe.hgetall(self.keys.item(i))
        return {i: decode_item(raw) for i, raw in zip(product_ids, await pipe.execute(), strict=True)}

    async def profile(self, user: str) -> Profile | None:
        raw = await self.redis.hgetall(self.keys.user(user))
        return decode_profile({bytes(k): bytes(v) for k, v in raw.items()})  # type: ignore[arg-type]  # a bytes client: redis-py types it str | bytes
