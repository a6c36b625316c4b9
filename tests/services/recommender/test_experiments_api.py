"""An A/B test through the HTTP API, real Redis behind it: shoppers are assigned by the
experiment in Redis, answers and served lists name the variant, choices on those lists are
credited by the profiles worker's handler, and the report reads it all back."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from schemas.experiments import ExperimentSpec, VariantSpec
from services.experiments.assignment import variant_of
from services.experiments.report import read_report
from services.experiments.running import RunningExperiments
from state import experiments as stored
from tests.services.recommender.conftest import SECRET_KEY

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

SPEC = ExperimentSpec(
    experiment_id="ab-1",
    variants=[VariantSpec(name="control", share=0.5, ranking="popularity"), VariantSpec(name="prior", share=0.5, ranking="prior")],
)


@pytest.fixture
def experiment_api(api_settings, shop, redis_client):
    from services.bus.config import producer_config
    from services.bus.producer import Producer
    from services.recommender.http.app import ApiParts, build_api
    from services.recommender.http.live import LiveUpdates
    from services.recommender.metrics import RecommenderMetrics

    now = [datetime.now(UTC).timestamp()]
    running = RunningExperiments(redis_client, shop.keys, poll_s=1.0, clock=lambda: now[0])
    live = LiveUpdates(aioredis.Redis.from_url(api_settings.redis_url), shop.keys.updates_channel)
    parts = ApiParts(
        api_settings,
        shop.engine(log_served=True, assign=running.assign),
        shop.store,
        Producer(producer_config(api_settings)),
        live,
        RecommenderMetrics(),
        experiment_report=lambda experiment_id, metric: read_report(redis_client, shop.keys, experiment_id, metric),
        experiments=lambda: stored.load_all(redis_client, shop.keys),
    )
    with TestClient(build_api(parts)) as client:
        yield client, now


def test_shoppers_keep_their_variant_and_their_choices_count_for_it(experiment_api, shop, redis_client):
    client, now = experiment_api
    shoppers = [f"shopper-{n}" for n in range(24)]
    for n, shopper in enumerate(shoppers):
        shop.click(shopper, f"{['Bag', 'Coat', 'Dress'][n % 3].lower()}-{n % 5}")
    assert client.get("/v1/users/shopper-0/recommendations").json()["experiment"] is None, "no experiment yet"
    stored.create(redis_client, shop.keys, SPEC, datetime.fromtimestamp(now[0], UTC) - timedelta(seconds=1))
    now[0] += 1.5  # past the poll: every process reads the new experiment within SHELFSIGHT_EXPERIMENTS_POLL_S

    answers = {}
    for shopper in shoppers:
        first = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 4}).json()
        again = client.get(f"/v1/users/{shopper}/recommendations", params={"k": 4}).json()
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
    assert report["status"] == "running" and report["comparisons"][0]["variant"] == "prior"
    assert client.get("/v1/experiments/nope", headers={"X-API-Key": SECRET_KEY}).status_code == 404

    stored.stop(redis_client, shop.keys, "ab-1", datetime.fromtimestamp(now[0], UTC))
    now[0] += 1.5
    assert client.get("/v1/users/shopper-0/recommendations").json()["experiment"] is None, "stopped: nobody is assigned"
    listed = client.get("/v1/experiments", headers={"X-API-Key": SECRET_KEY}).json()
    assert [e["experiment_id"] for e in listed] == ["ab-1"] and listed[0]["stopped_at"] is not None
