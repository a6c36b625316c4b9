"""What the variants did, from their sums alone: per-shopper means with 95 % intervals, the
click-through, a sequential test that may be read at any time, and a sample-ratio check.

The unit is the shopper (who is randomised), not the list: one shopper's lists are alike, and
treating them as independent would make every interval too narrow.

**The sequential test** is the mixture sequential probability ratio test (mSPRT; Johari,
Pekelis & Walsh, "Always valid inference", 2017) on the difference of per-shopper means, with a
normal mixing distribution of standard deviation ``tau``:

    Λ = sqrt(s² / (s² + τ²)) · exp(Δ² τ² / (2 s² (s² + τ²)))

where Δ is the variant's mean minus the control's and s² its estimated variance. ``1/Λ`` is an
always-valid p-value: reading it after every shopper, or whenever an operator looks, does not
inflate the false-positive rate, so its running minimum over the readings (kept in Redis) is what
the decision uses. τ is 10 % of the control's mean: the size of effect the test is tuned to see.

>>> t = {"a|shoppers": 1000, "a|clicks": 500, "a|clicks|sq": 900, "a|lists": 4000, "a|lists|sq": 20000, "a|clicks|x": 2500,
...      "b|shoppers": 1000, "b|clicks": 800, "b|clicks|sq": 1500, "b|lists": 4000, "b|lists|sq": 20000, "b|clicks|x": 3600}
>>> a, b = variant_figures("a", t), variant_figures("b", t)
>>> a.per_shopper["clicks"].mean, round(b.ctr.mean, 3)
(0.5, 0.2)
>>> z = compare(a, b, "clicks")
>>> round(z.difference.mean, 6), z.p_value < 0.001
(0.3, True)
"""

import math
from dataclasses import dataclass

from scipy import stats

from schemas.experiments import Experiment
from state.experiments import METRICS

ALPHA = 0.05  # the false-positive rate the decision allows, however often it is read
SRM_ALPHA = 0.001  # a sample-ratio mismatch this unlikely by chance means the assignment or the logging is broken
TAU_SHARE = 0.1  # the mixture's spread, as a share of the control's mean
# The test's variance is estimated from the shoppers: with a handful of them (most of whom never
# click) it can come out far too small, and an A/A run through the services once "decided" after
# 30 lists and 9 clicks. No reading counts (its p-value is 1) before each side has this many shoppers.
MIN_SHOPPERS = 50
Z95 = 1.959964


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, mean: float, se: float) -> "Estimate":
        return cls(mean, mean - Z95 * se, mean + Z95 * se)


@dataclass(frozen=True)
class Moments:
    """Per-shopper sums of one metric: n, Σx, Σx² (and Σx·lists for the click-through)."""

    n: int
    total: float
    squares: float
    with_lists: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance over shoppers (shoppers without the metric count as 0)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.n * self.mean**2) / (self.n - 1))


@dataclass(frozen=True)
class VariantFigures:
    name: str
    shoppers: int
    per_shopper: dict[str, Estimate]  # lists, clicks, carts, purchases, revenue
    share_with: dict[str, Estimate]  # share of shoppers with at least one click, cart, purchase
    ctr: Estimate  # clicks per list shown, delta method over shoppers
    moments: dict[str, Moments]
    requests: int = 0  # guardrails: requests served in this variant …
    error_rate: Estimate = Estimate(0.0, 0.0, 0.0)  # … the share that failed …
    latency_ms_mean: float = 0.0
    slow_share: Estimate = Estimate(0.0, 0.0, 0.0)  # … and the share slower than 100 ms


@dataclass(frozen=True)
class Comparison:
    variant: str
    metric: str
    difference: Estimate  # variant − control, per shopper
    relative: float | None  # difference / control mean
    p_value: float  # this reading's always-valid p-value (1/Λ, at most 1)


def moments(variant: str, metric: str, totals: dict[str, float]) -> Moments:
    at = f"{variant}|{metric}"
    n = int(totals.get(f"{variant}|shoppers", 0))
    return Moments(n, totals.get(at, 0.0), totals.get(f"{at}|sq", 0.0), totals.get(f"{at}|x", 0.0))


def variant_figures(name: str, totals: dict[str, float]) -> VariantFigures:
    found = {metric: moments(name, metric, totals) for metric in METRICS}
    n = int(totals.get(f"{name}|shoppers", 0))
    per_shopper = {m: Estimate.of(found[m].mean, math.sqrt(found[m].variance / n) if n else 0.0) for m in METRICS}
    share_with = {metric: _share(totals.get(f"{name}|{metric}|any", 0.0), n) for metric in ("clicks", "carts", "purchases")}
    requests = int(totals.get(f"{name}|requests", 0))
    return VariantFigures(
        name,
        n,
        per_shopper,
        share_with,
        _ctr(found["clicks"], found["lists"]),
        found,
        requests,
        _share(totals.get(f"{name}|errors", 0.0), requests),
        1000.0 * totals.get(f"{name}|seconds", 0.0) / requests if requests else 0.0,
        _share(totals.get(f"{name}|slow", 0.0), requests),
    )


def _share(count: float, n: int) -> Estimate:
    p = min(1.0, max(0.0, count / n)) if n else 0.0
    return Estimate.of(p, math.sqrt(p * (1 - p) / n) if n else 0.0)


def _ctr(clicks: Moments, lists: Moments) -> Estimate:
    """Σclicks / Σlists, with the delta method's variance for a ratio of per-shopper means."""
    n = lists.n
    if n < 2 or lists.total <= 0:
        return Estimate(0.0, 0.0, 0.0)
    x, y = lists.mean, clicks.mean
    ratio = y / x
    covariance = (clicks.with_lists - n * x * y) / (n - 1)
    variance = (clicks.variance - 2 * ratio * covariance + ratio**2 * lists.variance) / (n * x**2)
    return Estimate.of(ratio, math.sqrt(max(0.0, variance)))


def msprt_p_value(difference: float, variance: float, tau: float) -> float:
    """1/Λ of the normal-mixture SPRT for H0: no difference (at most 1).

    >>> msprt_p_value(0.0, 0.01, 0.1)
    1.0
    >>> msprt_p_value(0.5, 0.001, 0.1) < 1e-6
    True
    """
    if variance <= 0 or tau <= 0:
        return 1.0
    tau2 = tau * tau
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + difference**2 * tau2 / (2 * variance * (variance + tau2))
    return min(1.0, math.exp(-log_lambda)) if log_lambda < 700 else 0.0


def comparison_tau(control: VariantFigures, variant: VariantFigures, metric: str) -> float | None:
    """The mixture's spread for this comparison, once both sides have MIN_SHOPPERS (else None): 10 %
    of the control's mean at this reading. Per-shopper totals grow as shoppers come back, and so
    does any difference between variants: a spread fixed at the first reading was measured to cost
    much power (docs/experiments.md), so it follows the control's level, an approximation the A/A
    runs check."""
    a, b = control.moments[metric], variant.moments[metric]
    if min(a.n, b.n) < MIN_SHOPPERS:
        return None
    return TAU_SHARE * abs(a.mean) if a.mean else math.sqrt(_variance_of_difference(a, b)) or None


def _variance_of_difference(a: Moments, b: Moments) -> float:
    return (a.variance / a.n if a.n else 0.0) + (b.variance / b.n if b.n else 0.0)


def compare(control: VariantFigures, variant: VariantFigures, metric: str, tau: float | None = None) -> Comparison:
    """``tau``: the fixed spread (default: :func:`comparison_tau` now); no p-value below MIN_SHOPPERS."""
    a, b = control.moments[metric], variant.moments[metric]
    difference = b.mean - a.mean
    variance = _variance_of_difference(a, b)
    tau = tau if tau is not None else comparison_tau(control, variant, metric)
    relative = difference / a.mean if a.mean else None
    ready = min(a.n, b.n) >= MIN_SHOPPERS and tau is not None
    p_value = msprt_p_value(difference, variance, tau) if ready and tau is not None else 1.0
    return Comparison(variant.name, metric, Estimate.of(difference, math.sqrt(variance)), relative, p_value)


def sample_ratio_p(experiment: Experiment, figures: list[VariantFigures]) -> float:
    """The chi-square test's p-value of the shoppers per variant against the declared shares."""
    counts = [f.shoppers for f in figures]
    total = sum(counts)
    if total == 0:
        return 1.0
    expected = [v.share * total for v in experiment.variants]
    statistic = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True) if e > 0)
    return float(stats.chi2.sf(statistic, df=len(counts) - 1))


@dataclass(frozen=True)
class Drafted:
    """An interleaving experiment's figures: lists won by each team, and the per-shopper preference."""

    lists: int
    shoppers: int
    wins: dict[str, int]
    ties: int
    second_wins_share: Estimate
    preference: Estimate  # challenger's choices minus the control's, per shopper
    p_value: float


def drafted_tau(totals: dict[str, float], variant: str = "interleaved") -> float | None:
    """Interleaving's spread, once MIN_SHOPPERS took part (else None): 10 % of the choices (clicks,
    carts, purchases: each moves the preference) per shopper."""
    n = int(totals.get(f"{variant}|shoppers", 0))
    choices = sum(totals.get(f"{variant}|{m}", 0.0) for m in ("clicks", "carts", "purchases"))
    return TAU_SHARE * choices / n if n >= MIN_SHOPPERS and choices else None


def drafted(control: str, challenger: str, totals: dict[str, float], variant: str = "interleaved", tau: float | None = None) -> Drafted:
    """From the sums the interleaving writes keep (``interleave_win`` and the ``preference`` metric).

    >>> t = {"interleaved|shoppers": 400, "interleaved|lists": 1600, "interleaved|clicks": 800,
    ...      "interleaved|preference": 120, "interleaved|preference|sq": 900, "wins|a": 250, "wins|b": 370, "ties": 40}
    >>> d = drafted("a", "b", t)
    >>> d.wins, round(d.second_wins_share.mean, 3), round(d.preference.mean, 2), d.p_value < 0.01
    ({'a': 250, 'b': 370}, 0.597, 0.3, True)
    """
    found = moments(variant, "preference", totals)
    n = found.n
    se = math.sqrt(found.variance / n) if n else 0.0
    wins = {control: int(totals.get(f"wins|{control}", 0)), challenger: int(totals.get(f"wins|{challenger}", 0))}
    decided = wins[control] + wins[challenger]
    tau = tau if tau is not None else drafted_tau(totals, variant)
    return Drafted(
        lists=int(totals.get(f"{variant}|lists", 0)),
        shoppers=n,
        wins=wins,
        ties=int(totals.get("ties", 0)),
        second_wins_share=_share(wins[challenger], decided),
        preference=Estimate.of(found.mean, se),
        p_value=msprt_p_value(found.mean, se * se, tau) if n >= MIN_SHOPPERS and tau is not None else 1.0,
    )
