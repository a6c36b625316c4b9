"""An experiment's report, read from Redis: what `shelfsight experiments report` prints and
`GET /v1/experiments/{id}` returns. Each reading also lowers the stored running minimum of
the always-valid p-values, so every reading counts towards the decision."""

from datetime import UTC, datetime
from typing import Literal

import redis

from schemas.experiments import (
    INTERLEAVED,
    ComparisonReport,
    Experiment,
    ExperimentReport,
    Guardrails,
    HistoryPoint,
    InterleavingReport,
    Interval,
    SampleRatio,
    VariantReport,
)
from services.experiments.readout import (
    ALPHA,
    SRM_ALPHA,
    Comparison,
    Estimate,
    VariantFigures,
    compare,
    drafted,
    sample_ratio_p,
    variant_figures,
)
from state.experiments import COMPARED, history, load, record_point, record_reading, totals
from state.keys import Keys


def read_report(
    client: redis.Redis, keys: Keys, experiment_id: str, metric: str = "clicks", now: datetime | None = None
) -> ExperimentReport:
    """The report of ``experiment_id`` now, compared on ``metric`` per shopper."""
    if metric not in COMPARED:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(COMPARED)}")
    experiment = load(client, keys, experiment_id)
    read_at = now or datetime.now(UTC)
    summed = totals(client, keys, experiment_id)
    if experiment.mode == "interleave":
        report = _interleaving_report(client, keys, experiment, summed, read_at)
    else:
        report = _ab_report(client, keys, experiment, summed, read_at, metric)
    if metric == "clicks":  # the curves are of one metric: the one the experiment is decided on by default
        record_point(client, keys, experiment_id, _headline(report), read_at.timestamp())
    return report.model_copy(update={"history": [HistoryPoint.model_validate(p) for p in history(client, keys, experiment_id)]})


def _headline(report: ExperimentReport) -> dict[str, object]:
    """What the dashboard draws: traffic so far, the first comparison, its running p-value."""
    if report.interleaving is not None:
        found = report.interleaving
        return {
            "lists": found.lists,
            "shoppers": found.shoppers,
            "difference": found.preference_per_shopper.model_dump(),
            "p_value_running": found.p_value_running,
        }
    lists = round(sum(v.per_shopper["lists"].mean * v.shoppers for v in report.variants))
    first = report.comparisons[0]
    return {
        "lists": lists,
        "shoppers": sum(v.shoppers for v in report.variants),
        "difference": first.difference.model_dump(),
        "p_value_running": first.p_value_running,
    }


def _ab_report(
    client: redis.Redis, keys: Keys, experiment: Experiment, summed: dict[str, float], read_at: datetime, metric: str
) -> ExperimentReport:
    experiment_id = experiment.experiment_id
    figures = [variant_figures(v.name, summed) for v in experiment.variants]
    comparisons = []
    for variant in figures[1:]:
        name = f"{variant.name}|{metric}"
        found = compare(figures[0], variant, metric)
        running, sign = record_reading(client, keys, experiment_id, name, found.p_value, _sign(found.difference.mean))
        comparisons.append(_comparison(found, running, sign))
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
        settings=spec.describe(),
        shoppers=figures.shoppers,
        per_shopper={m: _interval(e) for m, e in figures.per_shopper.items()},
        share_with={m: _interval(e) for m, e in figures.share_with.items()},
        ctr=_interval(figures.ctr),
        guardrails=_guardrails(figures),
    )


def _guardrails(figures: VariantFigures) -> Guardrails:
    return Guardrails(
        requests=figures.requests,
        error_rate=_interval(figures.error_rate),
        latency_ms_mean=figures.latency_ms_mean,
        slow_share=_interval(figures.slow_share),
    )


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _comparison(found: Comparison, running: float, sign: int) -> ComparisonReport:
    return ComparisonReport(
        variant=found.variant,
        metric=found.metric,
        difference=_interval(found.difference),
        relative=found.relative,
        p_value=found.p_value,
        p_value_running=running,
        decision=_decision(running, sign),
    )


def _interleaving_report(
    client: redis.Redis, keys: Keys, experiment: Experiment, summed: dict[str, float], read_at: datetime
) -> ExperimentReport:
    control, challenger = (v.name for v in experiment.variants)
    name = f"{INTERLEAVED}|preference"
    found = drafted(control, challenger, summed)
    running, sign = record_reading(client, keys, experiment.experiment_id, name, found.p_value, _sign(found.preference.mean))
    return ExperimentReport(
        experiment=experiment,
        status=_status(experiment, read_at),
        read_at=read_at,
        metric="clicks",
        variants=[],
        comparisons=[],
        sample_ratio=SampleRatio(p_value=1.0, mismatch=False),  # every shopper sees both: nothing to split
        interleaving=InterleavingReport(
            lists=found.lists,
            shoppers=found.shoppers,
            wins=found.wins,
            ties=found.ties,
            second_wins_share=_interval(found.second_wins_share),
            preference_per_shopper=_interval(found.preference),
            p_value=found.p_value,
            p_value_running=running,
            decision=_decision(running, sign),
            guardrails=_guardrails(variant_figures(INTERLEAVED, summed)),
        ),
    )


def _decision(running_p: float, sign: int) -> Literal["better", "worse", "no decision yet"]:
    """Decided once the running minimum of the always-valid p-value is below ALPHA, by the sign of
    the difference at the reading that reached that minimum (so a decision never flips)."""
    if running_p >= ALPHA or sign == 0:
        return "no decision yet"
    return "better" if sign > 0 else "worse"
