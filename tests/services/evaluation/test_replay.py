"""The evaluation harness against real Redis and a real Qdrant Edge shard: does it count right?

These tests check the counting, not a quality threshold: quality is measured by
`shelfsight evaluate-recs` and recorded in docs/benchmarks.md.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest

from models.predictor import Predictor
from schemas import ClickEvent, ClickKind, ProductListed
from services.evaluation.logs import Dataset, Truth
from services.evaluation.replay import SHELFSIGHT, ColdStartTally, Replay, ReplayConfig, windows
from tests.services.evaluation.shops import synthetic_shop

pytestmark = pytest.mark.redis
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _product(pid: str, listed: datetime = T0) -> ProductListed:
    return ProductListed(product_id=pid, title=f"Film {pid}", price=10.0, currency="EUR", category_hint="Drama", listed_at=listed)


def _events(rows: list[tuple[str, str, str]]) -> list[ClickEvent]:
    return [
        ClickEvent(
            event_id=f"e{n}",
            user_id=u,
            product_id=p,
            kind=ClickKind(k),
            occurred_at=T0 + timedelta(hours=1, minutes=n),
            session_id=f"s-{u}",
        )
        for n, (u, p, k) in enumerate(rows)
    ]


def test_the_windows_count_choices_from_the_end():
    events = _events([("u", "p1", "view"), ("u", "p1", "click"), ("u", "p2", "click"), ("u", "p3", "view"), ("u", "p4", "purchase")])
    assert windows(events, ReplayConfig(window="test", eval_size=1, warmup_size=1)) == ({4}, {2, 4})
    assert windows(events, ReplayConfig(window="validation", eval_size=1, warmup_size=5)) == ({2}, {1, 2})


def test_a_tiny_log_whose_answers_are_known(settings, small_checkpoint):
    """Six films; three shoppers make p1 and p2 popular and co-visited. Then: u4 picks p1 (the most
    popular: every recommender has it), u4 picks p2 (co-visited with p1, next most popular: all have
    it), u5 picks p3 (nobody ever touched it: nobody can know). Every list is longer than the
    catalogue, so a hit is a question of candidates, and HR is exactly 2/3 for everyone."""
    rows = [
        ("u1", "p1", "click"),
        ("u2", "p1", "click"),
        ("u3", "p1", "view"),
        ("u1", "p2", "click"),
        ("u2", "p2", "view"),
        ("u4", "p1", "click"),
        ("u4", "p2", "click"),
        ("u5", "p3", "click"),
    ]
    dataset = Dataset("tiny", [_product(f"p{i}") for i in range(1, 7)], _events(rows))
    predictor = Predictor.load(small_checkpoint, device="cpu")
    config = ReplayConfig(eval_size=3, warmup_size=2, rate=0.001)  # a quiet shop: every event is checkpointed and reloaded
    result = Replay(settings.model_copy(update={"ranking_warmup_pairs": 1}), predictor, dataset, config).run(progress=False)

    assert (result.events, result.catalogue, result.served, result.dead_letters) == (8, 6, 5, 0)
    assert list(result.tallies) == [
        SHELFSIGHT,
        "most popular so far",
        "most popular, 7-day decay",
        "item co-visitation (each shopper's last 5 items)",
    ]
    for name, tally in result.tallies.items():
        s = tally.summary(catalogue=6)
        assert s["questions"] == 3, name
        assert s["hr"] == pytest.approx(2 / 3), name
        assert [hit for hit, _ in tally.trace] == [True, True, False], name
    popularity = result.tallies["most popular so far"].summary(catalogue=6)
    assert popularity["ndcg"] == pytest.approx(2 / 3) and popularity["mrr"] == pytest.approx(2 / 3)  # both at rank 1
    # u4's first pick was learned from the list served just before it: the ranking saw a choice.
    assert result.ranker["choices"] >= 1
    assert len(result.latency_ms) == 5 and result.scored_span[0] < result.scored_span[1]


def test_cold_start_counts_only_new_products_nobody_touched():
    tally = ColdStartTally()
    truth = Truth(tastes={"u": "Bag"}, categories={"a": "Bag", "b": "Bag", "c": "Coat"})
    tally.listed.update({"b": 0.0, "c": 3600.0})  # listed after the stream began
    tally.add(["a", "b", "c"], "Bag", truth, untouched_new={"b", "c"}, chosen="b", at=7200.0)
    tally.add(["a"], "Bag", truth, untouched_new=set(), chosen="c", at=9000.0)
    assert tally.summary() == {
        "new_per_list": 1.0,
        "new_matching_per_list": 0.5,
        "on_taste": 0.75,
        "new_hr": 0.5,
        "new_shown": 1.0,
        "hours_to_first_shown": 2.0,
    }


def test_movielens_is_converted_as_the_protocol_says(tmp_path):
    from services.evaluation.logs import read_dataset
    from services.evaluation.movielens import SHIFT, convert

    products, events = convert(tmp_path)
    assert (products, events) == (1682, 100_000)
    data = read_dataset(tmp_path)  # validates every line against the contracts, and the time order
    assert sum(e.kind.value == "click" for e in data.events) == 55_375  # ratings of 4 and 5 in ml-100k
    first = data.events[0]
    assert first.occurred_at - SHIFT == datetime(1997, 9, 20, 3, 5, 10, tzinfo=UTC)
    toy_story = next(p for p in data.products if p.product_id == "ml-1")
    assert toy_story.title == "Toy Story (1995)" and toy_story.category_hint == "Animation, Children's, Comedy"
    assert toy_story.listed_at - SHIFT == datetime(1995, 1, 1, tzinfo=UTC) and toy_story.image is None
    first_seen = {}
    for e in data.events:
        first_seen.setdefault(e.product_id, e.occurred_at)
    assert all(p.listed_at <= first_seen[p.product_id] for p in data.products)
    assert data.meta["eval_size"] == 10_000


def test_a_movielens_slice_through_the_command(tmp_path, monkeypatch, small_checkpoint, settings):
    from services.cli.main import main
    from services.evaluation.movielens import convert

    convert(tmp_path / "ml")
    # The products of the slice alone: indexing the whole catalogue would take half the test's time.
    clicks = (tmp_path / "ml" / "clicks.jsonl").read_text().splitlines()[:3000]
    wanted = {json.loads(line)["product_id"] for line in clicks}
    catalogue = tmp_path / "ml" / "catalogue.jsonl"
    catalogue.write_text("".join(f"{line}\n" for line in catalogue.read_text().splitlines() if json.loads(line)["product_id"] in wanted))
    monkeypatch.setenv("SHELFSIGHT_MODEL_DIR", str(small_checkpoint))
    monkeypatch.setenv("SHELFSIGHT_DEVICE", "cpu")
    monkeypatch.setenv("SHELFSIGHT_REDIS_URL", settings.redis_url)
    code = main(
        [
            "evaluate-recs",
            str(tmp_path / "ml"),
            "--limit-events",
            "3000",
            "--eval-size",
            "100",
            "--warmup-size",
            "100",
            "--out",
            str(tmp_path / "report"),
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["window"] == "test" and metrics["events"] == 3000 and metrics["served_lists"] == 200
    for name, m in metrics["recommenders"].items():
        assert m["questions"] == 100, name
        assert 0.0 <= m["hr"] <= m["recall"] <= 1.0 and m["ndcg"] <= m["hr"], name
    assert (tmp_path / "report" / "hr_over_stream.png").stat().st_size > 1000
    assert "| **Shelfsight** |" in (tmp_path / "report" / "report.md").read_text()


def test_a_small_synthetic_shop_reports_cold_start(tmp_path, monkeypatch, small_checkpoint, settings):
    from services.cli.main import main

    synthetic_shop(tmp_path / "shop", 60, 20, 15, 3, 2)
    truth = json.loads((tmp_path / "shop" / "truth.json").read_text())
    assert len(truth["tastes"]) == 15 and len(truth["categories"]) == 80
    catalogue = [json.loads(line) for line in (tmp_path / "shop" / "catalogue.jsonl").read_text().splitlines()]
    assert sum("category_hint" not in p for p in catalogue) == 10  # half the new products carry no title or category
    clicks = [json.loads(line) for line in (tmp_path / "shop" / "clicks.jsonl").read_text().splitlines()]
    assert all(truth["categories"][c["product_id"]] == truth["tastes"][c["user_id"]] for c in clicks if c["kind"] == "click")

    monkeypatch.setenv("SHELFSIGHT_MODEL_DIR", str(small_checkpoint))
    monkeypatch.setenv("SHELFSIGHT_DEVICE", "cpu")
    monkeypatch.setenv("SHELFSIGHT_REDIS_URL", settings.redis_url)
    assert main(["evaluate-recs", str(tmp_path / "shop"), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["recommenders"][SHELFSIGHT]["questions"] == 30  # 15 shoppers × 2 clicks after the new listings
    assert metrics["served_lists"] == 75
    for name, cold in metrics["cold_start"].items():
        assert 0.0 <= cold["on_taste"] <= 1.0
        if name != SHELFSIGHT:
            assert cold["new_per_list"] == 0.0, name  # click-based baselines cannot know an untouched product


def test_simulated_shoppers_compare_exploration_policies(tmp_path, monkeypatch, small_checkpoint, settings):
    """`evaluate-exploration`: the same simulated shoppers meet each policy; every figure is a sane
    probability, and regret is never negative (nothing beats the best list)."""
    from services.cli.main import main

    synthetic_shop(tmp_path / "shop", 30, 10, 6, 3, 1, "--new-listings", "neutral")
    monkeypatch.setenv("SHELFSIGHT_MODEL_DIR", str(small_checkpoint))
    monkeypatch.setenv("SHELFSIGHT_DEVICE", "cpu")
    monkeypatch.setenv("SHELFSIGHT_REDIS_URL", settings.redis_url)
    out = tmp_path / "exploration.md"
    assert main(["evaluate-exploration", str(tmp_path / "shop"), "--steps", "12", "--out", str(out)]) == 0
    figures = json.loads(out.read_text().split("\n\n", 1)[1])
    assert set(figures) == {"fixed", "bandit"}
    for m in figures.values():
        assert 0.0 <= m["new_clicks"] <= m["clicks"] <= 1.0 and m["regret"] >= -1e-9 and m["new_per_list"] >= 0.0
