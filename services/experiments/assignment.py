"""Which variant a shopper sees: a hash of the experiment id and the shopper id, nothing stored.

The same shopper gets the same variant in every `serve` process, after every restart and on
every interface; shoppers who have never signed in are assigned by the id the store gives
them, like everyone else. Two experiments split the same shoppers independently, because the
experiment id is part of the hash.

>>> from schemas.experiments import ExperimentSpec, VariantSpec
>>> spec = ExperimentSpec(experiment_id="e1", variants=[
...     VariantSpec(name="a", share=0.25, ranking="prior"), VariantSpec(name="b", share=0.75, ranking="learned")])
>>> variant_of(spec, "shopper-1") == variant_of(spec, "shopper-1")
True
>>> shares = [variant_of(spec, f"s{n}").name for n in range(20_000)]
>>> abs(shares.count("a") / len(shares) - 0.25) < 3 * (0.25 * 0.75 / len(shares)) ** 0.5  # within 3 SE
True
"""

import hashlib
from dataclasses import dataclass

from schemas.experiments import INTERLEAVED, ExperimentSpec, ExperimentTag, VariantSpec


@dataclass(frozen=True)
class Assignment:
    """What a shopper's list is, in the running experiment: its tag and the variant that makes it."""

    tag: ExperimentTag
    arm: VariantSpec  # the shopper's variant; with interleaving, the control
    challenger: VariantSpec | None = None  # interleaving: the variant team-drafted against the control


def bucket(experiment_id: str, user_id: str) -> float:
    """A number in [0, 1), uniform over shoppers, fixed for this pair of ids."""
    digest = hashlib.sha256(f"{experiment_id}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def variant_of(spec: ExperimentSpec, user_id: str) -> VariantSpec:
    """The variant whose slice of [0, 1) the shopper's bucket falls in (in the declared order)."""
    at, edge = bucket(spec.experiment_id, user_id), 0.0
    for variant in spec.variants:
        edge += variant.share
        if at < edge:
            return variant
    return spec.variants[-1]  # shares add up to 1 within rounding


def assignment_of(spec: ExperimentSpec, user_id: str) -> Assignment:
    """The shopper's variant (A/B), or both rankings to merge (interleaving: every shopper).

    >>> from schemas.experiments import ExperimentSpec, VariantSpec
    >>> spec = ExperimentSpec(experiment_id="i1", mode="interleave", variants=[
    ...     VariantSpec(name="a", share=0.5, ranking="prior"), VariantSpec(name="b", share=0.5, ranking="popularity")])
    >>> found = assignment_of(spec, "anyone")
    >>> found.arm.name, found.challenger.ranking
    ('a', 'popularity')
    """
    if spec.mode == "interleave":
        control, challenger = spec.variants
        tag = ExperimentTag(experiment_id=spec.experiment_id, variant=INTERLEAVED)
        return Assignment(tag, control, challenger)
    variant = variant_of(spec, user_id)
    return Assignment(ExperimentTag(experiment_id=spec.experiment_id, variant=variant.name), variant)
