"""Recommendation latency over HTTP at a fixed request rate, against the same engine in-process.

Setup (synthetic, written in the layouts the services use): 50,000 products in a fresh
Qdrant Edge shard (256-d fused vectors in 200 visual clusters, 10 categories), 10,000
shopper profiles in Redis (preference vector, category affinities, 10 recent items, a few
purchases), co-visitation lists and trending sets, and River learners trained on 30,000
synthetic events, checkpointed to Redis as the profiles worker does. The store is opened
with `open_store` and the settings, as `shelfsight serve` opens it.

1. In-process: `Recommender.recommend` for random shoppers, one after another (p50/p99).
2. HTTP: the API (`build_api`, as `shelfsight serve` runs it) in a child process on the
   same shard; an open-loop client sends GET /v1/users/{id}/recommendations?k=10 at a fixed
   rate on keep-alive connections, timing each from its scheduled send (no coordinated omission).
3. With `--rising`: the same client at rising rates (10 s a step) until p99 passes 50 ms:
   the sustainable request rate of one API process.
4. With `--qdrant-url URL` (a running Qdrant server): the same products in a collection of
   their own on that server, and steps 1 and 3 again with `SHELFSIGHT_QDRANT_URL` set, for
   one API process and for two (the client's connections split between them), so the table
   says what a second process adds. The server indexes the collection itself; the bench waits
   until the server reports it green.

The ratio printed is in-process p50 / HTTP p50: the share of the HTTP time that is the
recommender itself. Needs the local stack (`shelfsight stack up`).

With `--json PATH` the embedded shard's figures are also written there, with Redis's memory for
the world (INFO's used_memory before and after it was written, and MEMORY USAGE of a sample of
shoppers' and products' keys): `bench/growth.py` reads them.

    .venv/bin/python bench/serve.py [--products 50000] [--profiles 10000] [--rate 50] [--seconds 20] [--rising]
                                    [--qdrant-url http://127.0.0.1:6333 [--qdrant-pid PID]] [--json PATH]
"""

import argparse
import http.client
import itertools
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from models.ranking.learners import Learners
from services.errors import run_script
from services.ops.memory import cpu_seconds, peak_rss_mb
from services.recommender.engine import Query, Recommender, Tuning
from services.recommender.features import FEATURES
from services.recommender.learned import LearnedCache
from services.recommender.service import single_threaded_blas
from services.recommender.shopper import ShopperReader
from services.settings import Settings, load_settings
from services.vectors.cache import VectorCache
from services.vectors.factory import cached_store, open_store
from services.vectors.store import ProductStore, StoredProduct
from state.checkpoints import dump
from state.keys import Keys
from state.values import Item, Profile, encode_item, encode_profile

DIMS = 256
CATEGORIES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
SECRET = b"bench-serve-secret"


@dataclass(frozen=True)
class World:
    """A bench's Redis keys, shard folder and shoppers; :func:`bench_world` removes them afterwards."""

    settings: Settings
    keys: Keys
    client: redis.Redis
    folder: Path
    users: list[str]

    def env(self, qdrant_url: str | None = None, collection: str | None = None) -> dict[str, str]:
        """The settings `serve` would be started with for this world: the embedded shard, or a server's collection."""
        # One client address sends every request here: the per-address limit would measure itself.
        env = {"SHELFSIGHT_REDIS_PREFIX": self.keys.prefix, "SHELFSIGHT_API_CLIENT_REQUESTS_PER_S": "100000"}
        if qdrant_url:
            env |= {"SHELFSIGHT_QDRANT_URL": qdrant_url, "SHELFSIGHT_QDRANT_COLLECTION": collection or "products"}
        else:  # embedded, even where the caller's environment names a server
            env |= {"SHELFSIGHT_QDRANT_URL": "", "SHELFSIGHT_QDRANT_PATH": str(self.folder / "shard")}
        return env

    def settings_for(self, qdrant_url: str | None = None, collection: str | None = None) -> Settings:
        return load_settings(**{k.removeprefix("SHELFSIGHT_").lower(): v for k, v in self.env(qdrant_url, collection).items()})

    def store(self, qdrant_url: str | None = None, collection: str | None = None) -> ProductStore:
        """The product store as `serve` opens it with :meth:`env`'s settings."""
        return open_store(self.settings_for(qdrant_url, collection), {"fused": DIMS, "image": DIMS})


@contextmanager
def bench_world(name: str, profiles: int) -> Iterator[World]:
    settings = load_settings()
    keys = Keys(f"bench-{name}-{uuid.uuid4().hex[:6]}:")
    client = redis.Redis.from_url(settings.redis_url)
    folder = Path(tempfile.mkdtemp(prefix=f"shelfsight-bench-{name}-"))
    try:
        yield World(settings, keys, client, folder, [f"u{u:05d}" for u in range(profiles)])
    finally:
        clean_up(client, keys.prefix, folder)


def build_world(
    stores: list[ProductStore], keys: Keys, client: redis.Redis, products: int, profiles: int, seed: int = 0, *, model_items: int
) -> None:
    """The products into each of ``stores`` (then closed), the shoppers and learners into Redis."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, 200, size=products)
    vectors = centres[cluster] + rng.normal(0, 0.35, size=(products, DIMS)).astype(np.float32) / np.sqrt(DIMS) * 4
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    # Pictures as the embedder stores them: a space of their own, clustered like the products.
    pictures = centres[cluster][:, ::-1] + rng.normal(0, 0.35, size=(products, DIMS)).astype(np.float32) / np.sqrt(DIMS) * 4
    pictures = (pictures / np.linalg.norm(pictures, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{n:06d}" for n in range(products)]
    now = time.time()
    started = time.perf_counter()
    for start in range(0, products, 2000):
        batch = [
            StoredProduct(
                ids[n],
                {"fused": vectors[n].tolist(), "image": pictures[n].tolist()},
                {
                    "title": f"Product {n}",
                    "category": CATEGORIES[cluster[n] % 10],
                    "price": float(10 + n % 190),
                    "currency": "EUR",
                    "in_stock": n % 10 != 0,
                    "delisted": False,
                    "listed_ts": now - (n % 1000) * 3600,
                    "has_image": True,
                },
            )
            for n in range(start, min(products, start + 2000))
        ]
        for store in stores:
            store.upsert(batch)
    print(f"   {products} products upserted in {time.perf_counter() - started:.1f} s")
    for store in stores:
        store.close()  # no index is built here: serve builds the shard's when it opens it, a server its own

    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for n in range(products):
        pipe.hset(keys.item(ids[n]), mapping=encode_item(Item(vectors[n], CATEGORIES[cluster[n] % 10], float(10 + n % 190), True)))
        if n % 5000 == 4999:
            pipe.execute()
    learners = Learners(max_model_items=model_items)  # SHELFSIGHT_ITEM_MODEL_ITEMS, as the profiles worker reads it
    # Arrays: rng.choice copies a list into one at every call, which at a million products took longer than the rest.
    by_cluster = {c: np.flatnonzero(cluster == c) for c in range(200)}
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
        pipe.lpush(keys.recent(user), *[ids[i] for i in liked])  # newest first, as the worker keeps it
        pipe.zadd(keys.seen_items(user), {ids[i]: now - 60 + n for n, i in enumerate(liked)})  # as the profiles worker writes it
        pipe.zadd(keys.purchased(user), {ids[liked[0]]: now})
        for a, b in itertools.pairwise(liked):
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
    print(
        f"   {profiles} profiles, co-visitation, trending and learners ({learners.events} events) in Redis in "
        f"{time.perf_counter() - started:.1f} s"
    )


def engine_for(store: ProductStore, keys: Keys, client: redis.Redis) -> tuple[Recommender, LearnedCache]:
    """The recommender over ``store``: pass it through `cached_store` first, as `serve` does."""
    learned = LearnedCache(client, keys, SECRET)
    learned.refresh()
    return Recommender(store, ShopperReader(client, keys), lambda: learned.current, DIMS, Tuning()), learned


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def serve() -> None:
    """Child process: the API as `shelfsight serve` builds it, with the settings in its environment."""
    import redis.asyncio as aioredis
    import uvicorn

    from services.bus.config import producer_config
    from services.bus.producer import Producer
    from services.recommender.http.app import ApiParts, build_api
    from services.recommender.http.live import LiveUpdates
    from services.recommender.http.timeouts import server_config
    from services.recommender.metrics import RecommenderMetrics

    settings = load_settings()
    single_threaded_blas()  # as run_serve does
    keys = Keys.of(settings)
    client = redis.Redis.from_url(settings.redis_url)
    store = cached_store(settings, open_store(settings, {"fused": DIMS, "image": DIMS}))
    engine, _ = engine_for(store, keys, client)
    live = LiveUpdates(aioredis.Redis.from_url(settings.redis_url), keys.updates_channel)
    parts = ApiParts(settings, engine, store, Producer(producer_config(settings)), live, RecommenderMetrics())
    uvicorn.Server(server_config(build_api(parts), settings)).run()


@contextmanager
def api_processes(env: dict[str, str], count: int) -> Iterator[tuple[list[int], list[int]]]:
    """``count`` API processes with ``env``'s settings, each on a port of its own; yields their ports and pids."""
    ports = [18000 + random.randrange(1000) + 1000 * n for n in range(count)]
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            env={**os.environ, **env, "SHELFSIGHT_API_PORT": str(port), "SHELFSIGHT_LOG_LEVEL": "WARNING"},
        )
        for port in ports
    ]
    try:
        for port, child in zip(ports, children, strict=True):
            deadline = time.monotonic() + 120
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
        yield ports, [child.pid for child in children]
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(20)


def in_process(store: ProductStore, settings: Settings, world: World, requests: int = 2000) -> tuple[float, float]:
    """Two rounds of ``requests`` (with a Qdrant server, the first from a cold vector cache);
    returns the second's p50 and p99."""
    reads = cached_store(settings, store)
    engine, _ = engine_for(reads, world.keys, world.client)
    for user in random.sample(world.users, 50):  # warm-up
        engine.recommend(Query(user, 10))
    for round_ in ("first", "second"):
        samples = []
        for user in random.choices(world.users, k=requests):
            started = time.perf_counter()
            result = engine.recommend(Query(user, 10))
            samples.append((time.perf_counter() - started) * 1000)
            assert result.items
        p50, p99 = percentiles(samples)
        cache = f", vector cache hits {reads.hits / max(1, reads.hits + reads.misses):.0%} so far" if isinstance(reads, VectorCache) else ""
        print(f"   {round_} {requests}: p50 {p50:.2f} ms  p99 {p99:.2f} ms{cache}")
    return p50, p99


def wait_until_indexed(url: str, collection: str, timeout_s: float = 900.0) -> float:
    """Seconds until the server has reported the collection green (its optimizers idle, the
    index built where Qdrant builds one) twice in a row, a second apart."""
    from qdrant_client import QdrantClient

    client, started, greens = QdrantClient(url=url), time.perf_counter(), 0
    while greens < 2:
        greens = greens + 1 if str(client.get_collection(collection).status).lower().endswith("green") else 0
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"the Qdrant server did not finish indexing {collection} in {timeout_s:.0f} s")
        time.sleep(1.0)
    return time.perf_counter() - started


def load(ports: list[int], users: list[str], rate: float, seconds: float, connections: int = 4) -> tuple[list[float], int]:
    """Open loop: request n is due at n / rate; latency counts from when it was due. The
    connections are spread over ``ports`` (one per API process)."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(total))

    def worker(port: int) -> None:
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

    threads = [threading.Thread(target=worker, args=(ports[n % len(ports)],)) for n in range(max(connections, 2 * len(ports)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def at_fixed_rate(
    ports: list[int], pids: list[int], users: list[str], rate: float, seconds: float, server_pid: int | None = None
) -> tuple[float, float]:
    """A 2 s warm-up, then ``rate`` requests/s for ``seconds``; prints p50, p99 and the CPU time
    per request of the API processes (and of a local Qdrant server); returns p50 and p99."""
    load(ports, users, rate, 2.0)
    who = {"API": pids, **({"Qdrant server": [server_pid]} if server_pid else {})}
    before = {name: sum(cpu_seconds(p) for p in group) for name, group in who.items()}
    latencies, errors = load(ports, users, rate, seconds)
    cpu = {name: sum(cpu_seconds(p) for p in group) - before[name] for name, group in who.items()}
    p50, p99 = percentiles(latencies)
    print(f"   p50 {p50:.2f} ms  p99 {p99:.2f} ms  ({len(latencies)} requests, {errors} errors)")
    print("   CPU per request: " + ", ".join(f"{name} {1000 * t / len(latencies):.1f} ms" for name, t in cpu.items()))
    return p50, p99


def rising(ports: list[int], users: list[str], limit_ms: float = 50.0, step_s: float = 10.0) -> float:
    """The highest rate (of the steps tried) whose p99 stays under ``limit_ms``; 0 if none does."""
    print(f"== rising rate, {step_s:.0f} s a step, until p99 passes {limit_ms:.0f} ms ({len(ports)} API process(es))")
    best = 0.0
    for rate in (10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200, 250, 300):
        latencies, errors = load(ports, users, rate, step_s)
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
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rising", action="store_true", help="then raise the rate until p99 passes 50 ms")
    parser.add_argument("--qdrant-url", help="also measure against this Qdrant server, with one and two API processes")
    parser.add_argument("--qdrant-pid", type=int, help="the server's process id, when local: its CPU time per request is shown")
    parser.add_argument("--json", type=Path, help="also write the embedded shard's figures and Redis's memory here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    single_threaded_blas()  # the in-process engine as serve runs it

    rows: list[tuple[str, float, float, float | None]] = []  # setup, in-process p99, HTTP p99, sustainable rate
    with bench_world("serve", args.profiles) as world:
        collection = f"bench-serve-{uuid.uuid4().hex[:6]}"
        print(f"== setting up {args.products} products and {args.profiles} profiles")
        stores = [world.store()] + ([world.store(args.qdrant_url, collection)] if args.qdrant_url else [])
        try:
            redis_before = int(world.client.info("memory")["used_memory"])
            build_world(stores, world.keys, world.client, args.products, args.profiles, model_items=world.settings.item_model_items)
            figures: dict[str, float] = {"products": args.products, "shoppers": args.profiles, "rate": args.rate}
            figures |= redis_memory(world, args.products, redis_before)

            print(
                f"== in-process: Recommender.recommend, one request after another "
                f"(embedded shard, SHELFSIGHT_QDRANT_SEARCH_THREADS={world.settings.qdrant_search_threads})"
            )
            started = time.perf_counter()
            store = world.store()
            figures["index_build_s"] = time.perf_counter() - started
            print(f"   shard opened as serve opens it, HNSW index built, in {figures['index_build_s']:.1f} s")
            in_p50, in_p99 = in_process(store, world.settings_for(), world)
            store.close()

            print(f"== HTTP: {args.rate:.0f} requests/s for {args.seconds:.0f} s, the API in its own process")
            with api_processes(world.env(), 1) as (ports, pids):
                http_p50, http_p99 = at_fixed_rate(ports, pids, world.users, args.rate, args.seconds)
                sustainable = rising(ports, world.users) if args.rising else None
                figures["api_peak_rss_mb"] = peak_rss_mb(pids[0])
                print(f"   peak resident memory of the API process: {figures['api_peak_rss_mb']:.0f} MB")
            if sustainable is not None:
                print(f"== sustainable rate of one API process at p99 < 50 ms: {sustainable:.0f} requests/s")
            print(
                f"== ratio in-process p50 / HTTP p50: {in_p50 / http_p50:.2f}   "
                f"(HTTP adds {http_p50 - in_p50:.2f} ms at p50, {http_p99 - in_p99:.2f} ms at p99)"
            )
            rows.append(("embedded shard, 1 API process", in_p99, http_p99, sustainable))
            figures |= {"in_p50_ms": in_p50, "in_p99_ms": in_p99, "http_p50_ms": http_p50, "http_p99_ms": http_p99}
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))

            if args.qdrant_url:
                rows += on_server(args, world, collection)
        finally:
            if args.qdrant_url:
                from qdrant_client import QdrantClient

                QdrantClient(url=args.qdrant_url).delete_collection(collection)
    print(f"\n{'setup':<36} {'in-process p99':>15} {f'HTTP p99 at {args.rate:.0f}/s':>18} {'sustainable at p99 < 50 ms':>27}")
    for name, p99_in, p99_http, rate in rows:
        print(f"{name:<36} {p99_in:12.2f} ms {p99_http:15.2f} ms {'' if rate is None else f'{rate:.0f}/s':>27}")
    return 0


def redis_memory(world: World, products: int, before: int) -> dict[str, float]:
    """Redis's memory for the world: all of it (INFO's used_memory, after less before), and the mean
    MEMORY USAGE of 200 sampled shoppers' keys and of 200 products' keys (copy and neighbours)."""
    r, keys = world.client, world.keys

    def usage(key: str) -> int:
        return int(r.memory_usage(key) or 0)

    shoppers = world.users[:: max(1, len(world.users) // 200)]
    sampled = [f"p{n:06d}" for n in range(0, products, max(1, products // 200))]
    per_shopper = statistics.mean(
        usage(keys.user(u)) + usage(keys.recent(u)) + usage(keys.seen_items(u)) + usage(keys.purchased(u)) for u in shoppers
    )
    per_product = statistics.mean(usage(keys.item(p)) + usage(keys.neighbours(p)) for p in sampled)
    total_mb = (int(r.info("memory")["used_memory"]) - before) / 2**20
    print(f"   Redis: {total_mb:.0f} MB for the world; {per_shopper:.0f} bytes a shopper, {per_product:.0f} bytes a product (sampled)")
    return {"redis_world_mb": total_mb, "redis_bytes_per_shopper": per_shopper, "redis_bytes_per_product": per_product}


def on_server(args: argparse.Namespace, world: World, collection: str) -> list[tuple[str, float, float, float | None]]:
    print(f"== Qdrant server at {args.qdrant_url}: waiting for it to index {collection}")
    print(f"   indexed in {wait_until_indexed(args.qdrant_url, collection):.1f} s")
    print("== in-process, through the server")
    store = world.store(args.qdrant_url, collection)
    _, in_p99 = in_process(store, world.settings_for(args.qdrant_url, collection), world)
    store.close()
    rows = []
    for count in (1, 2):
        print(f"== HTTP through the server, {count} API process(es): {args.rate:.0f} requests/s for {args.seconds:.0f} s")
        with api_processes(world.env(args.qdrant_url, collection), count) as (ports, pids):
            _, p99 = at_fixed_rate(ports, pids, world.users, args.rate, args.seconds, args.qdrant_pid)
            sustainable = rising(ports, world.users) if args.rising else None
        rows.append((f"Qdrant server, {count} API process{'es' if count > 1 else ''}", in_p99, p99, sustainable))
    return rows


def clean_up(client: redis.Redis, prefix: str, folder: Path) -> None:
    """Remove a bench world: its Redis keys and its shard folder."""
    for key in client.scan_iter(f"{prefix}*", count=10_000):
        client.unlink(key)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run_script(main, "bench/serve.py")
