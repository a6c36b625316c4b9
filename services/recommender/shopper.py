"""What Redis knows about one shopper and the candidates around them, in three round trips (two
pipelines, then a script per key group for the candidates' counts).

The profiles worker writes these keys (the Redis contract, ``state``); the recommender
only reads them, so a click is reflected in the very next recommendation. With the state
split into key groups (Redis Cluster), the crowd's counters are read from every group and
added up; each group's trending scores are decayed by that group's own epoch first.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import msgpack
import numpy as np
import redis

from services.recommender.just_posted import Posted
from state.bounds import BOUNDS
from state.keys import Keys
from state.values import decode_item, decode_profile, same_space


@dataclass(frozen=True)
class ReadLimits:
    """How much of a shopper's history a request looks at."""

    recent: int = 20  # recently seen: the anchors of likeness and co-visitation
    anchors: int = 3  # recent items whose likeness becomes Qdrant candidates (and "looks like …" reasons)
    covisit_anchors: int = 20  # recent items whose co-visitation and history pairs are read
    neighbours: int = 200  # pairs read per anchor and kind
    trending: int = 20
    categories: int = 2  # top categories whose trending items become candidates
    per_category: int = 10
    purchased: int = BOUNDS.purchased_items
    dismissed: int = 20
    seen: int = BOUNDS.seen_items  # interacted items never recommended again


@dataclass(frozen=True)
class Shopper:
    user_id: str
    vector: np.ndarray | None  # unit preference vector in the fused space; None for a new shopper
    categories: dict[str, float]  # decayed affinity per category
    updated_at: float
    recent: list[str]  # newest first, distinct, dismissals left out
    purchased: frozenset[str]
    dismissed: list[str]
    seen: frozenset[str] = frozenset()
    usual_log_price: float | None = None
    history: tuple[str, ...] = ()  # ``seen`` newest first, dismissals left out (the item-to-item model reads it)

    @property
    def has_history(self) -> bool:
        return self.vector is not None or bool(self.recent)

    def with_posted(self, posted: Sequence[Posted], recent_limit: int) -> "Shopper":
        """The shopper with ``posted`` events (newest first) added: recent, seen, bought and dismissed."""
        dismissed = [p.product_id for p in posted if p.kind == "dismiss"]
        wanted = [p.product_id for p in posted if p.kind != "dismiss"]
        blocked = set(dismissed) | set(self.dismissed)
        recent = [r for r in dict.fromkeys([*wanted, *self.recent]) if r not in blocked][:recent_limit]
        bought = {p.product_id for p in posted if p.kind == "purchase"}
        return replace(
            self,
            recent=recent,
            dismissed=list(dict.fromkeys([*dismissed, *self.dismissed])),
            seen=self.seen | {p.product_id for p in posted},
            purchased=self.purchased | bought,
            history=tuple(dict.fromkeys([*wanted, *self.history])),
        )

    def top_categories(self, n: int) -> list[str]:
        positive = [(v, c) for c, v in self.categories.items() if v > 0]
        return [c for _, c in sorted(positive, reverse=True)[:n]]

    def category_share(self, category: str) -> float:
        total = sum(abs(v) for v in self.categories.values()) or 1.0
        return self.categories.get(category, 0.0) / total


Pairs = list[tuple[str, float]]


@dataclass(frozen=True)
class Signals:
    """The behavioural evidence around a shopper: item vectors, co-visitation, history pairs, trending."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # of anchors and dismissed items
    neighbours: dict[str, Pairs] = field(default_factory=dict)  # anchor → items co-visited in sessions
    history: dict[str, Pairs] = field(default_factory=dict)  # anchor → items near it in shoppers' histories
    anchor_interactions: dict[str, float] = field(default_factory=dict)
    trending: Pairs = field(default_factory=list)  # decayed to now
    trending_in: dict[str, Pairs] = field(default_factory=dict)  # category → items
    catalogue_since: float | None = None  # the earliest listing: before then + "new", nothing is new
    decay_now: tuple[float, ...] = (1.0,)  # per key group: stored trending scores × this = popularity as of the read
    as_of: float = 0.0  # the time the state is as of: the shop's clock (the latest event applied), never past the wall clock


@dataclass(frozen=True)
class ItemStats:
    """The crowd's evidence about candidates, as arrays in the order asked."""

    trending: np.ndarray  # decayed popularity as of now
    interactions: np.ndarray
    choices: np.ndarray
    impressions: np.ndarray


class ShopperReader:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        limits: ReadLimits | None = None,
        half_life_s: float | None = None,
        model_version: Callable[[], str | None] = lambda: None,
        unversioned: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``model_version``: the live one (``shelfsight reembed``); a taste or an item vector of
        another version is in another space, and is read as absent. ``unversioned``: the version of
        vectors stored without one (``state.catalogue``)."""
        self._redis = client
        self._keys = keys
        self._model_version = model_version
        self._unversioned = unversioned
        self.limits = limits or ReadLimits()
        self._half_life_s = half_life_s or BOUNDS.half_life_s

    def read(self, user_id: str, now: float, posted: Sequence[Posted] = ()) -> tuple[Shopper, Signals]:
        """The shopper and the signals around them; ``posted``: events the API accepted a moment ago
        (newest first), read over what Redis holds, since the worker may not have applied them yet."""
        shopper, crowd = self._read_shopper(user_id, now)
        if posted:
            shopper = shopper.with_posted(posted, self.limits.recent)
        return shopper, self._read_signals(shopper, crowd)

    def _read_shopper(self, user_id: str, now: float) -> tuple[Shopper, "_Crowd"]:
        """The first round trip: the shopper's own keys, the crowd's trending items and each key group's clock."""
        k, lim = self._keys, self.limits
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(k.user(user_id))
        pipe.lrange(k.recent(user_id), 0, lim.recent * 2 - 1)  # duplicates and dismissals are dropped below
        pipe.zrevrange(k.purchased(user_id), 0, lim.purchased - 1)
        pipe.zrevrange(k.dismissed(user_id), 0, lim.dismissed - 1)
        pipe.zrevrange(k.seen_items(user_id), 0, lim.seen - 1)
        pipe.get(k.catalogue_since)
        for g in k.groups():
            pipe.zrevrange(g.trending(), 0, lim.trending - 1, withscores=True)
            pipe.get(g.trending_epoch)
            pipe.zscore(g.clock, "latest")
        raw_profile, raw_recent, raw_purchased, raw_dismissed, raw_seen, since, *per_group = pipe.execute()

        clocks = [float(c) for c in per_group[2::3] if c is not None]
        as_of = min(now, max(clocks)) if clocks else now
        # Forward-decayed scores grow with time; as of the shop's clock, they are counts that fade by half-life.
        decay_now = tuple(2.0 ** -((as_of - float(epoch)) / self._half_life_s) if epoch else 1.0 for epoch in per_group[1::3])
        trending = _added([_scaled(_pairs(rows), d) for rows, d in zip(per_group[0::3], decay_now, strict=True)], lim.trending)
        shopper = _shopper(
            user_id, raw_profile, raw_recent, raw_purchased, raw_dismissed, raw_seen, lim.recent, self._model_version(), self._unversioned()
        )
        return shopper, _Crowd(trending, float(since) if since else None, decay_now, as_of)

    def _read_signals(self, shopper: Shopper, crowd: "_Crowd") -> Signals:
        """The second round trip: vectors of recent and dismissed items, co-visitation and history
        pairs of the recent ones, and what is trending in the shopper's top categories."""
        k, lim = self._keys, self.limits
        recent, dismissed = shopper.recent, shopper.dismissed
        anchors = recent[: lim.covisit_anchors]
        looked_up = list(dict.fromkeys(recent[: lim.anchors] + dismissed[: lim.anchors]))
        categories = shopper.top_categories(lim.categories)
        groups = k.groups()
        pipe = self._redis.pipeline(transaction=False)
        for item in looked_up:
            pipe.hgetall(k.item(item))
        for item in anchors:
            for g in groups:
                pipe.zrevrange(g.neighbours(item), 0, lim.neighbours - 1, withscores=True)
                pipe.zrevrange(g.history(item), 0, lim.neighbours - 1, withscores=True)
        if anchors:
            for g in groups:
                pipe.zmscore(g.interactions, anchors)
        for category in categories:
            for g in groups:
                pipe.zrevrange(g.trending(category), 0, lim.per_category - 1, withscores=True)
        replies = iter(pipe.execute()) if looked_up or anchors or categories else iter(())
        vectors = {}
        live, unversioned = self._model_version(), self._unversioned()
        for item in looked_up:
            decoded = decode_item(next(replies))
            if decoded is not None and same_space(decoded.model_version, live, unversioned):
                vectors[item] = decoded.vector
        neighbours, history = {}, {}
        for item in anchors:
            pairs = [(_pairs(next(replies)), _pairs(next(replies))) for _ in groups]
            neighbours[item] = _added([n for n, _ in pairs], lim.neighbours)
            history[item] = _added([h for _, h in pairs], lim.neighbours)
        counts: dict[str, float] = {}
        if anchors:
            totals = np.sum([[float(c or 0.0) for c in next(replies)] for _ in groups], axis=0)
            counts = dict(zip(anchors, (float(c) for c in totals), strict=True))
        trending_in = {
            category: _added([_scaled(_pairs(next(replies)), d) for d in crowd.decay_now], lim.per_category) for category in categories
        }
        return Signals(
            vectors, neighbours, history, counts, crowd.trending, trending_in, crowd.catalogue_since, crowd.decay_now, crowd.as_of
        )

    def stats(self, product_ids: list[str], decay_now: tuple[float, ...]) -> ItemStats:
        """Popularity (as of now: ``Signals.decay_now``), interactions and choices of ``product_ids``,
        added up over the key groups."""
        if not product_ids:
            empty = np.zeros(0)
            return ItemStats(empty, empty, empty, empty)
        groups = self._keys.groups()
        # One script a group with the ids as one packed argument and one packed reply: four
        # ZMSCOREs of a few hundred ids each cost redis-py more to pack and parse than Redis to run.
        packed = msgpack.packb(product_ids, use_bin_type=False)
        if isinstance(self._redis, redis.RedisCluster):  # a cluster pipeline cannot carry scripts: one per group's slot
            raws = [self._redis.eval(_STATS_SCRIPT, 4, g.trending(), g.interactions, g.choices, g.impressions, packed) for g in groups]
        else:  # one round trip, however many groups
            pipe = self._redis.pipeline(transaction=False)
            for g in groups:
                pipe.eval(_STATS_SCRIPT, 4, g.trending(), g.interactions, g.choices, g.impressions, packed)
            raws = pipe.execute()
        rows = [[float(s) if s else 0.0 for s in reply] for raw in raws for reply in msgpack.unpackb(raw, raw=True)]
        replies = np.array(rows).reshape(len(groups), 4, len(product_ids))
        trending = (replies[:, 0, :] * np.asarray(decay_now)[:, None]).sum(axis=0)
        return ItemStats(trending, replies[:, 1, :].sum(axis=0), replies[:, 2, :].sum(axis=0), replies[:, 3, :].sum(axis=0))


# ZMSCORE of each key for the packed ids, in slices that stay within Lua's stack for unpack.
_STATS_SCRIPT = """
local ids = cmsgpack.unpack(ARGV[1])
local out = {}
for k = 1, #KEYS do
  local scores = {}
  for first = 1, #ids, 1000 do
    local part = redis.call('ZMSCORE', KEYS[k], unpack(ids, first, math.min(first + 999, #ids)))
    for _, s in ipairs(part) do scores[#scores + 1] = s end
  end
  out[k] = scores
end
return cmsgpack.pack(out)
"""


@dataclass(frozen=True)
class _Crowd:
    """What the first round trip read besides the shopper: the crowd's trending items and the shop's clock."""

    trending: Pairs  # decayed to ``as_of``
    catalogue_since: float | None
    decay_now: tuple[float, ...]
    as_of: float


def _shopper(
    user_id: str,
    raw_profile: dict[bytes, bytes],
    raw_recent: list[bytes],
    raw_purchased: list[bytes],
    raw_dismissed: list[bytes],
    raw_seen: list[bytes],
    recent_limit: int,
    model_version: str | None = None,
    unversioned: str | None = None,
) -> Shopper:
    """The shopper as their own keys hold them: the profile, and what they saw, bought and dismissed."""
    profile = decode_profile(raw_profile)
    dismissed = [d.decode() for d in raw_dismissed]
    blocked = set(dismissed)
    recent = [r for r in dict.fromkeys(x.decode() for x in raw_recent) if r not in blocked][:recent_limit]
    vector = None
    usable = profile is not None and same_space(profile.model_version, model_version, unversioned)
    if profile is not None and usable and (norm := float(np.linalg.norm(profile.vector))) > 1e-9:
        vector = profile.vector / norm
    return Shopper(
        user_id,
        vector,
        profile.categories if profile else {},
        profile.updated_at if profile else 0.0,
        recent,
        frozenset(p.decode() for p in raw_purchased),
        dismissed,
        frozenset(seen := [s.decode() for s in raw_seen]),
        profile.usual_log_price if profile else None,
        tuple(s for s in seen if s not in blocked),
    )


def _scaled(rows: Pairs, factor: float) -> Pairs:
    return [(item, score * factor) for item, score in rows]


def _added(lists: list[Pairs], limit: int) -> Pairs:
    """Scores of the same item added over the key groups, highest first (one group: as read)."""
    if len(lists) == 1:
        return lists[0]
    total: dict[str, float] = {}
    for rows in lists:
        for item, score in rows:
            total[item] = total.get(item, 0.0) + score
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def _pairs(rows: list[tuple[bytes, float]]) -> Pairs:
    return [(member.decode(), float(score)) for member, score in rows]
