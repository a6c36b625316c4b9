"""What Redis knows about one shopper, read in two pipelined round trips.

The profiles worker writes these keys (``services.profiles.state.Keys``); the recommender
only reads them, so a click is reflected in the very next recommendation.
"""

from dataclasses import dataclass, field

import numpy as np
import redis

from services.profiles.state import Keys, decode_item, decode_profile


@dataclass(frozen=True)
class ReadLimits:
    """How much of a shopper's history a request looks at."""

    recent: int = 20  # recently seen: excluded, and the source of visual and co-visitation anchors
    anchors: int = 3  # recent items whose likeness and neighbours become candidates
    neighbours: int = 10
    trending: int = 20
    categories: int = 2  # top categories whose trending items become candidates
    per_category: int = 10
    purchased: int = 200
    dismissed: int = 20


@dataclass(frozen=True)
class Shopper:
    user_id: str
    vector: np.ndarray | None  # unit preference vector in the fused space; None for a new shopper
    categories: dict[str, float]  # decayed affinity per category
    updated_at: float
    recent: list[str]  # newest first, distinct, dismissals left out
    purchased: frozenset[str]
    dismissed: list[str]

    @property
    def has_history(self) -> bool:
        return self.vector is not None or bool(self.recent)

    def top_categories(self, n: int) -> list[str]:
        positive = [(v, c) for c, v in self.categories.items() if v > 0]
        return [c for _, c in sorted(positive, reverse=True)[:n]]

    def category_share(self, category: str) -> float:
        total = sum(abs(v) for v in self.categories.values()) or 1.0
        return self.categories.get(category, 0.0) / total


@dataclass(frozen=True)
class Signals:
    """The behavioural evidence around a shopper: item vectors, co-visitation and trending."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # of anchors and dismissed items
    neighbours: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # anchor → co-visited items
    trending: list[tuple[str, float]] = field(default_factory=list)
    trending_in: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # category → items


class ShopperReader:
    def __init__(self, client: redis.Redis, keys: Keys, limits: ReadLimits | None = None) -> None:
        self._redis = client
        self._keys = keys
        self.limits = limits or ReadLimits()

    def read(self, user_id: str) -> tuple[Shopper, Signals]:
        k, lim = self._keys, self.limits
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(k.user(user_id))
        pipe.lrange(k.recent(user_id), 0, lim.recent * 2 - 1)  # duplicates and dismissals are dropped below
        pipe.zrevrange(k.purchased(user_id), 0, lim.purchased - 1)
        pipe.zrevrange(k.dismissed(user_id), 0, lim.dismissed - 1)
        pipe.zrevrange(k.trending(), 0, lim.trending - 1, withscores=True)
        raw_profile, raw_recent, raw_purchased, raw_dismissed, trending = pipe.execute()

        profile = decode_profile(raw_profile)
        dismissed = [d.decode() for d in raw_dismissed]
        blocked = set(dismissed)
        recent = [r for r in dict.fromkeys(x.decode() for x in raw_recent) if r not in blocked][: lim.recent]
        vector = None
        if profile is not None and (norm := float(np.linalg.norm(profile.vector))) > 1e-9:
            vector = profile.vector / norm
        shopper = Shopper(
            user_id,
            vector,
            profile.categories if profile else {},
            profile.updated_at if profile else 0.0,
            recent,
            frozenset(p.decode() for p in raw_purchased),
            dismissed,
        )

        anchors = recent[: lim.anchors]
        looked_up = list(dict.fromkeys(anchors + dismissed[: lim.anchors]))
        categories = shopper.top_categories(lim.categories)
        pipe = self._redis.pipeline(transaction=False)
        for item in looked_up:
            pipe.hgetall(k.item(item))
        for item in anchors:
            pipe.zrevrange(k.neighbours(item), 0, lim.neighbours - 1, withscores=True)
        for category in categories:
            pipe.zrevrange(k.trending(category), 0, lim.per_category - 1, withscores=True)
        replies = iter(pipe.execute()) if looked_up or anchors or categories else iter(())
        vectors = {}
        for item in looked_up:
            decoded = decode_item(next(replies))
            if decoded is not None:
                vectors[item] = decoded.vector
        neighbours = {item: _pairs(next(replies)) for item in anchors}
        trending_in = {category: _pairs(next(replies)) for category in categories}
        return shopper, Signals(vectors, neighbours, _pairs(trending), trending_in)

    def popularity(self, product_ids: list[str]) -> list[float]:
        """Trending scores (forward-decayed) of ``product_ids``; 0 for items nobody touched."""
        if not product_ids:
            return []
        return [float(s or 0.0) for s in self._redis.zmscore(self._keys.trending(), product_ids)]


def _pairs(rows: list[tuple[bytes, float]]) -> list[tuple[str, float]]:
    return [(member.decode(), float(score)) for member, score in rows]
