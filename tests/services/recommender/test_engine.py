"""The recommender against real Qdrant Edge and Redis, with profiles written by the real click handler."""

from contextlib import nullcontext

import numpy as np
import pytest

from schemas.experiments import ExperimentTag, VariantSpec
from services.experiments.assignment import Assignment
from services.recommender.engine import Query, Recommender, Tuning, UnknownProduct
from services.recommender.learned import Learned
from services.recommender.shopper import ShopperReader
from services.vectors.edge import EdgeProductStore
from services.vectors.store import SearchFilters, StoredProduct
from tests.services.recommender.conftest import DIMS

pytestmark = pytest.mark.redis


def _crowd(shop, product="coat-5", users=6):
    for n in range(users):
        shop.click(f"crowd-{n}", product, "purchase")
        shop.click(f"crowd-{n}", "dress-2", "view")


def test_cold_shopper_gets_trending_items_with_reasons(shop):
    _crowd(shop)
    result = shop.engine().recommend(Query("newcomer", k=5))
    ids = [p.product_id for p in result.items]
    assert ids[0] == "coat-5" and "dress-2" in ids
    assert all(p.reason for p in result.items)
    assert result.items[0].reason in {"Popular right now", "Popular in Coat"}


def test_cold_shop_still_answers_from_the_catalogue(shop):
    result = shop.engine().recommend(Query("first-shopper-ever", k=4))
    assert len(result.items) == 4
    assert all(p.reason.startswith("From our ") for p in result.items)


def test_visual_taste_drives_recommendations_and_reasons_name_the_viewed_item(shop):
    for n in (0, 1, 2):
        shop.click("ann", f"bag-{n}", "click")
    result = shop.engine().recommend(Query("ann", k=6))
    categories = [p.payload["category"] for p in result.items]
    assert categories.count("Bag") >= 4, categories
    bag_reasons = [p.reason for p in result.items if p.payload["category"] == "Bag"]
    # This shop's products have no pictures: likeness in the fused space is "similar", never "looks like".
    assert any(r.startswith("Similar to Bag bag-") and r.endswith("you viewed") for r in bag_reasons), bag_reasons
    assert all(p.reason for p in result.items)


def test_purchased_and_recently_seen_items_are_excluded(shop):
    shop.click("ben", "sneaker-1", "purchase")
    shop.click("ben", "sneaker-2", "view")
    shop.click("ben", "sneaker-4", "dismiss")
    ids = {p.product_id for p in shop.engine().recommend(Query("ben", k=20)).items}
    assert ids and not ids & {"sneaker-1", "sneaker-2", "sneaker-4"}


def test_filters_are_honoured(shop):
    _crowd(shop)
    shop.click("cat", "dress-0", "click")
    filters = SearchFilters(category="Dress", min_price=40.0, max_price=90.0, in_stock=True)
    items = shop.engine().recommend(Query("cat", k=10, filters=filters)).items
    assert items
    for p in items:
        assert p.payload["category"] == "Dress" and 40.0 <= p.payload["price"] <= 90.0 and p.payload["in_stock"]
    out_of_stock = shop.engine().recommend(Query("cat", k=30, filters=SearchFilters(in_stock=None))).items
    assert any(not p.payload["in_stock"] for p in out_of_stock)  # n == 3 of each category is sold out
    assert all(p.payload["in_stock"] for p in shop.engine().recommend(Query("cat", k=30)).items)


def test_a_brand_new_product_reaches_the_shopper_whose_taste_it_matches(shop):
    for n in range(4):
        shop.click("dee", f"sneaker-{n}", "add_to_cart")
    for n in range(6):  # popular, but not dee's taste
        shop.click(f"crowd-{n}", "coat-1", "purchase")
    taste = sum(shop.vectors[f"sneaker-{n}"] for n in range(4))  # looks like what dee put in the cart
    shop.add("sneaker-new", "Sneaker", taste, listed_ts=shop.clock - 60)
    items = shop.engine().recommend(Query("dee", k=5)).items
    new = [p for p in items if p.product_id == "sneaker-new"]
    assert new, [p.product_id for p in items]
    assert new[0].reason.startswith("New in Sneaker")


def test_covisitation_finds_what_others_viewed_alongside(shop):
    for n in range(5):  # other shoppers pair a dress with one particular coat in their sessions
        shop.click(f"pair-{n}", "dress-7", "view")
        shop.click(f"pair-{n}", "coat-9", "click")
    shop.click("eve", "dress-7", "view")
    items = shop.engine().recommend(Query("eve", k=10)).items
    coat = [p for p in items if p.product_id == "coat-9"]
    assert coat and coat[0].reason == "Often viewed with Dress dress-7"


def test_the_item_model_finds_what_whole_histories_hold_together(shop):
    """Other shoppers who once looked at a dress ended up buying one particular coat, long after and in
    other sessions: too far apart for co-visitation or history pairs, not too far for the item model."""
    fillers = [f"{c}-{n}" for c in ("bag", "sneaker") for n in range(12)]
    for n in range(6):
        user = f"long-{n}"
        shop.click(user, "dress-4", "view", session=f"{user}-a")
        for filler in fillers:
            shop.click(user, filler, "view", session=f"{user}-b")
        shop.click(user, "coat-7", "purchase", session=f"{user}-c")
    shop.click("hal", "dress-4", "view")
    engine = shop.engine()
    answer = engine.recommend(Query("hal", k=10))
    assert "coat-7" in answer.ranked[:10] and "coat-7" in [p.product_id for p in answer.items]
    reason = next(p.reason for p in answer.items if p.product_id == "coat-7")
    assert reason == "Goes with what you have viewed"
    shop.learners.co_occurrence.resize(0)  # the model off: coat-7 is one of many things the crowd bought
    assert "coat-7" not in engine.recommend(Query("hal", k=10)).ranked[:3]


def test_diversity_spreads_a_list_over_the_catalogue(shop):
    for n in range(3):
        shop.click("fay", f"bag-{n}", "click")
    shop.click("fay", "coat-0", "view")
    focused = shop.engine(mmr_lambda=1.0).recommend(Query("fay", k=8)).items
    diverse = shop.engine(mmr_lambda=0.2).recommend(Query("fay", k=8)).items
    spread = lambda items: len({p.payload["category"] for p in items})  # noqa: E731
    assert spread(diverse) > spread(focused)


def test_similar_products_and_unknown_ones(shop):
    items = shop.engine().similar("bag-0", k=5).items
    assert len(items) == 5 and all(p.payload["category"] == "Bag" and p.product_id != "bag-0" for p in items)
    assert items[0].reason == "Similar to Bag bag-0"
    with pytest.raises(UnknownProduct):
        shop.engine().similar("no-such-product")


def test_the_ranking_learns_from_served_lists_and_the_choices_that_follow(shop):
    """Shoppers who look at a bag keep choosing what the crowd buys (coats) over bags that look alike:
    the learned ranking, trained through the real handler on the served log, follows them; the prior does not."""
    popular = [f"coat-{n}" for n in range(1, 6)]
    for n, product in enumerate(popular):
        for buyer in range(2 + 2 * n):
            shop.click(f"crowd-{buyer}", product, "purchase")
    engine = shop.engine(log_served=True, per_source=48)
    for n in range(40):
        user = f"learner-{n}"
        shop.click(user, f"bag-{n % 12}", "view")
        answer = engine.recommend(Query(user, k=6, request_id=f"req-{n}"))
        assert n >= 5 or answer.ranker == "prior"  # 100 pairs of warm-up: about ten choices
        chosen = max((p for p in answer.ranked if p in popular), key=popular.index)  # the most bought one on offer
        shop.click(user, chosen, "click", request_id=f"req-{n}")
    learned = engine._learned()
    assert learned.ranker is not None and learned.ranker.learned and learned.choices == 40
    assert learned.affinity.knows("learner-1")

    def coats(ranking: str) -> int:
        items = shop.engine(ranking=ranking, per_source=48).recommend(Query("newcomer", k=6)).items
        return sum(p.product_id in popular for p in items)

    shop.click("newcomer", "bag-5", "view")
    assert coats("learned") > coats("prior")
    assert shop.engine(per_source=48).recommend(Query("newcomer", k=6)).ranker == "learned"


def test_every_served_list_is_logged_with_its_features(shop):
    logged = []
    engine = shop.engine()
    engine._on_served = logged.append
    shop.click("gil", "coat-2", "click")
    answer = engine.recommend(Query("gil", k=4, request_id="req-gil"))
    (served,) = logged
    assert served.request_id == "req-gil" and served.user_id == "gil" and served.shown == 4
    assert served.products[:4] == [p.product_id for p in answer.items]
    rows = np.frombuffer(served.features, dtype="<f4").reshape(len(served.products), len(served.feature_names))
    position = served.feature_names.index("position")
    assert rows[0, position] == 1.0 and rows[1, position] < 1.0 and not rows[4:, position].any()
    assert set(served.products) <= set(answer.ranked) and len(served.products) > 4


def test_the_ranker_trains_on_exactly_the_rows_it_was_served(shop):
    """One feature function: the profiles worker never computes features, it learns from the rows
    the recommender served (recommendations.served), so training and serving see the same vectors."""
    served_lists = []

    def log(served):  # as the profiles worker's `served` agent keeps them, and kept here to compare
        served_lists.append(served)
        shop.remember_served(served)

    engine = shop.engine()
    engine._on_served = log
    shop.click("ida", "coat-1", "view")
    answer = engine.recommend(Query("ida", k=4, request_id="req-ida"))
    (served,) = served_lists
    rows = np.frombuffer(served.features, dtype="<f4").reshape(len(served.products), len(served.feature_names))
    learned_from = []
    learn = shop.learners.learn_choice
    shop.learners.learn_choice = lambda names, chosen, skipped: (
        learned_from.append((names, chosen, skipped)),
        learn(names, chosen, skipped),
    )
    pick = answer.items[2].product_id
    shop.click("ida", pick, "click", request_id="req-ida")
    ((names, chosen, skipped),) = learned_from
    assert tuple(names) == tuple(served.feature_names) and len(names) > 10

    def row(n: int) -> dict[str, float]:
        return {name: float(v) for name, v in zip(served.feature_names, rows[n], strict=True)}

    assert chosen == row(served.products.index(pick))
    others = [row(n) for n, product in enumerate(served.products) if product != pick]
    assert skipped and all(s in others for s in skipped)


def test_the_vector_cache_changes_no_answer_and_a_re_embedded_product_moves_at_once(shop):
    """serve reads through the vector cache: every list must be the one the store alone gives,
    and a product its embedder writes again is ranked by its new vector on the next request."""
    from services.vectors.cache import VectorCache

    cache = VectorCache(shop.store)
    plain, cached = shop.engine(), shop.engine(store=cache)
    shoppers = {"ann": ["bag-0", "bag-1"], "bob": ["dress-2", "coat-1", "dress-5"], "cat": ["sandal-4"]}
    for user, items in shoppers.items():
        for item in items:
            shop.click(user, item)
    for _ in range(2):  # cold, then warm
        for user in [*shoppers, "newcomer"]:
            want, got = plain.recommend(Query(user, k=8)), cached.recommend(Query(user, k=8))
            assert [(p.product_id, p.score, p.reason) for p in got.items] == [(p.product_id, p.score, p.reason) for p in want.items]
            assert got.ranked == want.ranked
    assert cache.hits > cache.misses > 0

    # bag-7 is embedded again, now a twin of the dress bob viewed: written through the cache, as serve's embedder writes.
    (bag7,) = shop.store.get(["bag-7"])
    assert cached.recommend(Query("bob", k=8)).ranked.index("bag-7") > 20
    cache.upsert([StoredProduct("bag-7", {"fused": shop.vectors["dress-2"].tolist()}, bag7.payload)])
    want, got = plain.recommend(Query("bob", k=8)), cached.recommend(Query("bob", k=8))
    assert got.ranked.index("bag-7") < 10, "ranked by its new vector"
    assert got.ranked == want.ranked and [p.score for p in got.items] == [p.score for p in want.items]


def test_time_is_the_shops_clock_so_old_events_still_teach_the_ranking(shop):
    """A store that loads last year's events (or a worker that lags) must not have its served lists
    stamped with the wall clock: a choice is joined with the list served before it by event time,
    so lists from "the future" would never teach the ranking, and popularity would decay to nothing."""
    served: list = []
    year = 365 * 86400.0
    shop.clock -= year  # the events happen a year before the wall clock
    engine = Recommender(
        shop.store,
        ShopperReader(shop.sync, shop.keys),
        lambda: Learned.from_learners(shop.learners),
        DIMS,
        Tuning(),
        clock=lambda: shop.clock + year,
        on_served=lambda s: (served.append(s), shop.remember_served(s)),
        pictures=False,
    )
    for product in ("bag-1", "bag-2", "bag-4"):
        shop.click("ivy", product, "click")
    answer = engine.recommend(Query("ivy", k=4))
    (logged,) = served
    assert abs(logged.served_at.timestamp() - shop.clock) < 600, "stamped by the events' clock, not the wall's"
    chosen = next(p.product_id for p in answer.items)
    before = shop.learners.ranker.choices if shop.learners.ranker else 0
    shop.click("ivy", chosen, "click")
    assert shop.learners.ranker is not None and shop.learners.ranker.choices == before + 1, "the choice joined its list"
    _, signals = ShopperReader(shop.sync, shop.keys).read("ivy", shop.clock + year)
    assert signals.trending and signals.trending[0][1] > 0.5, "popularity as of the shop's clock, not decayed by a year"


def test_a_new_product_known_only_by_its_picture_reaches_the_shoppers_it_looks_right_for(picture_shop):
    """A new listing whose title says nothing ("Item 40213") sits far from every taste in the fused
    space; its picture is all that says it is a bag. The picture source finds it, the exploration
    budget shows it to a shopper of bags, and its reason is true of the pictures."""
    shop = picture_shop
    neutral = np.zeros(DIMS)
    neutral[3] = 1.0  # where neutral titles pull: away from every category's cluster
    bag_picture = np.array(shop.store.get(["bag-5"], with_vectors=("image",))[0].vectors["image"])
    shop.add("item-40213", "Uncategorised", neutral, listed_ts=shop.clock - 3600, picture=bag_picture + 0.05, title="Item 40213")
    for n in (0, 1, 2):
        shop.click("ada", f"bag-{n}", "click")
    items = shop.engine().recommend(Query("ada", k=8)).items
    found = [p for p in items if p.product_id == "item-40213"]
    assert found, [p.product_id for p in items]
    assert found[0].reason.startswith("New in the shop, looks like Bag bag-") or found[0].reason.startswith(
        "New in Uncategorised, looks like Bag bag-"
    ), found[0].reason
    without = shop.engine(looks_items=0).recommend(Query("ada", k=8)).items
    assert "item-40213" not in {p.product_id for p in without}, "without its picture, nothing would show it"


def test_a_taste_and_item_vectors_of_another_model_version_are_set_aside(shop):
    """After `shelfsight reembed` switched the live model, vectors written in the old one's space
    are not compared with the new one's: the reader leaves them out until they are rewritten."""
    for product in ("bag-1", "bag-2"):
        shop.click("ivy", product, "click")
    shop.sync.hset(shop.keys.user("ivy"), "mv", "m-1")
    shop.sync.hset(shop.keys.item("bag-1"), "mv", "m-1")
    shop.sync.hset(shop.keys.item("bag-2"), "mv", "m-2")
    old, new = (ShopperReader(shop.sync, shop.keys, model_version=lambda v=v: v) for v in ("m-1", "m-2"))
    (shopper, signals), (moved, moved_signals) = old.read("ivy", shop.clock), new.read("ivy", shop.clock)
    assert shopper.vector is not None and set(signals.vectors) == {"bag-1"}
    assert moved.vector is None and set(moved_signals.vectors) == {"bag-2"}
    assert moved.recent == shopper.recent, "what is not a vector stays"
    # written before versions were recorded: of the version the alias says (the one live before the first switch)
    shop.sync.hdel(shop.keys.user("ivy"), "mv")
    for unversioned, usable in (("m-1", False), ("m-2", True)):
        reader = ShopperReader(shop.sync, shop.keys, model_version=lambda: "m-2", unversioned=lambda u=unversioned: u)
        assert (reader.read("ivy", shop.clock)[0].vector is not None) is usable, unversioned


def test_a_variant_on_a_staged_model_version_makes_its_lists_from_that_version(shop, tmp_path):
    """An experiment's variant named with ``model=``: its shoppers' lists come from that version's
    collection, their taste worked out there from what they viewed (the profiles worker keeps only
    the live version's); the list and the served log name the version. Not open: the shopper gets
    the live list, credited to no variant, and the variant's error rate counts it."""
    staged = EdgeProductStore(tmp_path / "staged")
    staged.ensure_collection({"fused": DIMS})
    # The staged model sees dress-5 as the very picture of bags 0 to 2; everything else as the live one does.
    fields = ("title", "category", "price", "currency", "in_stock", "delisted", "listed_ts")
    like_the_bags = sum(shop.vectors[f"bag-{n}"] for n in (0, 1, 2))
    staged.upsert(
        [
            StoredProduct(
                p.product_id, {"fused": (like_the_bags if p.product_id == "dress-5" else shop.vectors[p.product_id]).tolist()}, p.payload
            )
            for p in shop.store.get(list(shop.vectors), fields=fields)
        ]
    )
    for n in (0, 1, 2):
        shop.click("vic", f"bag-{n}", "click")
    arm = VariantSpec(name="new-model", share=0.5, ranking="prior", model="m-staged")
    tag = ExperimentTag(experiment_id="models-1", variant="new-model")
    served, guarded = [], []
    opened: dict[str, Recommender] = {}
    live = shop.engine(
        assign=lambda _user: Assignment(tag, arm),
        guard=lambda _user, _tag, _seconds, ok: guarded.append(ok),
        versions=lambda name: nullcontext(opened.get(name)),
        model_version="test-model",
    )
    live._on_served = served.append
    before = live.recommend(Query("vic", k=6))
    assert before.experiment is None and before.model_version == "test-model" and guarded == [False], "not open: the live list, unassigned"
    assert served[-1].experiment is None
    opened["m-staged"] = live.serving_from(staged, DIMS, "m-staged", ShopperReader(shop.sync, shop.keys, model_version=lambda: "m-staged"))
    result = live.recommend(Query("vic", k=6))
    assert result.experiment == tag and result.model_version == "m-staged" and guarded == [False, True]
    assert served[-1].model_version == "m-staged" and served[-1].experiment == tag
    # Its taste and recent products were looked up in the staged space: there dress-5 is their nearest.
    assert {"taste", "recent"} <= result.sources.get("dress-5", frozenset()), result.sources.get("dress-5")

    def taste_of_dress_5(logged) -> float:
        rows = np.frombuffer(logged.features, dtype="<f4").reshape(len(logged.products), len(logged.feature_names))
        return float(rows[logged.products.index("dress-5"), logged.feature_names.index("taste")])

    assert taste_of_dress_5(served[-1]) > 0.99 and taste_of_dress_5(served[0]) < 0.5
    staged.close()
