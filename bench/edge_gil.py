"""Does building the embedded shard's index stop the rest of the process?

Fills a fresh Qdrant Edge shard through the store `serve` uses (`EdgeProductStore`), closes
it, and opens it again exactly as `serve` does at start (which builds the HNSW index) while
a second thread ticks every millisecond. The
baseline is the same ticker during a plain sleep of the same length, in the same run. A
ratio near 0 means `optimize()` holds the GIL: a background build would freeze every request
of the process (docs/benchmarks.md, "Index maintenance while serving").

    .venv/bin/python bench/edge_gil.py [--products 20000]
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from services.errors import run_script
from services.vectors.edge import EdgeProductStore
from services.vectors.store import StoredProduct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    path = Path(tempfile.mkdtemp(prefix="shelfsight-bench-")) / "qdrant"
    store = EdgeProductStore(path)
    store.ensure_collection({"fused": 256})
    for start in range(0, args.products, 1000):
        v = rng.normal(size=(1000, 256))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.upsert(
            [
                StoredProduct(f"p{start + i}", {"fused": v[i].tolist()}, {"title": "x", "category": "c", "in_stock": True, "price": 1.0})
                for i in range(1000)
            ]
        )
    store.close()
    ticks, stop = [0], threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    threading.Thread(target=ticker, daemon=True).start()
    time.sleep(0.2)
    started, before = time.perf_counter(), ticks[0]
    store = EdgeProductStore(path)
    store.ensure_collection({"fused": 256})  # as serve opens its shard: the index is built here
    seconds, during = time.perf_counter() - started, ticks[0] - before
    before = ticks[0]
    time.sleep(seconds)
    baseline = ticks[0] - before
    stop.set()
    store.close()
    print(f"{args.products} products: opening the shard (index build included) took {seconds:.1f} s")
    print(f"ticker thread: {during} ticks during the open, {baseline} during a sleep as long; ratio {during / max(baseline, 1):.4f}")


if __name__ == "__main__":
    run_script(main, "bench/edge_gil.py")
