"""int8 vectors on the embedded shard against float32 ones: index build, search latency, recall.

Two shards of the same N products (256-d fused vectors in 200 clusters, one in ten out of
stock), written through `EdgeProductStore` (the fused vector alone: the embedder also stores a
picture and a text vector a product, so a shop's shard is about three times this one): one as shipped
(`SHELFSIGHT_QDRANT_QUANTIZATION=int8`, searches rescored from `SHELFSIGHT_QDRANT_OVERSAMPLING`
× the limit), the baseline with float32 vectors alone (`none`). For each:

1. Index build: the shard closed and opened again, as `serve` opens it (the HNSW index of
   every segment built before anything queries it), timed.
2. Searches as a recommendation asks them: batches of 10 nearest-neighbour queries, 100
   each, filtered to products in stock and away from 50 the shopper has seen; p50 and p99 a
   batch, one search thread (the shipped setting).
3. Recall@100 against the exact answer, computed with numpy over the same vectors and filters.

Prints each figure and the int8 / float32 ratio from the same run. Needs no stack.

    .venv/bin/python bench/quantization.py [--products 100000] [--queries 400] [--oversampling 1.5] [--ef 256]
"""

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from services.vectors.edge import EdgeProductStore
from services.vectors.store import SearchFilters, StoredProduct, VectorQuery

DIMS = 256


def _world(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, 200, size=n)
    vectors = centres[cluster] + rng.normal(0, 0.35, size=(n, DIMS)).astype(np.float32) / np.sqrt(DIMS) * 4
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), cluster, centres


def _fill(path: Path, vectors: np.ndarray, cluster: np.ndarray, quantization: str, oversampling: float) -> float:
    """Writes the products, closes the shard; returns the seconds the writes took."""
    store = EdgeProductStore(path, search_threads=1, quantization=quantization, oversampling=oversampling)  # type: ignore[arg-type]
    store.ensure_collection({"fused": DIMS})
    started = time.perf_counter()
    for start in range(0, len(vectors), 2000):
        store.upsert(
            [
                StoredProduct(f"p{n:07d}", {"fused": vectors[n].tolist()}, {"category": f"c{cluster[n] % 10}", "in_stock": n % 10 != 0})
                for n in range(start, min(len(vectors), start + 2000))
            ]
        )
    store.close()
    return time.perf_counter() - started


def _queries(vectors: np.ndarray, centres: np.ndarray, count: int) -> list[tuple[np.ndarray, frozenset[str]]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        v = centres[rng.integers(0, len(centres))] + rng.normal(0, 0.35, DIMS).astype(np.float32) / np.sqrt(DIMS) * 4
        seen = frozenset(f"p{int(i):07d}" for i in rng.integers(0, len(vectors), 50))
        out.append((v / np.linalg.norm(v), seen))
    return out


def _exact(vectors: np.ndarray, queries: list[tuple[np.ndarray, frozenset[str]]], limit: int) -> list[set[str]]:
    in_stock = np.arange(len(vectors)) % 10 != 0
    answers = []
    for v, seen in queries:
        scores = vectors @ v
        scores[~in_stock] = -np.inf
        scores[[int(p[1:]) for p in seen]] = -np.inf
        answers.append({f"p{int(i):07d}" for i in np.argpartition(-scores, limit)[:limit]})
    return answers


def _measure(store: EdgeProductStore, queries: list[tuple[np.ndarray, frozenset[str]]], limit: int) -> tuple[list[float], list[set[str]]]:
    batches, found = [], []
    for at in range(0, len(queries), 10):
        asked = [
            VectorQuery(vector=v.tolist(), limit=limit, filters=SearchFilters(in_stock=True, exclude=seen), fields=())
            for v, seen in queries[at : at + 10]
        ]
        started = time.perf_counter()
        results = store.query_many(asked)
        batches.append((time.perf_counter() - started) * 1000)
        found += [{h.product_id for h in hits} for hits in results]
    return batches, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--oversampling", type=float, default=1.5)
    parser.add_argument(
        "--ef", type=int, default=None, help="the HNSW beam of a search, as SHELFSIGHT_QDRANT_SEARCH_EF (default: Qdrant's)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds, the two shards alternating")
    args = parser.parse_args()
    vectors, cluster, centres = _world(args.products)
    queries = _queries(vectors, centres, args.queries)
    exact = _exact(vectors, queries, args.limit)
    root = Path(tempfile.mkdtemp(prefix="shelfsight-bench-quantization-"))
    try:
        stores, built = {}, {}
        for kind in ("none", "int8"):
            written = _fill(root / kind, vectors, cluster, kind, args.oversampling)
            started = time.perf_counter()
            store = EdgeProductStore(root / kind, search_threads=1, oversampling=args.oversampling, search_ef=args.ef)
            store.ensure_collection({"fused": DIMS})  # builds the index, as `serve` does at start
            built[kind] = time.perf_counter() - started
            stores[kind] = store
            size = sum(f.stat().st_size for f in (root / kind).rglob("*") if f.is_file()) / 2**20
            print(
                f"{kind:5s} {args.products} products written in {written:.1f} s, index built at open in {built[kind]:.1f} s, {size:.0f} MB on disk"
            )
        p50: dict[str, list[float]] = {k: [] for k in stores}
        p99: dict[str, list[float]] = {k: [] for k in stores}
        for _ in range(args.rounds):
            for kind, store in stores.items():
                batches, found = _measure(store, queries, args.limit)
                batches.sort()
                p50[kind].append(statistics.median(batches))
                p99[kind].append(batches[min(len(batches) - 1, int(0.99 * len(batches)))])
                recall = statistics.mean(len(f & e) / args.limit for f, e in zip(found, exact, strict=True))
                print(
                    f"{kind:5s} ef {args.ef or 'default'}: batch of 10 searches p50 {p50[kind][-1]:6.2f} ms  p99 {p99[kind][-1]:6.2f} ms  recall@{args.limit} {recall:.4f}"
                )
        for store in stores.values():
            store.close()
        print(
            f"peak resident memory of this process (both shards open): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        m50 = {k: statistics.median(v) for k, v in p50.items()}
        m99 = {k: statistics.median(v) for k, v in p99.items()}
        print(
            f"ratio int8 / float32: index build {built['int8'] / built['none']:.2f}, "
            f"search p50 {m50['int8'] / m50['none']:.2f} ({m50['int8']:.2f} / {m50['none']:.2f} ms), "
            f"p99 {m99['int8'] / m99['none']:.2f} ({m99['int8']:.2f} / {m99['none']:.2f} ms), medians of {args.rounds} rounds"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
