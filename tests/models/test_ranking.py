"""Ranking metrics, baselines and the pairwise ranker: answers worked out by hand."""

import math

import numpy as np
import pytest

from models.ranking import CoVisitation, DecayedPopularity, LinearScorer, PairwiseRanker, Popularity, RankingTally
from models.ranking.metrics import intra_list_diversity


def test_the_tally_counts_hits_ranks_recall_coverage_and_diversity():
    tally = RankingTally(k=3, recall_at=5)
    assert tally.add(["a", "b", "c", "d"], "a") == 0
    assert tally.add(["b", "c", "a", "d", "e"], "e") is None  # beyond the top 3, inside the top 5
    assert tally.add(["c", "d", "b"], "d", vectors=np.eye(3)) == 1
    s = tally.summary(catalogue=10)
    assert s["questions"] == 3
    assert s["hr"] == pytest.approx(2 / 3)
    assert s["ndcg"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert s["mrr"] == pytest.approx((1 + 1 / 2) / 3)
    assert s["recall"] == pytest.approx(1.0)
    assert s["coverage"] == pytest.approx(4 / 10)  # a, b, c, d were shown in a top 3
    assert s["diversity"] == pytest.approx(1.0)  # orthogonal vectors
    assert tally.rolling(2) == [(2, 0.5, 0.5), (3, 1.0, 1 / math.log2(3))]


def test_diversity_is_zero_for_identical_items():
    assert intra_list_diversity(np.array([[0.6, 0.8], [0.6, 0.8]])) == pytest.approx(0.0)


def test_popularity_ranks_by_count_and_skips_what_is_excluded():
    pop = Popularity()
    for item in "abbccc":
        pop.learn_one("u", item, at=0.0)
    assert pop.rank("x", k=5, exclude=set(), now=0.0) == ["c", "b", "a"]
    assert pop.rank("x", k=5, exclude={"c"}, now=0.0) == ["b", "a"]


def test_decayed_popularity_prefers_what_is_popular_lately():
    pop = DecayedPopularity(half_life_s=100.0)
    for _ in range(3):
        pop.learn_one("u", "old", at=0.0)
    pop.learn_one("u", "new", at=1000.0)  # one event ten half-lives later outweighs three early ones
    assert pop.rank("x", k=2, exclude=set(), now=1000.0) == ["new", "old"]


def test_covisitation_follows_the_shoppers_latest_items():
    covis = CoVisitation(window=2)
    for user, item in [("a", "p1"), ("a", "p2"), ("b", "p1"), ("b", "p2"), ("c", "p3"), ("c", "p4"), ("c", "p4")]:
        covis.learn_one(user, item, at=0.0)
    covis.learn_one("d", "p1", at=0.0)
    assert covis.rank("d", k=1, exclude={"p1"}, now=0.0) == ["p2"]
    assert covis.rank("e", k=2, exclude=set(), now=0.0) == ["p1", "p2"]  # no history: popularity (p1: 3, p2 and p4: 2, p2 first seen)


def test_the_pairwise_ranker_learns_which_feature_shoppers_follow():
    rng = np.random.default_rng(0)
    ranker = PairwiseRanker(("signal", "noise"), warmup=100)
    for _ in range(300):
        rows = [{"signal": float(s), "noise": float(n)} for s, n in rng.normal(size=(5, 2))]
        best = max(rows, key=lambda r: r["signal"])
        ranker.learn_one(best, [r for r in rows if r is not best])
    scorer = ranker.scorer()
    assert scorer.learned and ranker.pairs == 1200 and ranker.choices == 300
    assert scorer.weights[0] > 5 * abs(scorer.weights[1])
    row = np.array([0.3, -1.2])
    assert scorer.score(row[None])[0] == pytest.approx(ranker.predict_one({"signal": 0.3, "noise": -1.2}))
    assert sum(scorer.contributions(row).values()) == pytest.approx(float(scorer.score(row[None])[0]))


def test_a_ranker_that_has_not_learned_enough_says_so():
    ranker = PairwiseRanker(("a",), warmup=10)
    ranker.learn_one({"a": 1.0}, [{"a": 0.0}])
    assert not ranker.scorer().learned
    assert LinearScorer.fixed(("a", "b"), {"b": 2.0}).score(np.array([[5.0, 1.0]]))[0] == 2.0
