"""An A/B test through the HTTP API, real Redis behind it: shoppers are assigned by the
experiment in Redis, answers and served lists name the variant, choices on those lists are
credited by the profiles worker's handler, and the report reads it all back."""

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from schemas.experiments import ExperimentSpec, VariantSpec
from services.experiments.assignment import variant_of
from services.experiments.report import read_report
from services.experiments.running import RunningExperiments
from services.recommender.service import guardrails
from state import experiments as stored
from tests.services.recommender.conftest import SECRET_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
STORE = {"X-API-Key": SECRET_KEY}  # the store's back end, acting for its shoppers

SPEC = ExperimentSpec(
    experiment_id="ab-1",
    variants=[VariantSpec(name="control", share=0.5, ranking="popularity"), VariantSpec(name="prior", share=0.5, ranking="prior")],
)


def _app(api_settings, shop, redis_client, now: list[float]):
    from services.bus.config import producer_config
    from services.bus.producer import Producer
    from services.recommender.http.app import ApiParts, build_api
    from services.recommender.http.live import LiveUpdates
    from services.recommender.metrics import RecommenderMetrics

    running = RunningExperiments(redis_client, shop.keys, poll_s=1.0, clock=lambda: now[0])
    live = LiveUpdates(aioredis.Redis.from_url(api_settings.redis_url), shop.keys.updates_channel)
    parts = ApiParts(
        api_settings,
        shop.engine(log_served=True, assign=running.assign, guard=guardrails(redis_client, shop.keys)),
        shop.store,
        Producer(producer_config(api_settings)),
        live,
        RecommenderMetrics(),
        experiment_report=lambda experiment_id, metric: read_report(redis_client, shop.keys, experiment_id, metric),
        experiments=lambda: stored.load_all(redis_client, shop.keys),
    )
    return build_api(parts)


@pytest.fixture
def experiment_api(api_settings, shop, redis_client):
    now = [datetime.now(UTC).timestamp()]
    with TestClient(_app(api_settings, shop, redis_client, now)) as client:
        yield client, now


def test_shoppers_keep_their_variant_and_their_choices_count_for_it(experiment_api, shop, redis_client):
    client, now = experiment_api
    shoppers = [f"shopper-{n}" for n in range(24)]
    for n, shopper in enumerate(shoppers):
        shop.click(shopper, f"{['Bag', 'Coat', 'Dress'][n % 3].lower()}-{n % 5}")
    assert client.get("/v1/users/shopper-0/recommendations", headers=STORE).json()["experiment"] is None, "no experiment yet"
    stored.create(redis_client, shop.keys, SPEC, datetime.fromtimestamp(now[0], UTC) - timedelta(seconds=1))
    now[0] += 1.5  # past the poll: every process reads the new experiment within SHELFSIGHT_EXPERIMENTS_POLL_S

    anonymous = client.get("/v1/users/shopper-1/recommendations").json()
    assert anonymous["experiment"] is None, "without tokens, a caller who only names a shopper is kept out of experiments"
    answers = {}
    for shopper in shoppers:
        first = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 4}, headers=STORE).json()
        again = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 4}, headers=STORE).json()
        assert first["experiment"] == again["experiment"] == {"experiment_id": "ab-1", "variant": variant_of(SPEC, shopper).name}
        answers[shopper] = first
        served = json.loads(redis_client.lindex(shop.keys.served(shopper), 0))
        assert served["experiment"] == first["experiment"], "the served list names the variant too"
        assert served["ranker"] == {"control": "popularity", "prior": "prior"}[first["experiment"]["variant"]], "ranked as its variant says"
    clicked = {}
    for shopper, answer in list(answers.items())[::2]:  # every other shopper clicks the first product shown
        shop.click(shopper, answer["items"][0]["product_id"], request_id=answer["request_id"])
        clicked[shopper] = variant_of(SPEC, shopper).name

    assert client.get("/v1/experiments/ab-1").status_code == 403, "sales figures need a secret key"
    report = client.get("/v1/experiments/ab-1", headers={"X-API-Key": SECRET_KEY}).json()
    by_name = {v["name"]: v for v in report["variants"]}
    for name in ("control", "prior"):
        members = [s for s in shoppers if variant_of(SPEC, s).name == name]
        assert by_name[name]["shoppers"] == len(members)
        assert by_name[name]["per_shopper"]["lists"]["mean"] == pytest.approx(2.0), "two lists each, counted once"
        assert by_name[name]["per_shopper"]["clicks"]["mean"] == pytest.approx(sum(v == name for v in clicked.values()) / len(members))
        guard = by_name[name]["guardrails"]
        assert guard["requests"] == 2 * len(members) and guard["error_rate"]["mean"] == 0 and guard["latency_ms_mean"] > 0
    assert report["status"] == "running" and report["comparisons"][0]["variant"] == "prior"
    assert client.get("/v1/experiments/nope", headers={"X-API-Key": SECRET_KEY}).status_code == 404

    stored.stop(redis_client, shop.keys, "ab-1", datetime.fromtimestamp(now[0], UTC))
    now[0] += 1.5
    assert client.get("/v1/users/shopper-0/recommendations", headers=STORE).json()["experiment"] is None, "stopped: nobody is assigned"
    listed = client.get("/v1/experiments", headers={"X-API-Key": SECRET_KEY}).json()
    assert [e["experiment_id"] for e in listed] == ["ab-1"] and listed[0]["stopped_at"] is not None


def test_interleaving_merges_both_rankings_and_credits_the_team_that_placed_a_product(experiment_api, shop, redis_client):
    client, now = experiment_api
    spec = ExperimentSpec(
        experiment_id="il-1",
        mode="interleave",
        variants=[VariantSpec(name="prior", share=0.5, ranking="prior"), VariantSpec(name="popular", share=0.5, ranking="popularity")],
    )
    shoppers = [f"il-shopper-{n}" for n in range(8)]
    for n, shopper in enumerate(shoppers):
        shop.click(shopper, f"{['Bag', 'Coat', 'Dress'][n % 3].lower()}-{n % 5}")
        shop.click(f"crowd-{n}", "coat-7")  # a popular product the popularity ranking puts first
    stored.create(redis_client, shop.keys, spec, datetime.fromtimestamp(now[0], UTC) - timedelta(seconds=1))
    now[0] += 1.5
    expected = {"prior": 0, "popular": 0}
    for shopper in shoppers:
        answer = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 6}, headers=STORE).json()
        assert answer["experiment"] == {"experiment_id": "il-1", "variant": "interleaved"}
        served = json.loads(redis_client.lindex(shop.keys.served(shopper), 0))
        teams = served["interleaving"]["teams"]
        assert len(teams) == len(answer["items"]) == 6 and {teams.count("prior"), teams.count("popular")} == {3}, teams
        placed = dict(zip(served["products"], teams, strict=False))
        chosen = answer["items"][0]["product_id"]
        shop.click(shopper, chosen, request_id=answer["request_id"])
        expected[placed[chosen]] += 1
    report = client.get("/v1/experiments/il-1", headers={"X-API-Key": SECRET_KEY}).json()["interleaving"]
    assert report["lists"] == len(shoppers) and report["shoppers"] == len(shoppers)
    assert report["wins"] == expected, "each list won by the team whose product was chosen"
    assert report["preference_per_shopper"]["mean"] == pytest.approx((expected["popular"] - expected["prior"]) / len(shoppers))


def _served_features(redis_client, shop, shopper: str) -> dict[str, np.ndarray]:
    served = json.loads(redis_client.lindex(shop.keys.served(shopper), 0))
    names = served["feature_names"]
    rows = np.frombuffer(base64.urlsafe_b64decode(served["features"]), dtype="<f4").reshape(len(served["products"]), len(names))
    return {name: rows[:, n] for n, name in enumerate(names)}


def test_a_variant_sets_its_own_knobs_and_does_without_candidate_sources(experiment_api, shop, redis_client):
    client, now = experiment_api
    spec = ExperimentSpec(
        experiment_id="knobs-1",
        variants=[
            VariantSpec(name="control", share=0.5, ranking="prior"),
            VariantSpec(name="narrow", share=0.5, ranking="prior", mmr_lambda=1.0, without=["covisit", "history"]),
        ],
    )
    shoppers = [f"k-shopper-{n}" for n in range(16)]
    for n, shopper in enumerate(shoppers):  # shoppers who viewed what others viewed: co-visitation proposes
        shop.click(shopper, f"{['bag', 'coat', 'dress'][n % 3]}-{n % 5}")
        shop.click(shopper, f"{['bag', 'coat', 'dress'][n % 3]}-{(n + 1) % 5}")
    stored.create(redis_client, shop.keys, spec, datetime.fromtimestamp(now[0], UTC) - timedelta(seconds=1))
    now[0] += 1.5
    proposed = {"control": 0.0, "narrow": 0.0}
    for shopper in shoppers:
        answer = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 6}, headers=STORE).json()
        variant = answer["experiment"]["variant"]
        features = _served_features(redis_client, shop, shopper)
        proposed[variant] += float(features["from_covisit"].sum() + features["from_history"].sum())
        if variant == "narrow":
            assert not any("viewed with" in item["reason"] for item in answer["items"]), "no reason names a source left out"
    assert proposed["control"] > 0, "the control's lists draw on co-visitation (else the test proves nothing)"
    assert proposed["narrow"] == 0, "the variant's lists never do"
    report = client.get("/v1/experiments/knobs-1", headers={"X-API-Key": SECRET_KEY}).json()
    assert [v["settings"] for v in report["variants"]] == ["prior", "prior,mmr_lambda=1,without=covisit+history"]


def test_a_variant_ranks_with_learners_saved_under_a_name(shop, redis_client):
    """Saved learners (`shelfsight learners save`) rank one variant while the live ones rank the other."""
    from models.ranking.learners import Learners
    from services.recommender.engine import Query
    from services.recommender.features import FEATURES
    from services.recommender.learned import LearnedCache
    from state.checkpoints import SavedLearnersError, delete_saved, dump, save_learners

    secret = b"saved-learners-secret-0001"
    trained = Learners(ranker_warmup=2)
    for _ in range(3):
        trained.learn_choice(FEATURES, {"popularity": 1.0}, [{"popularity": 0.0}])
    with pytest.raises(SavedLearnersError, match="no profiles worker has checkpointed"):
        save_learners(redis_client, shop.keys, "before", time.time())
    redis_client.set(shop.keys.learners("main"), dump(trained, secret))
    assert save_learners(redis_client, shop.keys, "before", time.time()) == ["main"]
    with pytest.raises(SavedLearnersError, match="already saved"):
        save_learners(redis_client, shop.keys, "before", time.time())
    redis_client.set(shop.keys.learners("main"), dump(Learners(), secret))  # the live learners start over

    cache = LearnedCache(redis_client, shop.keys, secret, saved_check_s=0.0)  # every request looks the copy up
    cache.refresh()
    spec = ExperimentSpec(
        experiment_id="saved-1",
        variants=[
            VariantSpec(name="live", share=0.5, ranking="learned"),
            VariantSpec(name="before", share=0.5, ranking="learned", learners="before"),
        ],
    )
    now = datetime.now(UTC)
    stored.create(redis_client, shop.keys, spec, now - timedelta(seconds=1))
    running = RunningExperiments(redis_client, shop.keys, poll_s=60.0)
    engine = shop.engine(assign=running.assign, saved=cache.saved)
    engine._learned = lambda: cache.current  # the live learners as `serve` reads them
    shoppers = [f"saved-shopper-{n}" for n in range(12)]
    for n, shopper in enumerate(shoppers):
        shop.click(shopper, f"{['bag', 'coat', 'dress'][n % 3]}-{n % 5}")
    rankers = {(r := engine.recommend(Query(user_id=s, k=4))).experiment.variant: r.ranker for s in shoppers}  # type: ignore[union-attr]
    assert rankers == {"live": "prior", "before": "learned"}, "the live learners have not learned yet; the saved ones had"
    assert cache.saved("nothing-saved") is None
    assert delete_saved(redis_client, shop.keys, "before")
    after = {(r := engine.recommend(Query(user_id=s, k=4))).experiment.variant: r.ranker for s in shoppers}  # type: ignore[union-attr]
    assert after == {"live": "prior", "before": "prior"}, "deleted: the variant ranks with the live learners"


def test_saved_learners_are_looked_up_at_most_once_per_interval(shop, redis_client):
    """Between two look-ups a request naming saved learners reads nothing from Redis: a deletion
    is followed at the next look-up, not at once."""
    from models.ranking.learners import Learners
    from services.recommender.learned import LearnedCache
    from state.checkpoints import delete_saved, dump, save_learners

    secret = b"saved-learners-secret-0002"
    redis_client.set(shop.keys.learners("main"), dump(Learners(), secret))
    save_learners(redis_client, shop.keys, "nightly", time.time())
    throttled = LearnedCache(redis_client, shop.keys, secret, saved_check_s=3600.0)
    eager = LearnedCache(redis_client, shop.keys, secret, saved_check_s=0.0)
    assert throttled.saved("nightly") is not None and eager.saved("nightly") is not None
    assert delete_saved(redis_client, shop.keys, "nightly")
    assert throttled.saved("nightly") is not None, "looked up an hour ago at most: the copy it holds still ranks"
    assert eager.saved("nightly") is None, "looked up again: nothing is saved under the name any more"


@pytest.mark.slow
def test_the_dashboard_shows_the_decision_the_variants_and_the_curves_in_chromium(api_settings, shop, redis_client):
    """Readings half a minute apart make the curves; the page asks for them with the key typed in."""
    from tests.services.recommender.conftest import uvicorn_serving
    from tests.services.recommender.test_widget import SCREENSHOT_DIR, _browser, _wait

    now = [datetime.now(UTC).timestamp()]
    app = _app(api_settings, shop, redis_client, now)
    stored.create(redis_client, shop.keys, SPEC, datetime.fromtimestamp(now[0], UTC) - timedelta(seconds=1))
    with TestClient(app) as client:
        for n in range(16):
            answer = client.get(f"/v1/users/dash-{n}/recommendations", params={"k": 4}, headers=STORE).json()
            if answer["experiment"]["variant"] == "prior":
                shop.click(f"dash-{n}", answer["items"][0]["product_id"], request_id=answer["request_id"])
            if n % 4 == 3:  # a reading, as an operator's would be, 30 s of shop time apart
                read_report(redis_client, shop.keys, "ab-1", now=datetime.fromtimestamp(now[0] + 30 * n, UTC))
    with uvicorn_serving(app) as base:
        browser = _browser()
        try:
            browser.get(f"{base}/experiments?experiment=ab-1")
            assert "403" in _wait(
                lambda: browser.find_element("id", "status").text if "403" in browser.find_element("id", "status").text else None
            )
            browser.find_element("id", "key").send_keys(SECRET_KEY)
            browser.find_element("id", "load").click()
            decision = _wait(lambda: browser.find_element("id", "decision").text)
            assert decision.startswith("prior: "), decision
            rows = browser.execute_script(
                "return Array.from(document.querySelectorAll('#variants tbody tr')).map(r => r.cells[0].textContent)"
            )
            assert rows == ["control", "prior"]
            curves = _wait(lambda: browser.execute_script("return document.querySelectorAll('svg path.curve').length") == 2)
            assert curves
            points = browser.execute_script("return document.querySelector('#difference path.curve').getAttribute('d').split('L').length")
            assert points >= 4, "one point per reading kept"
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(SCREENSHOT_DIR / "experiments-dashboard.png"))
        finally:
            browser.quit()
