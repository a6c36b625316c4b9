"""Recommendation latency over HTTP at a fixed request rate, against the same engine in-process.

Setup (synthetic, written in the layouts the services use): 50,000 products in a fresh
Qdrant Edge shard (256-d fused vectors in 200 visual clusters, 10 categories), 10,000
shopper profiles in Redis (preference vector, category affinities, 10 recent items, a few
purchases), co-visitation lists and trending sets, and River learners trained on 30,000
synthetic events, checkpointed to Redis as the profiles worker does.

1. In-process: `Recommender.recommend` for random shoppers, one after another (p50/p99).
2. HTTP: the API (`build_api`, as `shelfsight serve` runs it) in a child process on the
   same shard; an open-loop client sends GET /v1/users/{id}/recommendations?k=10 at a fixed
   rate on keep-alive connections, timing each from its scheduled send (no coordinated omission).

3. With `--rising`: the same client at rising rates (10 s a step) until p99 passes 50 ms:
   the sustainable request rate of one API process.

The ratio printed is in-process p50 / HTTP p50: the share of the HTTP time that is the
recommender itself. Needs the local stack (`shelfsight stack up`).

    .venv/bin/python bench/serve.py [--products 50000] [--profiles 10000] [--rate 100] [--seconds 20] [--rising]
"""

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from services.profiles.learners import Learners, dump
from services.profiles.profile import Profile
from services.profiles.keys import Keys
from services.profiles.state import encode_profile
from services.recommender.engine import Query, Recommender, Tuning
from services.recommender.features import FEATURES
from services.recommender.learned import LearnedCache
from services.recommender.shopper import ShopperReader
from services.settings import load_settings
from services.vectors.edge import EdgeProductStore
from services.vectors.store import StoredProduct
from services.errors import run_script
from services.ops.memory import peak_rss_mb

DIMS = 256
CATEGORIES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
SECRET = b"bench-serve-secret"


def build_world(path: Path, keys: Keys, client: redis.Redis, products: int, profiles: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, 200, size=products)
    vectors = centres[cluster] + rng.normal(0, 0.35, size=(products, DIMS)).astype(np.float32) / np.sqrt(DIMS) * 4
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{n:06d}" for n in range(products)]
    now = time.time()
    store = EdgeProductStore(path)
    store.ensure_collection({"fused": DIMS})
    started = time.perf_counter()
    for start in range(0, products, 2000):
        batch = [
            StoredProduct(ids[n], {"fused": vectors[n].tolist()}, {
                "title": f"Product {n}", "category": CATEGORIES[cluster[n] % 10], "price": float(10 + n % 190),
                "currency": "EUR", "in_stock": n % 10 != 0, "delisted": False, "listed_ts": now - (n % 1000) * 3600,
                "has_image": True,
            })
            for n in range(start, min(products, start + 2000))
        ]
        store.upsert(batch)
    print(f"   {products} products upserted in {time.perf_counter() - started:.1f} s")
    store.close()  # the index is not built here: the store builds it when serve opens the shard

    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for n in range(products):
        pipe.hset(keys.item(ids[n]), mapping={"vec": vectors[n].tobytes(), "category": CATEGORIES[cluster[n] % 10],
                                              "price": repr(float(10 + n % 190)), "in_stock": "1"})
        if n % 5000 == 4999:
            pipe.execute()
    learners = Learners()
    by_cluster: dict[int, list[int]] = {}
    for n, c in enumerate(cluster):
        by_cluster.setdefault(int(c), []).append(n)
    trending: dict[str, float] = {}
    for u in range(profiles):
        user = f"u{u:05d}"
        taste = rng.integers(0, 200, size=2)
        liked = [int(rng.choice(by_cluster[int(t)])) for t in taste for _ in range(5)]
        vector = vectors[liked].sum(axis=0)
        cats: dict[str, float] = {}
        for i in liked:
            cats[CATEGORIES[cluster[i] % 10]] = cats.get(CATEGORIES[cluster[i] % 10], 0.0) + 2.0
        profile = Profile(vector.astype(np.float32), cats, now - 60, {"click": 10})
        pipe.hset(keys.user(user), mapping=encode_profile(profile))
        pipe.rpush(keys.recent(user), *[ids[i] for i in liked])
        pipe.zadd(keys.purchased(user), {ids[liked[0]]: now})
        for a, b in zip(liked, liked[1:], strict=False):
            pipe.zincrby(keys.neighbours(ids[a]), 1, ids[b])
            pipe.zincrby(keys.neighbours(ids[b]), 1, ids[a])
        for i in liked:
            trending[ids[i]] = trending.get(ids[i], 0.0) + 1.0
        if u < 3000:
            for i in liked:
                learners.learn_event(user, ids[i], "click", 2.0)
        if u % 500 == 499:
            pipe.execute()
    top = sorted(trending.items(), key=lambda kv: -kv[1])[:1000]
    pipe.zadd(keys.trending(), dict(top))
    for category in CATEGORIES:
        pipe.zadd(keys.trending(category), {i: s for i, s in top if CATEGORIES[cluster[int(i[1:])] % 10] == category} or {"none": 0})
    # A learned ranking, so requests take the learned path: choices that follow co-visitation and likeness.
    for _ in range(300):
        rows = [dict(zip(FEATURES, rng.uniform(0, 1, len(FEATURES)), strict=True)) for _ in range(6)]
        best = max(rows, key=lambda r: r["covisit_recent"] + r["taste"])
        learners.learn_choice(FEATURES, best, [r for r in rows if r is not best])
    pipe.set(keys.learners("main"), dump(learners, SECRET))
    pipe.execute()
    print(f"   {profiles} profiles, co-visitation, trending and learners ({learners.events} events) in Redis in "
          f"{time.perf_counter() - started:.1f} s")


def engine_for(path: Path, keys: Keys, client: redis.Redis) -> tuple[Recommender, EdgeProductStore, LearnedCache]:
    store = EdgeProductStore(path)
    store.ensure_collection({"fused": DIMS})
    learned = LearnedCache(client, keys, SECRET)
    learned.refresh()
    return Recommender(store, ShopperReader(client, keys), lambda: learned.current, DIMS, Tuning()), store, learned


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def serve(path: Path, prefix: str, port: int) -> None:
    """Child process: the API over the prepared shard, as `shelfsight serve` builds it."""
    import redis.asyncio as aioredis
    import uvicorn

    from services.bus.config import producer_config
    from services.bus.producer import Producer
    from services.recommender.http.app import ApiParts, build_api
    from services.recommender.http.live import LiveUpdates
    from services.recommender.http.timeouts import server_config
    from services.recommender.metrics import RecommenderMetrics

    settings = load_settings(redis_prefix=prefix, api_port=port)
    keys = Keys(prefix)
    client = redis.Redis.from_url(settings.redis_url)
    engine, store, _ = engine_for(path, keys, client)
    live = LiveUpdates(aioredis.Redis.from_url(settings.redis_url), keys.updates_channel)
    parts = ApiParts(settings, engine, store, Producer(producer_config(settings)), live, RecommenderMetrics())
    uvicorn.Server(server_config(build_api(parts), settings)).run()


def load(port: int, users: list[str], rate: float, seconds: float, connections: int = 4) -> tuple[list[float], int]:
    """Open loop: request n is due at n / rate; latency counts from when it was due."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for n in counter:
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            connection.request("GET", f"/v1/users/{random.choice(users)}/recommendations?k=10")
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - due
            with lock:
                if response.status != 200 or not json.loads(body)["items"]:
                    errors[0] += 1
                latencies.append(elapsed * 1000)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def rising(port: int, users: list[str], limit_ms: float = 50.0, step_s: float = 10.0) -> float:
    """The highest rate (of the steps tried) whose p99 stays under ``limit_ms``; 0 if none does."""
    print(f"== rising rate, {step_s:.0f} s a step, until p99 passes {limit_ms:.0f} ms")
    best = 0.0
    for rate in (10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200):
        latencies, errors = load(port, users, rate, step_s)
        p50, p99 = percentiles(latencies)
        print(f"   {rate:4d}/s  p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  errors {errors}")
        if p99 >= limit_ms or errors:
            break
        best = rate
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rising", action="store_true", help="then raise the rate until p99 passes 50 ms")
    parser.add_argument("--serve", nargs=3, metavar=("PATH", "PREFIX", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), args.serve[1], int(args.serve[2]))
        return 0

    settings = load_settings()
    prefix = f"bench-serve-{uuid.uuid4().hex[:6]}:"
    keys = Keys(prefix)
    client = redis.Redis.from_url(settings.redis_url)
    folder = Path(tempfile.mkdtemp(prefix="shelfsight-bench-serve-"))
    users = [f"u{u:05d}" for u in range(args.profiles)]
    try:
        print(f"== setting up {args.products} products and {args.profiles} profiles")
        build_world(folder / "shard", keys, client, args.products, args.profiles)

        print("== in-process: Recommender.recommend, one request after another")
        started = time.perf_counter()
        engine, store, _ = engine_for(folder / "shard", keys, client)
        print(f"   shard opened as serve opens it, HNSW index built, in {time.perf_counter() - started:.1f} s")
        for user in random.sample(users, 50):  # warm-up
            engine.recommend(Query(user, 10))
        samples = []
        for user in random.choices(users, k=2000):
            started = time.perf_counter()
            result = engine.recommend(Query(user, 10))
            samples.append((time.perf_counter() - started) * 1000)
            assert result.items
        store.close()
        in_p50, in_p99 = percentiles(samples)
        print(f"   p50 {in_p50:.2f} ms  p99 {in_p99:.2f} ms  ({len(samples)} requests)")

        print(f"== HTTP: {args.rate:.0f} requests/s for {args.seconds:.0f} s, the API in its own process")
        port = 18000 + random.randrange(1000)
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(folder / "shard"), prefix, str(port)],
                                 env={**os.environ, "SHELFSIGHT_LOG_LEVEL": "WARNING"})
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    connection.request("GET", "/healthz")
                    connection.getresponse().read()
                    break
                except OSError:
                    if time.monotonic() > deadline or child.poll() is not None:
                        raise SystemExit("the API did not start") from None
                    time.sleep(0.3)
            load(port, users, args.rate, 2.0)  # warm-up
            latencies, errors = load(port, users, args.rate, args.seconds)
            sustainable = rising(port, users) if args.rising else None
            api_peak_mb = peak_rss_mb(child.pid)
        finally:
            child.terminate()
            child.wait(20)
        http_p50, http_p99 = percentiles(latencies)
        print(f"   p50 {http_p50:.2f} ms  p99 {http_p99:.2f} ms  ({len(latencies)} requests, {errors} errors)")
        print(f"   peak resident memory of the API process: {api_peak_mb:.0f} MB")
        if sustainable is not None:
            print(f"== sustainable rate of one API process at p99 < 50 ms: {sustainable:.0f} requests/s")
        print(f"== ratio in-process p50 / HTTP p50: {in_p50 / http_p50:.2f}   "
              f"(HTTP adds {http_p50 - in_p50:.2f} ms at p50, {http_p99 - in_p99:.2f} ms at p99)")
    finally:
        clean_up(client, prefix, folder)
    return 0


def clean_up(client: redis.Redis, prefix: str, folder: Path) -> None:
    """Remove a bench world: its Redis keys and its shard folder."""
    for key in client.scan_iter(f"{prefix}*", count=10_000):
        client.unlink(key)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_script(main, "bench/serve.py")
