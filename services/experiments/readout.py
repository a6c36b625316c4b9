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

PER_SHOPPER = ("lists", "clicks", "carts", "purchases", "revenue")
ALPHA = 0.05  # the false-positive rate the decision allows, however often it is read
SRM_ALPHA = 0.001  # a sample-ratio mismatch this unlikely by chance means the assignment or the logging is broken
TAU_SHARE = 0.1  # the mixture's spread, as a share of the control's mean
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
    found = {metric: moments(name, metric, totals) for metric in PER_SHOPPER}
    n = int(totals.get(f"{name}|shoppers", 0))
    per_shopper = {m: Estimate.of(found[m].mean, math.sqrt(found[m].variance / n) if n else 0.0) for m in PER_SHOPPER}
    share_with = {}
    for metric in ("clicks", "carts", "purchases"):
        p = totals.get(f"{name}|{metric}|any", 0.0) / n if n else 0.0
        share_with[metric] = Estimate.of(p, math.sqrt(p * (1 - p) / n) if n else 0.0)
    return VariantFigures(name, n, per_shopper, share_with, _ctr(found["clicks"], found["lists"]), found)


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


def compare(control: VariantFigures, variant: VariantFigures, metric: str) -> Comparison:
    a, b = control.moments[metric], variant.moments[metric]
    difference = b.mean - a.mean
    variance = (a.variance / a.n if a.n else 0.0) + (b.variance / b.n if b.n else 0.0)
    se = math.sqrt(variance)
    tau = TAU_SHARE * abs(a.mean) if a.mean else se
    relative = difference / a.mean if a.mean else None
    return Comparison(variant.name, metric, Estimate.of(difference, se), relative, msprt_p_value(difference, variance, tau))


def sample_ratio_p(experiment: Experiment, figures: list[VariantFigures]) -> float:
    """The chi-square test's p-value of the shoppers per variant against the declared shares."""
    counts = [f.shoppers for f in figures]
    total = sum(counts)
    if total == 0:
        return 1.0
    expected = [v.share * total for v in experiment.variants]
    statistic = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True) if e > 0)
    return float(stats.chi2.sf(statistic, df=len(counts) - 1))
