"""The readout's statistics on simulated shoppers (no services): an A/A test rarely declares a
winner however often it is read, and a worse variant is found. The same sums the Lua keeps."""

import numpy as np
import pytest

from schemas.experiments import ExperimentSpec, VariantSpec
from services.experiments.readout import ALPHA, compare, sample_ratio_p, variant_figures

SPEC = ExperimentSpec(
    experiment_id="sim",
    variants=[VariantSpec(name="a", share=0.5, ranking="learned"), VariantSpec(name="b", share=0.5, ranking="prior")],
)


def _totals(lists: np.ndarray, clicks: np.ndarray, arm: np.ndarray) -> dict[str, float]:
    """The variants' sums as experiment_add leaves them, for shoppers so far."""
    out: dict[str, float] = {}
    for name, mask in (("a", arm == 0), ("b", arm == 1)):
        n_lists, n_clicks = lists[mask], clicks[mask]
        out |= {
            f"{name}|shoppers": float(mask.sum()),
            f"{name}|lists": float(n_lists.sum()),
            f"{name}|lists|sq": float((n_lists**2).sum()),
            f"{name}|clicks": float(n_clicks.sum()),
            f"{name}|clicks|sq": float((n_clicks**2).sum()),
            f"{name}|clicks|x": float((n_clicks * n_lists).sum()),
            f"{name}|clicks|any": float((n_clicks > 0).sum()),
        }
    return out


def _decides(seed: int, effect: float, shoppers: int = 4000, every: int = 200) -> bool:
    """Shoppers of varied taste for clicking arrive one by one; the test is read every ``every``."""
    rng = np.random.default_rng(seed)
    arm = rng.integers(0, 2, shoppers)
    lists = rng.poisson(3.0, shoppers) + 1
    rate = rng.beta(2.0, 18.0, shoppers) * np.where(arm == 1, effect, 1.0)
    clicks = rng.binomial(lists, rate)
    running = 1.0
    for n in range(every, shoppers + 1, every):
        totals = _totals(lists[:n], clicks[:n], arm[:n])
        running = min(running, compare(variant_figures("a", totals), variant_figures("b", totals), "clicks").p_value)
        if running < ALPHA:
            return True
    return False


def test_an_a_a_test_declares_no_winner_in_95_of_100_runs_read_twenty_times_each():
    declared = sum(_decides(seed, effect=1.0) for seed in range(100))
    assert declared <= 5, f"{declared} of 100 A/A runs declared a winner"


def test_a_variant_with_a_quarter_fewer_clicks_is_found_in_90_of_100_runs():
    found = sum(_decides(seed, effect=0.75) for seed in range(100))
    assert found >= 90, f"found in {found} of 100 runs"


def test_the_click_through_interval_covers_the_truth_about_95_percent_of_the_time():
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        lists = rng.poisson(3.0, 2000) + 1
        clicks = rng.binomial(lists, rng.beta(2.0, 18.0, 2000))
        ctr = variant_figures("a", _totals(lists, clicks, np.zeros(2000, dtype=int))).ctr
        covered += ctr.low <= 0.1 <= ctr.high  # the beta's mean: the click-through of the population
    assert 180 <= covered <= 199, covered


@pytest.mark.parametrize(("counts", "mismatch"), [((5000, 5000), False), ((5000, 4900), False), ((5000, 4500), True)])
def test_a_sample_ratio_far_from_the_shares_is_flagged(counts, mismatch):
    totals = {"a|shoppers": counts[0], "b|shoppers": counts[1]}
    p = sample_ratio_p(SPEC, [variant_figures("a", totals), variant_figures("b", totals)])
    assert (p < 0.001) is mismatch, p
