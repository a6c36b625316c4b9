"""How much the profiles worker keeps under each key: the most a reader can ever find there.

The worker trims to these numbers (``services.profiles.profile.ClickParams`` takes them as its
defaults) and the recommender reads within them (``services.recommender.shopper.ReadLimits``),
so the two cannot drift apart: a reader asking for more than is kept would silently get less.

>>> BOUNDS.seen_items, BOUNDS.half_life_s / 86400
(500, 7.0)
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    recent_items: int = 50  # a shopper's latest items (list), newest first
    seen_items: int = 500  # everything a shopper interacted with, never recommended again
    purchased_items: int = 200
    session_items: int = 20
    served_lists: int = 3  # latest served lists kept per shopper, to join with choices
    neighbours: int = 500  # per item, in each co-visitation set
    pair_members: int = 50_000_000  # in all co-visitation and history sets together (state.pairs)
    trending: int = 1000  # per trending set (overall and per category)
    half_life_s: float = 7 * 24 * 3600.0  # how fast profiles and trending scores fade
    profile_ttl_s: int = 90 * 24 * 3600
    session_ttl_s: int = 30 * 60
    served_ttl_s: int = 30 * 60
    dedupe_ttl_s: int = 7 * 24 * 3600


BOUNDS = Bounds()
