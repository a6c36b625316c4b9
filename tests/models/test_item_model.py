"""The item-to-item model (EASE): counts learned online equal XᵀX, the fit equals per-item ridge
regression, and the bounds hold."""

import random

import numpy as np
import pytest

from models.ranking import CoOccurrence, ItemWeights, merge_counts


def _stream(seed: int, users: int = 30, items: int = 12, events: int = 400) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(f"u{rng.randrange(users)}", f"i{rng.randrange(items)}") for _ in range(events)]


def _binary(stream: list[tuple[str, str]], items: list[str]) -> np.ndarray:
    users = sorted({u for u, _ in stream})
    X = np.zeros((len(users), len(items)))
    for u, i in stream:
        X[users.index(u), items.index(i)] = 1.0
    return X


def test_counts_learned_one_event_at_a_time_equal_the_gram_matrix_of_the_histories():
    stream = _stream(1)  # repeats included: a shopper touching an item twice counts once
    co = CoOccurrence(max_items=100)
    for user, item in stream:
        co.learn_one(user, item)
    items, gram = co.counts()
    X = _binary(stream, items)
    np.testing.assert_array_equal(gram, X.T @ X)


def test_the_fit_is_a_ridge_regression_of_each_item_on_all_the_others():
    stream = _stream(2)
    co = CoOccurrence()
    for user, item in stream:
        co.learn_one(user, item)
    items, gram = co.counts()
    model = ItemWeights.fit(items, gram, l2=3.0)
    X = _binary(stream, items)
    for j in range(len(items)):
        others = [k for k in range(len(items)) if k != j]
        A = X[:, others]
        expected = np.linalg.solve(A.T @ A + 3.0 * np.eye(len(others)), A.T @ X[:, j])
        np.testing.assert_allclose(model.weights[others, j], expected, rtol=1e-4, atol=1e-5)
        assert model.weights[j, j] == 0.0


def test_workers_with_disjoint_shoppers_merge_to_the_counts_of_all():
    stream = _stream(3)
    whole, halves = CoOccurrence(), (CoOccurrence(), CoOccurrence())
    for user, item in stream:
        whole.learn_one(user, item)
        halves[int(user[1:]) % 2].learn_one(user, item)
    items, gram = merge_counts([h.counts() for h in halves])
    expected_items, expected = whole.counts()
    order = [items.index(i) for i in expected_items]
    np.testing.assert_array_equal(gram[np.ix_(order, order)], expected)


def test_scores_sum_the_history_and_unknown_or_own_items_are_left_out():
    co = CoOccurrence()
    for user, basket in {"a": "xy", "b": "xy", "c": "xyz", "d": "zw", "e": "zw"}.items():
        for item in basket:
            co.learn_one(user, item)
    model = ItemWeights.fit(*co.counts(), l2=0.5)
    everything, recent = model.scores(["x", "unknown"], ["y", "w", "nope"])
    assert everything[0] > 0 > everything[1] and everything[2] == 0.0
    np.testing.assert_allclose(recent, everything)  # one known item: decay changes nothing
    assert [i for i, _ in model.top(["x"], 2)] == ["y", "z"]  # x itself never comes back
    assert model.top([], 5) == [] and ItemWeights.empty().scores(["x"], ["y"])[0].tolist() == [0.0]


def test_bounds_keep_the_most_touched_items_and_a_shoppers_latest_history():
    co = CoOccurrence(max_items=3, history=2)
    for user in ("u1", "u2", "u3"):
        co.learn_one(user, "popular")
    co.learn_one("u1", "b")
    co.learn_one("u2", "c")
    co.learn_one("u4", "d")  # full: the least touched ("b" or "c", once each) makes room
    items, gram = co.counts()
    assert len(items) == 3 and "popular" in items and "d" in items
    assert gram[items.index("popular"), items.index("popular")] == 3
    co.resize(1)
    assert co.counts()[0] == ["popular"]
    with pytest.raises(ValueError):
        co.counts()[0].index("d")


def test_a_new_item_pairs_only_with_the_shoppers_latest_items_and_a_forgotten_shopper_starts_over():
    co = CoOccurrence(history=2)
    for item in "abcd":
        co.learn_one("u", item)
    items, gram = co.counts()
    at = {i: items.index(i) for i in items}
    assert gram[at["d"], at["c"]] == 1 and gram[at["d"], at["b"]] == 1 and gram[at["d"], at["a"]] == 0
    co.forget_user("u")
    co.learn_one("u", "a")  # counted again: the shopper is new to the model
    assert co.counts()[1][at["a"], at["a"]] == 2


def test_a_new_product_that_keeps_selling_gets_in_and_stays_when_the_model_is_full():
    co = CoOccurrence(max_items=3)
    for n in range(50):  # three products everyone touched, long ago
        for item in ("old-a", "old-b", "old-c"):
            co.learn_one(f"early-{n}", item)
    for n in range(40):  # then a new product keeps selling among a stream of one-offs
        co.learn_one(f"late-{n}", "hit")
        co.learn_one(f"late-{n}", f"one-off-{n}")
    items, gram = co.counts()
    assert "hit" in items, "a product that was touched least lately gave way to it"
    assert gram[items.index("hit"), items.index("hit")] >= 10, "and it stayed long enough to be counted"


def test_only_the_most_recently_active_shoppers_histories_are_remembered():
    co = CoOccurrence(shoppers=2)
    for user in ("u1", "u2", "u3"):
        co.learn_one(user, "a")
    assert co.shoppers == 2
    co.learn_one("u1", "b")  # u1 was the least recently active: forgotten, so b pairs with nothing
    items, gram = co.counts()
    assert gram[items.index("b"), items.index("a")] == 0 and gram[items.index("a"), items.index("a")] == 3


def test_off_when_no_items_may_be_modelled():
    co = CoOccurrence(max_items=0)
    co.learn_one("u", "i")
    assert co.counts()[0] == [] and ItemWeights.fit(*co.counts()).top(["i"], 3) == []
