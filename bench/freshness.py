"""Freshness of the whole system: listed → recommendable, and click → the next recommendation reflects it.

Starts `shelfsight serve` and `shelfsight profiles` as processes (as `make demo` does) on
topics, Redis keys and a Qdrant shard of their own, then:

1. listed → recommendable: publish a new product (real Fashion-MNIST photo) to
   products.listed and poll GET /v1/products/{id}/similar until it answers 200: the product
   is in the shard the recommender reads. Timed from the produce call.
2. click → reflected: take a shopper's top recommendation, POST a click on it to /v1/events
   and poll GET /v1/users/{id}/recommendations until that item is gone (seen items are left
   out). Timed from the POST, so the API, Kafka, the Faust worker and Redis are all in it.

Baseline: one GET /v1/users/{id}/recommendations on the same server, to show what part of
each figure is just asking. Needs the local stack and a model checkpoint (`make model` or `make demo`).

    .venv/bin/python bench/freshness.py [--trials 30]
"""

import argparse
import http.client
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from schemas import ProductListed, encode
from schemas.topics import PRODUCTS_LISTED
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.demo.catalogue import catalogue
from services.errors import run_script
from services.settings import load_settings
from services.stack.model import ensure_model
from services.stack.supervisor import start_service, wait_healthy


def call(connection: http.client.HTTPConnection, method: str, path: str, body: object = None, key: str = "") -> tuple[int, dict]:  # type: ignore[type-arg]
    connection.request(
        method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": "application/json", "X-API-Key": key}
    )
    response = connection.getresponse()
    data = response.read()
    return response.status, (json.loads(data) if data else {})


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    port = 18800 + random.randrange(100)
    secret = f"sk-bench-{run}"
    base = load_settings()
    settings = base.model_copy(update={"topic_prefix": f"bench-fresh-{run}.", "redis_prefix": f"bench-fresh-{run}:", "api_port": port})
    checkpoint = ensure_model(base)
    folder = Path(tempfile.mkdtemp(prefix="shelfsight-bench-fresh-"))
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": settings.topic_prefix,
        "SHELFSIGHT_REDIS_PREFIX": settings.redis_prefix,
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_API_KEYS": secret,
        "SHELFSIGHT_MODEL_DIR": str(checkpoint),
        "SHELFSIGHT_QDRANT_PATH": str(folder / "qdrant"),
        "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
    }
    create_topics(settings)
    services = [start_service("serve", ["serve"], env, folder / "logs"), start_service("profiles", ["profiles"], env, folder / "logs")]
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", services[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        producer = Producer(producer_config(settings))
        products = list(catalogue(args.trials + 40, split="train", seed=int(run, 16) % 1000))
        listed_topic = settings.topic(PRODUCTS_LISTED.name)

        def list_product(raw: dict) -> None:  # type: ignore[type-arg]
            raw = {**raw, "product_id": f"{raw['product_id']}-{run}", "listed_at": datetime.now(UTC).isoformat()}
            producer.send(listed_topic, encode(ProductListed.model_validate_json(json.dumps(raw))))
            producer.flush(10)

        for raw in products[args.trials :]:  # a shop to recommend from
            list_product(raw)
        time.sleep(3)

        print(f"== listed → recommendable, {args.trials} products one at a time")
        listed = []
        for raw in products[: args.trials]:
            started = time.perf_counter()
            list_product(raw)
            while call(connection, "GET", f"/v1/products/{raw['product_id']}-{run}/similar?k=1")[0] != 200:
                time.sleep(0.005)
            listed.append((time.perf_counter() - started) * 1000)
        print(f"   p50 {statistics.median(listed):.0f} ms  p95 {p(listed, 0.95):.0f} ms")

        print(f"== click → reflected, {args.trials} clicks")
        user, reflected, asking = f"fresh-{run}", [], []
        for n in range(args.trials):
            started = time.perf_counter()
            _, answer = call(connection, "GET", f"/v1/users/{user}/recommendations?k=10")
            asking.append((time.perf_counter() - started) * 1000)
            target = answer["items"][0]["product_id"]
            click = {
                "event_id": f"f-{run}-{n}",
                "user_id": user,
                "product_id": target,
                "kind": "click",
                "occurred_at": datetime.now(UTC).isoformat(),
                "session_id": f"s-{run}",
            }
            started = time.perf_counter()
            status, _ = call(connection, "POST", "/v1/events", [click], key=secret)
            assert status == 202, status
            while target in {i["product_id"] for i in call(connection, "GET", f"/v1/users/{user}/recommendations?k=10")[1]["items"]}:
                if time.perf_counter() - started > 30:
                    raise SystemExit("a click was not reflected within 30 s")
            reflected.append((time.perf_counter() - started) * 1000)
        print(f"   p50 {statistics.median(reflected):.0f} ms  p95 {p(reflected, 0.95):.0f} ms")
        print(
            f"== baseline: one recommendation request p50 {statistics.median(asking):.1f} ms; "
            f"ratio request / click→reflected p50: {statistics.median(asking) / statistics.median(reflected):.2f}"
        )
    finally:
        for service in reversed(services):
            service.stop()
        delete_topics(settings, [spec.name for spec in topic_specs(settings)])
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter(f"{settings.redis_prefix}*", count=10_000):
            client.unlink(key)
    return 0


if __name__ == "__main__":
    run_script(main, "bench/freshness.py")
