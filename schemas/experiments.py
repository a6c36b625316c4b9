"""Live experiments: what an operator declares (``shelfsight experiments create``), what every
``serve`` reads from Redis, and the tag an answer carries.

An experiment splits shoppers between variants by a hash of the shopper id and the experiment
id (``services.experiments.assignment``), so a shopper sees the same variant in every process
and after every restart. A variant is a way to make lists: a ranking (the learned ranker, the
hand-set prior, or popularity alone, a deliberately weak control to check that an experiment can
see a loss), optionally with ranking knobs of its own, candidate sources left out, saved learners,
or another model version of the catalogue (one ``shelfsight reembed --stage`` prepared).

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
from typing import Annotated, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# Names go into Redis keys and Prometheus labels: short and plain.
ExperimentId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$", description="Lower-case letters, digits, - and _.")]
VariantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Lower-case letters, digits, - and _.")]
SavedName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,47}$", description="Lower-case letters, digits, ., - and _.")]
# A catalogue model version's name (``state.catalogue``'s own rule): a checkpoint's model_version.
ModelVersion = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,200}$", description="A model version, as `shelfsight reembed --status` names it.")
]
Ranking = Literal["learned", "prior", "popularity"]
# Where candidates come from (services.recommender.features.SOURCES less the catalogue fallback,
# which a list cannot do without): a variant may leave some out.
CandidateSource = Literal[
    "covisit", "history", "items", "trending", "trending_in", "affinity", "taste", "recent", "context", "new", "looks"
]

MAX_VARIANTS = 4
INTERLEAVED = "interleaved"  # the variant an interleaving experiment's merged lists are tagged with


class VariantSpec(BaseModel):
    """One arm: a share of the shoppers and how their lists are made. Besides its ranking, a
    variant may set its own ranking knobs and leave candidate sources out; what it leaves unset is
    the shop's (its ``SHELFSIGHT_`` settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: VariantName
    share: Annotated[float, Field(gt=0.0, le=1.0)]
    ranking: Ranking = Field(
        description="`learned`: the pairwise ranker once it has learned enough (else the prior); "
        "`prior`: the hand-set weights; `popularity`: the shop's decayed popularity alone."
    )
    mmr_lambda: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Relevance against variety within a list (1: relevance alone). Unset: the shop's."
    )
    explore_slots: int | None = Field(
        default=None, ge=0, le=5, description="Places of a list that may go to new products nobody has clicked yet. Unset: the shop's."
    )
    learners: SavedName | None = Field(
        default=None,
        description="Rank with the learners saved under this name (`shelfsight learners save NAME`) instead of the "
        "live ones: the learned ranker, the item-to-item model and the factorisation as they were then.",
    )
    without: list[CandidateSource] = Field(
        default_factory=list, max_length=len(get_args(CandidateSource)), description="Candidate sources this variant does not use."
    )
    model: ModelVersion | None = Field(
        default=None,
        description="Serve this variant from another model version's collection (one `shelfsight reembed --stage` "
        "prepared, or the one before the live one) instead of the live one. Unset: the live version.",
    )

    @property
    def knobs(self) -> dict[str, float]:
        """The ranking settings this variant sets itself."""
        return {k: v for k, v in (("mmr_lambda", self.mmr_lambda), ("explore_slots", self.explore_slots)) if v is not None}

    def describe(self) -> str:
        """``prior``, ``prior,mmr_lambda=0.4,without=looks+new``: as `experiments create --variant` reads it."""
        parts = [self.ranking, *(f"{k}={v:g}" for k, v in self.knobs.items())]
        parts += [f"learners={self.learners}"] if self.learners else []
        parts += [f"model={self.model}"] if self.model else []
        return ",".join(parts + ([f"without={'+'.join(self.without)}"] if self.without else []))

    @model_validator(mode="after")
    def _some_source(self) -> "VariantSpec":
        if set(self.without) >= set(get_args(CandidateSource)):
            raise ValueError("without= leaves out every candidate source: keep at least one")
        return self


class ExperimentSpec(BaseModel):
    """What an operator declares. The first variant is the control the others are compared with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id: ExperimentId
    mode: Literal["ab", "interleave"] = Field(
        default="ab",
        description="`ab`: each shopper sees one variant, by the shares; `interleave`: every shopper sees both "
        "variants' rankings merged into one list (team draft), each product credited to the ranking that placed it.",
    )
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
        if INTERLEAVED in names:
            raise ValueError(f"{INTERLEAVED!r} names the merged list of an interleaving experiment: choose another variant name")
        if self.mode == "interleave" and len(self.variants) != 2:
            raise ValueError(f"interleaving merges two rankings: give two variants, not {len(self.variants)}")
        if self.mode == "interleave" and len({frozenset(v.without) for v in self.variants}) != 1:
            raise ValueError("interleaving drafts both lists from the same candidates: give both variants the same without=")
        if self.mode == "interleave" and len({v.model for v in self.variants}) != 1:
            raise ValueError("interleaving drafts both lists from one catalogue: compare model versions with an A/B experiment")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at is not after starts_at")
        return self


class Experiment(ExperimentSpec):
    """An experiment as stored: the declaration, when it was made, and whether it was stopped."""

    created_at: AwareDatetime
    stopped_at: AwareDatetime | None = None

    def over(self, at: datetime) -> bool:
        """Stopped, or past its end: it assigns nobody any more, now or later."""
        return any(t is not None and t <= at for t in (self.ends_at, self.stopped_at))

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


class Teams(BaseModel):
    """Who placed each shown product of an interleaved list (team draft)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    control: VariantName
    challenger: VariantName
    teams: list[VariantName] = Field(max_length=100, description="One per shown product, in order: control or challenger.")

    @model_validator(mode="after")
    def _two_teams(self) -> "Teams":
        if self.control == self.challenger or not set(self.teams) <= {self.control, self.challenger}:
            raise ValueError("teams name the control or the challenger, two different variants")
        return self


class Interval(BaseModel):
    """An estimate with its 95 % interval (±1.96 standard errors)."""

    mean: float
    low: float
    high: float


class Guardrails(BaseModel):
    """What a variant costs the shop's serving: requests, failures and slow answers."""

    requests: int
    error_rate: Interval
    latency_ms_mean: float
    slow_share: Interval = Field(description="Share of requests slower than 100 ms.")


class VariantReport(BaseModel):
    name: str
    share: float
    ranking: Ranking
    settings: str = Field(description="The ranking and what else the variant sets, as `experiments create` reads it.")
    shoppers: int = Field(description="Shoppers served at least one list of this variant, or credited a choice.")
    per_shopper: dict[str, Interval] = Field(description="Per shopper: lists, clicks, carts, purchases, revenue (price sum).")
    share_with: dict[str, Interval] = Field(description="Share of shoppers with at least one click, cart, purchase.")
    ctr: Interval = Field(description="Clicks on recommended products per list shown.")
    guardrails: Guardrails


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


class InterleavingReport(BaseModel):
    """Two rankings in the same lists: which one's products the shoppers chose."""

    lists: int = Field(description="Interleaved lists served.")
    shoppers: int
    wins: dict[str, int] = Field(description="Lists in which each variant's products got more choices than the other's.")
    ties: int = Field(description="Lists with choices, as many for each variant.")
    second_wins_share: Interval = Field(description="Of the lists one variant won, the share the second (the challenger) won.")
    preference_per_shopper: Interval = Field(
        description="Per shopper: choices of the challenger's products minus the control's. Above 0: the challenger is preferred."
    )
    p_value: float
    p_value_running: float
    decision: Literal["better", "worse", "no decision yet"] = Field(description="The challenger against the control.")
    guardrails: Guardrails | None = Field(default=None, description="Of the merged lists.")


class HistoryPoint(BaseModel):
    """One reading's headline: what the dashboard draws over time."""

    t: float = Field(description="When it was read (Unix seconds).")
    lists: int
    shoppers: int
    difference: Interval = Field(description="The first challenger against the control (interleaving: the preference).")
    p_value_running: float


class ExperimentReport(BaseModel):
    experiment: Experiment
    status: Literal["scheduled", "running", "ended", "stopped"]
    read_at: AwareDatetime
    metric: str = Field(description="The per-shopper metric compared: clicks, carts, purchases or revenue.")
    variants: list[VariantReport]
    comparisons: list[ComparisonReport] = Field(description="Each variant against the first (the control).")
    sample_ratio: SampleRatio
    interleaving: InterleavingReport | None = None
    history: list[HistoryPoint] = Field(default_factory=list, description="Earlier readings, at least 30 s apart, oldest first.")
