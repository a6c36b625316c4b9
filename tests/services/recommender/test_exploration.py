"""Places for new products by Thompson sampling: those shoppers take to win more, those they skip fewer."""

import numpy as np

from services.recommender.engine import explore_by_sampling

# Candidates 0-7 are established (30 % click-through over 200 impressions each); 8 and 9 are new.
ORDER = list(range(8))


def _places(clicks: float, impressions: float, draws: int = 400) -> float:
    c = np.array([60.0] * 8 + [clicks, 0.0])
    n = np.array([200.0] * 8 + [impressions, 0.0])
    shown = 0
    for seed in range(draws):
        order = explore_by_sampling(ORDER, arms=[8], clicks=c, impressions=n, places=4, prior=10.0, rng=np.random.default_rng(seed))
        shown += 8 in order
    return shown / draws


def test_a_loved_new_product_wins_more_places_than_a_skipped_one_and_an_unseen_one_some():
    loved, unseen, skipped = _places(12.0, 20.0), _places(0.0, 0.0), _places(0.0, 60.0)
    assert loved > 0.9 and skipped < 0.05 and skipped < unseen < loved, (loved, unseen, skipped)


def test_new_products_take_only_the_last_places_and_at_most_that_many():
    c = np.array([60.0] * 8 + [20.0, 20.0, 20.0])
    n = np.array([200.0] * 8 + [25.0, 25.0, 25.0])
    order = explore_by_sampling(ORDER, arms=[8, 9, 10], clicks=c, impressions=n, places=2, prior=10.0, rng=np.random.default_rng(1))
    assert order[:6] == ORDER[:6] and len(order) == 8 and len(set(order) & {8, 9, 10}) == 2


def test_without_new_products_the_list_is_left_alone():
    c, n = np.full(8, 60.0), np.full(8, 200.0)
    assert explore_by_sampling(ORDER, arms=[], clicks=c, impressions=n, places=4, prior=10.0, rng=np.random.default_rng(0)) == ORDER
