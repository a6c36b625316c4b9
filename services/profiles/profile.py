"""The pure arithmetic of a shopper profile: decayed preferences in the fused space.

>>> p = Profile.empty(2)
>>> p = apply(p, ClickParams(), vector=[1.0, 0.0], category="Bag", kind="click", at=0.0)
>>> p = apply(p, ClickParams(half_life_s=10.0), vector=[0.0, 1.0], category="Dress", kind="click", at=10.0)
>>> [round(x, 3) for x in p.vector.tolist()], {k: round(v, 3) for k, v in p.categories.items()}
([1.0, 2.0], {'Bag': 1.0, 'Dress': 2.0})
"""

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from state.bounds import BOUNDS
from state.values import KIND_WEIGHTS, Profile

__all__ = ["RESCALE_AFTER_HALF_LIVES", "ClickParams", "Profile", "apply", "decay", "forward_decay_score"]


class _ClickSettings(Protocol):
    covisit_neighbours: int
    covisit_max_pairs: int
    profiles_park_s: float
    profiles_park_max: int
    attribution_window_s: float


@dataclass(frozen=True)
class ClickParams:
    """How much each kind of event says, and how fast it is forgotten."""

    weights: dict[str, float] = field(default_factory=lambda: dict(KIND_WEIGHTS))
    half_life_s: float = BOUNDS.half_life_s
    recent_items: int = BOUNDS.recent_items
    purchased_items: int = BOUNDS.purchased_items
    session_items: int = BOUNDS.session_items
    covisit_window: int = 5  # each event is paired with this many of the session's latest items
    neighbours: int = BOUNDS.neighbours  # per item, in each pair set (a SpaceSaving top-k: state.pairs)
    pair_members: int = BOUNDS.pair_members  # in all pair sets; the stalest sets go beyond it
    history_items: int = 20  # each event is paired with this many of the shopper's latest distinct items
    history_decay: float = 0.9  # ... the n-th latest weighing history_decay ** n
    seen_items: int = BOUNDS.seen_items  # remembered per shopper, never recommended again
    served_lists: int = BOUNDS.served_lists  # latest served lists kept per shopper, to join with choices
    served_ttl_s: int = BOUNDS.served_ttl_s
    attribution_window_s: float = BOUNDS.served_ttl_s  # a choice this soon after a list showed its product counts for the list's variant
    choice_negatives: int = 10  # skipped candidates paired with each choice …
    shown_negatives: int = 5  # … of which at most this many were shown (the rest: a sample of lower candidates)
    trending: int = BOUNDS.trending
    profile_ttl_s: int = BOUNDS.profile_ttl_s
    session_ttl_s: int = BOUNDS.session_ttl_s
    dedupe_ttl_s: int = BOUNDS.dedupe_ttl_s
    replay_batch: int = 500  # events read back from Kafka per step when filling a gap before a batch
    park_s: float = 600.0  # a click whose product is not indexed yet waits this long before it is dead-lettered …
    park_max: int = 10_000  # … and at most this many wait per partition (more are dead-lettered at once)
    park_retry: int = 500  # parked clicks looked at per partition and batch, oldest first

    @classmethod
    def of(cls, settings: "_ClickSettings") -> "ClickParams":
        """The defaults, with what the settings (``SHELFSIGHT_…``) change: the worker's and the evaluation's."""
        return cls(
            neighbours=settings.covisit_neighbours,
            pair_members=settings.covisit_max_pairs,
            park_s=settings.profiles_park_s,
            park_max=settings.profiles_park_max,
            attribution_window_s=settings.attribution_window_s,
        )


def decay(params: ClickParams, elapsed_s: float) -> float:
    """How much of an old signal survives ``elapsed_s`` seconds (1 → 0 with the half-life)."""
    return 0.5 ** (max(0.0, elapsed_s) / params.half_life_s)


def apply(
    profile: Profile, params: ClickParams, *, vector: list[float] | np.ndarray, category: str, kind: str, at: float, price: float = 0.0
) -> Profile:
    """The profile after one event at time ``at`` (seconds); events out of order decay, not grow."""
    weight = params.weights[kind]
    if at >= profile.updated_at:
        keep, add, now = decay(params, at - profile.updated_at), weight, at
    else:  # an older event arriving late counts for what it would be worth now
        keep, add, now = 1.0, weight * decay(params, profile.updated_at - at), profile.updated_at
    item = np.asarray(vector, dtype=np.float32)
    new_vector = profile.vector * keep + add * item if profile.vector.size else add * item
    categories = {c: v * keep for c, v in profile.categories.items() if abs(v * keep) > 1e-6}
    categories[category] = categories.get(category, 0.0) + add
    counts = dict(profile.counts)
    counts[kind] = counts.get(kind, 0) + 1
    wanted = max(0.0, add)  # a dismissal says nothing about the prices a shopper pays
    return Profile(
        new_vector.astype(np.float32),
        categories,
        now,
        counts,
        profile.log_price * keep + wanted * math.log1p(max(0.0, price)),
        profile.price_weight * keep + wanted,
        profile.model_version,
    )


RESCALE_AFTER_HALF_LIVES = 64.0


def forward_decay_score(params: ClickParams, weight: float, at: float, epoch: float) -> float:
    """Popularity increment that needs no rewriting of old scores (forward decay).

    Adding ``w * 2^((t - epoch) / half_life)`` ranks items exactly as decayed sums do. The
    numbers grow with time, so the state moves ``epoch`` forward and rescales the sorted
    sets once it is :data:`RESCALE_AFTER_HALF_LIVES` half-lives behind
    (``ProfileState.current_epoch``).
    """
    exponent = max(-1000.0, min(1000.0, (at - epoch) / params.half_life_s))
    return weight * math.pow(2.0, exponent)
