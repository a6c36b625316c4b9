"""Recommendation latency while `serve` indexes a burst of products and rebuilds its index.

In embedded mode `serve` owns the Qdrant Edge shard: its embedder writes new products into it
while the API reads, and products written since the index was built are searched plainly
until `IndexUpkeep` (``services/vectors/upkeep.py``, with the policy `serve` builds from the
settings) has the index rebuilt off-process and swapped in. This runs exactly that: the world
of `bench/serve.py` (50,000 products, 10,000 profiles; the shard opened as `serve` opens it),
`Recommender.recommend` back to back on one thread, the store's `upsert` in batches of 32 at
the embedder's rate on another, and the upkeep thread as `serve` starts it.

Phases, each timed on the same querying thread: the baseline (index built, nothing written),
the burst being written, the burst written but not yet indexed, the off-process build, and
after the swap. Also: how long writes waited (the copy and the final catch-up hold them).
Needs the local stack (`shelfsight stack up`) for the profiles in Redis.

    .venv/bin/python bench/index_upkeep.py [--products 50000] [--profiles 10000] [--burst 12000] [--write-rate 300]
"""

import argparse
import itertools
import random
import threading
import time

import numpy as np
from serve import CATEGORIES, DIMS, bench_world, build_world, engine_for, percentiles

from services.errors import run_script
from services.recommender.engine import Query
from services.recommender.service import upkeep_policy
from services.settings import load_settings
from services.vectors.factory import cached_store
from services.vectors.store import StoredProduct
from services.vectors.upkeep import IndexUpkeep


def burst_products(start: int, n: int, seed: int) -> list[StoredProduct]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, DIMS)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    now = time.time()
    return [
        StoredProduct(
            f"new{start + i:06d}",
            {"fused": v[i].tolist()},
            {
                "title": f"New product {start + i}",
                "category": CATEGORIES[i % 10],
                "price": 20.0,
                "currency": "EUR",
                "in_stock": True,
                "delisted": False,
                "listed_ts": now,
                "has_image": True,
            },
        )
        for i in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=12_000, help="products written in one burst")
    parser.add_argument("--write-rate", type=float, default=300.0, help="products/s the burst is written at (the embedder's rate)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the baseline and after-swap phases")
    args = parser.parse_args()
    settings = load_settings()
    policy = upkeep_policy(settings)
    with bench_world("upkeep", args.profiles) as world:
        users = world.users
        print(f"== setting up {args.products} products and {args.profiles} profiles")
        build_world([world.store()], world.keys, world.client, args.products, args.profiles, model_items=world.settings.item_model_items)
        started = time.perf_counter()
        store = world.store()
        reads = cached_store(settings, store)  # as serve wires it (the store itself here: the cache is for a Qdrant server)
        engine, _ = engine_for(reads, world.keys, world.client)
        print(f"   shard opened as serve opens it (index built) in {time.perf_counter() - started:.1f} s")
        print(f"   upkeep policy (from the settings): {policy}")
        upkeep = IndexUpkeep(store, policy)
        stop_upkeep, stop_queries = threading.Event(), threading.Event()
        upkeeper = threading.Thread(target=upkeep.run, args=(stop_upkeep,), daemon=True)
        samples: list[tuple[float, float]] = []

        def query() -> None:
            while not stop_queries.is_set():
                user = random.choice(users)
                t = time.perf_counter()
                engine.recommend(Query(user, 10))
                samples.append((t, (time.perf_counter() - t) * 1000))

        for user in random.sample(users, 50):  # warm-up
            engine.recommend(Query(user, 10))
        querier = threading.Thread(target=query, daemon=True)
        marks: dict[str, float] = {"baseline": time.perf_counter()}
        querier.start()
        upkeeper.start()
        time.sleep(args.seconds)

        marks["burst"] = time.perf_counter()
        writes: list[tuple[float, float]] = []
        batch = 32
        for at in range(0, args.burst, batch):
            due = marks["burst"] + at / args.write_rate
            time.sleep(max(0.0, due - time.perf_counter()))
            t = time.perf_counter()
            reads.upsert(burst_products(at, min(batch, args.burst - at), seed=at))
            writes.append((t, (time.perf_counter() - t) * 1000))
        marks["unindexed"] = time.perf_counter()
        while not upkeep.stats.building and upkeep.stats.builds == 0 and time.perf_counter() - marks["unindexed"] < policy.max_wait_s + 30:
            time.sleep(0.01)
        marks["build"] = time.perf_counter()
        # Writes go on during the build, at a trickle, to measure how long they wait.
        trickle = 0
        while upkeep.stats.building or (upkeep.stats.builds == 0 and upkeep.stats.nothing_to_build == 0 and upkeep.stats.failures == 0):
            t = time.perf_counter()
            reads.upsert(burst_products(args.burst + trickle, 1, seed=10_000 + trickle))
            writes.append((t, (time.perf_counter() - t) * 1000))
            trickle += 1
            time.sleep(0.05)
        marks["after"] = time.perf_counter()
        time.sleep(args.seconds)
        marks["end"] = time.perf_counter()
        stop_queries.set()
        querier.join(30)
        stop_upkeep.set()
        upkeeper.join(60)
        points, indexed = store.indexed()
        store.close()

        phases = list(marks)
        base_p50, base_p99 = percentiles([ms for t, ms in samples if marks["baseline"] <= t < marks["burst"]])
        print(f"\n{'phase':<44} {'seconds':>8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 / baseline':>15}")
        names = {
            "baseline": "baseline (index built, nothing written)",
            "burst": f"burst: {args.burst} products at {args.write_rate:.0f}/s",
            "unindexed": "burst written, not indexed yet",
            "build": "index rebuilt off-process",
            "after": "after the swap",
        }
        for name, end in itertools.pairwise(phases):
            window = [ms for t, ms in samples if marks[name] <= t < marks[end]]
            if not window:
                print(f"{names[name]:<44} {marks[end] - marks[name]:8.1f} {0:9d}")
                continue
            p50, p99 = percentiles(window)
            print(f"{names[name]:<44} {marks[end] - marks[name]:8.1f} {len(window):9d} {p50:8.2f} {p99:8.2f} {p99 / base_p99:15.2f}")
        during = [ms for t, ms in writes if marks["build"] <= t < marks["after"]]
        print(f"\nupkeep: {upkeep.stats}")
        print(f"after: {points} points, {indexed} vectors in an HNSW index")
        if during:
            print(
                f"writes during the build: {len(during)}, longest wait {max(during):.0f} ms "
                f"(burst writes: p50 {percentiles([ms for _, ms in writes])[0]:.1f} ms)"
            )
        print(f"baseline p50 {base_p50:.2f} ms, p99 {base_p99:.2f} ms")
    return 0


if __name__ == "__main__":
    run_script(main, "bench/index_upkeep.py")
