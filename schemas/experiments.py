"""Live experiments: what an operator declares (``shelfsight experiments create``), what every
``serve`` reads from Redis, and the tag an answer carries.

An experiment splits shoppers between variants by a hash of the shopper id and the experiment
id (``services.experiments.assignment``), so a shopper sees the same variant in every process
and after every restart. A variant is a way to rank: the learned ranker, the hand-set prior, or
popularity alone (a deliberately weak control, to check that an experiment can see a loss).

>>> spec = ExperimentSpec(experiment_id="ranking-1", variants=[
...     VariantSpec(name="learned", share=0.5, ranking="learned"), VariantSpec(name="prior", share=0.5, ranking="prior")])
>>> [v.name for v in spec.variants], spec.mode
(['learned', 'prior'], 'ab')
>>> try:
...     ExperimentSpec(experiment_id="x", variants=[VariantSpec(name="a", share=0.7, ranking="prior"),
...                    VariantSpec(name="b", share=0.7, ranking="learned")])
... except ValueError as error:
...     print(error.errors()[0]["msg"])
Value error, the variants' shares add up to 1.4: they must add up to 1
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# Names go into Redis keys and Prometheus labels: short and plain.
ExperimentId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$", description="Lower-case letters, digits, - and _.")]
VariantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Lower-case letters, digits, - and _.")]
Ranking = Literal["learned", "prior", "popularity"]

MAX_VARIANTS = 4


class VariantSpec(BaseModel):
    """One arm: a share of the shoppers and how their lists are ranked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: VariantName
    share: Annotated[float, Field(gt=0.0, le=1.0)]
    ranking: Ranking = Field(
        description="`learned`: the pairwise ranker once it has learned enough (else the prior); "
        "`prior`: the hand-set weights; `popularity`: the shop's decayed popularity alone."
    )


class ExperimentSpec(BaseModel):
    """What an operator declares. The first variant is the control the others are compared with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: ExperimentId
    mode: Literal["ab"] = "ab"
    variants: list[VariantSpec] = Field(min_length=2, max_length=MAX_VARIANTS)
    starts_at: AwareDatetime | None = Field(default=None, description="Default: when it is created.")
    ends_at: AwareDatetime | None = Field(default=None, description="Default: until it is stopped.")
    description: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentSpec":
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat ({', '.join(names)}): give each its own name")
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"the variants' shares add up to {total:.6g}: they must add up to 1")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at is not after starts_at")
        return self


class Experiment(ExperimentSpec):
    """An experiment as stored: the declaration, when it was made, and whether it was stopped."""

    created_at: AwareDatetime
    stopped_at: AwareDatetime | None = None

    def running(self, at: datetime) -> bool:
        start = self.starts_at or self.created_at
        ends = [t for t in (self.ends_at, self.stopped_at) if t is not None]
        return start <= at and all(at < t for t in ends)

    def variant(self, name: str) -> VariantSpec | None:
        return next((v for v in self.variants if v.name == name), None)


class ExperimentTag(BaseModel):
    """Which experiment and variant produced an answer; sent back with the widget's events."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    experiment_id: ExperimentId
    variant: VariantName


class Interval(BaseModel):
    """An estimate with its 95 % interval (±1.96 standard errors)."""

    mean: float
    low: float
    high: float


class VariantReport(BaseModel):
    name: str
    share: float
    ranking: Ranking
    shoppers: int = Field(description="Shoppers served at least one list of this variant, or credited a choice.")
    per_shopper: dict[str, Interval] = Field(description="Per shopper: lists, clicks, carts, purchases, revenue (price sum).")
    share_with: dict[str, Interval] = Field(description="Share of shoppers with at least one click, cart, purchase.")
    ctr: Interval = Field(description="Clicks on recommended products per list shown.")


class ComparisonReport(BaseModel):
    variant: str
    metric: str
    difference: Interval = Field(description="The variant's mean per shopper minus the control's.")
    relative: float | None
    p_value: float = Field(description="The always-valid p-value at this reading (mSPRT).")
    p_value_running: float = Field(description="Its smallest value at any reading so far: what the decision uses.")
    decision: Literal["better", "worse", "no decision yet"]


class SampleRatio(BaseModel):
    p_value: float
    mismatch: bool = Field(description="True when the shoppers per variant are too far from the shares: do not trust the figures.")


class ExperimentReport(BaseModel):
    experiment: Experiment
    status: Literal["scheduled", "running", "ended", "stopped"]
    read_at: AwareDatetime
    metric: str = Field(description="The per-shopper metric compared: clicks, carts, purchases or revenue.")
    variants: list[VariantReport]
    comparisons: list[ComparisonReport] = Field(description="Each variant against the first (the control).")
    sample_ratio: SampleRatio
