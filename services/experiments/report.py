"""An experiment's report, read from Redis: what `shelfsight experiments report` prints and
`GET /v1/experiments/{id}` returns. Each reading also lowers the stored running minimum of
the always-valid p-values, so every reading counts towards the decision."""

from datetime import UTC, datetime
from typing import Literal

import redis

from schemas.experiments import ComparisonReport, Experiment, ExperimentReport, Interval, SampleRatio, VariantReport
from services.experiments.readout import ALPHA, SRM_ALPHA, Comparison, Estimate, VariantFigures, compare, sample_ratio_p, variant_figures
from state.experiments import load, record_reading, totals
from state.keys import Keys

METRICS = ("clicks", "carts", "purchases", "revenue")


def read_report(
    client: redis.Redis, keys: Keys, experiment_id: str, metric: str = "clicks", now: datetime | None = None
) -> ExperimentReport:
    """The report of ``experiment_id`` now, compared on ``metric`` per shopper."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    experiment = load(client, keys, experiment_id)
    read_at = now or datetime.now(UTC)
    summed = totals(client, keys, experiment_id)
    figures = [variant_figures(v.name, summed) for v in experiment.variants]
    comparisons = []
    for variant in figures[1:]:
        found = compare(figures[0], variant, metric)
        running = record_reading(client, keys, experiment_id, f"{variant.name}|{metric}", found.p_value)
        comparisons.append(_comparison(found, running))
    srm = sample_ratio_p(experiment, figures)
    return ExperimentReport(
        experiment=experiment,
        status=_status(experiment, read_at),
        read_at=read_at,
        metric=metric,
        variants=[_variant(experiment, f) for f in figures],
        comparisons=comparisons,
        sample_ratio=SampleRatio(p_value=srm, mismatch=srm < SRM_ALPHA),
    )


def _status(experiment: Experiment, at: datetime) -> Literal["scheduled", "running", "ended", "stopped"]:
    if experiment.stopped_at is not None and experiment.stopped_at <= at:
        return "stopped"
    if experiment.ends_at is not None and experiment.ends_at <= at:
        return "ended"
    return "running" if experiment.running(at) else "scheduled"


def _interval(e: Estimate) -> Interval:
    return Interval(mean=e.mean, low=e.low, high=e.high)


def _variant(experiment: Experiment, figures: VariantFigures) -> VariantReport:
    spec = experiment.variant(figures.name)
    assert spec is not None  # figures are made from the experiment's own variants
    return VariantReport(
        name=figures.name,
        share=spec.share,
        ranking=spec.ranking,
        shoppers=figures.shoppers,
        per_shopper={m: _interval(e) for m, e in figures.per_shopper.items()},
        share_with={m: _interval(e) for m, e in figures.share_with.items()},
        ctr=_interval(figures.ctr),
    )


def _comparison(found: Comparison, running: float) -> ComparisonReport:
    decided = running < ALPHA
    decision: Literal["better", "worse", "no decision yet"] = (
        ("better" if found.difference.mean > 0 else "worse") if decided and found.difference.mean != 0 else "no decision yet"
    )
    return ComparisonReport(
        variant=found.variant,
        metric=found.metric,
        difference=_interval(found.difference),
        relative=found.relative,
        p_value=found.p_value,
        p_value_running=running,
        decision=decision,
    )
