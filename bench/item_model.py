"""What the item-to-item model costs as a catalogue grows: fit, memory, reads, and learning.

For each catalogue size, shoppers' histories are generated as the profiles worker remembers
them (its bounds: the latest 200 items of the 20,000 most recently active shoppers; products
drawn from clusters, popularity long-tailed) and the model is fitted the way `serve` fits it
(``models.ranking.fit_item_model`` with the settings' shape: exact EASE up to
``SHELFSIGHT_ITEM_MODEL_ITEMS`` products, a rank-``SHELFSIGHT_ITEM_MODEL_RANK`` view past it).
Then, per size:

- fit: seconds for one fit (on `serve`'s reloading thread, at most every
  ``SHELFSIGHT_ITEM_MODEL_REFIT_S``), and the model's memory;
- read: one request's use of it, as the recommender makes it: ``top`` (50 candidates) and
  ``scores`` for 300 candidates, from a 50-item history; p50 and p99;
- learn: events per second through the worker's counting (``CoOccurrence.learn_one``).

The bare baseline in the same run: the exact model (dense EASE) where it fits in memory, at the
same size, so the low-rank view's cost and its agreement with the exact answer (the share of
the exact top 50 it also returns) are measured side by side.

    .venv/bin/python bench/item_model.py [--sizes 2000 20000 100000] [--shoppers 20000] [--rank 64]
"""

import argparse
import time

import numpy as np

from models.ranking import CoOccurrence, ItemWeights, LowRankItemWeights, fit_item_model
from services.errors import run_script
from services.settings import load_settings

EXACT_LIMIT = 5_000  # the dense baseline: 20,000 products would take 1.6 GB and an inverse of minutes


def histories(products: int, shoppers: int, length: int, seed: int = 0) -> list[list[str]]:
    """Shoppers each with a few favourite clusters of products; popularity long-tailed within them."""
    rng = np.random.default_rng(seed)
    clusters = max(1, products // 50)
    members = np.arange(products) % clusters
    by_cluster = [np.flatnonzero(members == c) for c in range(clusters)]
    weights = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in by_cluster]
    out = []
    for _ in range(shoppers):
        favourites = rng.integers(0, clusters, size=3)
        size = int(min(length, rng.geometric(1 / 40)))
        picks = rng.choice(favourites, size=size)
        items = [int(rng.choice(by_cluster[c], p=weights[c] / weights[c].sum())) for c in picks]
        out.append([f"p{i}" for i in dict.fromkeys(items)])
    return out


def reads(model, shoppers: list[list[str]], products: int, rng: np.random.Generator, n: int = 200) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    timings = []
    for _ in range(n):
        history = shoppers[int(rng.integers(len(shoppers)))][:50] or ["p0"]
        candidates = [f"p{i}" for i in rng.integers(0, products, size=300)]
        started = time.perf_counter()
        model.top(history, 50)
        model.scores(history, candidates)
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99))


def learn_rate(shoppers: list[list[str]], exact_items: int, events: int = 20_000) -> float:
    counts = CoOccurrence(max_items=exact_items)
    stream = [(f"u{n}", item) for n, history in enumerate(shoppers) for item in reversed(history)][:events]
    started = time.perf_counter()
    for user, item in stream:
        counts.learn_one(user, item)
    return len(stream) / (time.perf_counter() - started)


def measure(products: int, shoppers: int, exact_items: int, rank: int) -> None:
    data = histories(products, shoppers, 200)
    counted = CoOccurrence.of([list(reversed(h)) for h in data], max_items=exact_items).counts()  # the workers count online
    started = time.perf_counter()
    model = fit_item_model(counted, data, exact_items, rank)
    fit_s = time.perf_counter() - started
    memory = model.weights.nbytes if isinstance(model, ItemWeights) else model.nbytes
    rng = np.random.default_rng(1)
    p50, p99 = reads(model, data, products, rng)
    rate = learn_rate(data, exact_items or 2_000)  # the worker always counts (an exact bound of 0 turns it off)
    kind = "exact" if isinstance(model, ItemWeights) else f"rank {rank}"
    print(
        f"{products:>8,} products, {len(model.items):>7,} in histories ({kind}): fit {fit_s:6.2f} s, "
        f"{memory / 2**20:7.1f} MB; read p50 {p50:5.2f} ms p99 {p99:5.2f} ms; learn {rate:8,.0f} events/s"
    )
    if products <= EXACT_LIMIT:
        baseline(products, data, model, fit_s, p50)


def baseline(products: int, data: list[list[str]], model, fit_s: float, p50: float) -> None:  # type: ignore[no-untyped-def]
    """The exact model on the same histories: its cost, and how much of its top 50 the model in use returns."""
    counted = CoOccurrence.of([list(reversed(h)) for h in data], max_items=products).counts()
    started = time.perf_counter()
    exact = ItemWeights.fit(*counted)
    exact_fit = time.perf_counter() - started
    exact_p50, _ = reads(exact, data, products, np.random.default_rng(1))
    agree = [len({i for i, _ in exact.top(h[:50], 50)} & {i for i, _ in model.top(h[:50], 50)}) / 50 for h in data[:300] if h]
    ratio = (
        "the same model"
        if not isinstance(model, LowRankItemWeights)
        else f"{fit_s / exact_fit:.2f}× its fit, {p50 / exact_p50:.2f}× its read"
    )
    print(
        f"{'':>8}   bare baseline, exact EASE over all {len(exact.items):,}: fit {exact_fit:6.2f} s, "
        f"{exact.weights.nbytes / 2**20:7.1f} MB; read p50 {exact_p50:5.2f} ms ({ratio}); top-50 agreement {np.mean(agree):.1%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 100_000])
    parser.add_argument("--shoppers", type=int, default=20_000, help="shoppers whose histories are remembered (the worker's bound)")
    parser.add_argument("--rank", type=int, default=None, help="default: SHELFSIGHT_ITEM_MODEL_RANK")
    parser.add_argument("--exact-items", type=int, default=None, help="default: SHELFSIGHT_ITEM_MODEL_ITEMS")
    args = parser.parse_args()
    settings = load_settings()
    rank = args.rank or settings.item_model_rank
    exact_items = settings.item_model_items if args.exact_items is None else args.exact_items
    print(f"item-to-item model: exact up to {exact_items:,} products, rank {rank} past it; {args.shoppers:,} shoppers' histories")
    for products in args.sizes:
        measure(products, args.shoppers, exact_items, rank)
    return 0


if __name__ == "__main__":
    run_script(main, "bench/item_model.py")
