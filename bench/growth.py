"""Growth curves: serving and the profiles worker at 10,000, 100,000 and 1,000,000 products and as
many shoppers, on this machine.

For each size N, two benches run one after the other, each in a process of its own and each with
its baseline from the same run:

1. `bench/serve.py --products N --profiles N`: N products in a fresh embedded shard (fused and
   picture vectors written in bulk, not through the model), N shoppers, co-visitation, trending
   and learners in Redis in the layouts the services use. It times the HNSW index build as `serve`
   opens the shard, in-process p50/p99 of `Recommender.recommend`, p50/p99 over HTTP at a fixed
   rate (the API process as `serve` builds it, without the embedder), that process's peak memory,
   and Redis's memory for the world (in all, and a shopper's and a product's keys).
2. `bench/profiles.py --shoppers N --items N`: one profiles worker's events/s on `--events` clicks
   spread over N shoppers and N products, against a bare consumer, and Redis bytes a shopper and
   an item after them.

Prints a markdown table and draws the curves (`--out`, PNG). Needs the local stack
(`shelfsight stack up`) and, at a million, about 12 GB of memory and 8 GB of disk.

    .venv/bin/python bench/growth.py [--sizes 10000,100000,1000000] [--events 50000] [--rate 10] [--out docs/img/growth.png]
                                     [--keep FOLDER [--only 1000000]]
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from models.evaluation.charts import line_chart
from services.errors import UserError, run_script

BENCH = Path(__file__).resolve().parent
PROFILES_FIGURES = ("events_per_s", "bare_per_s", "redis_bytes_per_shopper", "redis_bytes_per_item", "worker_peak_rss_mb")


def measure(size: int, events: int, rate: float, folder: Path) -> None:
    """Both benches at ``size`` products and shoppers, their figures written into ``folder``."""
    started = time.perf_counter()
    for command in (
        [BENCH / "serve.py", "--products", size, "--profiles", size, "--rate", rate, "--json", folder / f"serve-{size}.json"],
        [BENCH / "profiles.py", "--shoppers", size, "--items", size, "--events", events, "--json", folder / f"profiles-{size}.json"],
    ):
        print(f"== {' '.join(str(part) for part in command[:1])} at {size:,}", flush=True)
        subprocess.run([sys.executable, "-u", *(str(part) for part in command)], check=True)
    print(f"== {size:,} measured in {time.perf_counter() - started:.0f} s", flush=True)


def figures(size: int, folder: Path) -> dict[str, float]:
    """The two benches' figures at ``size``, merged."""
    served = json.loads((folder / f"serve-{size}.json").read_text())
    kept = folder / f"profiles-{size}.json"
    nan = float("nan")
    worked = json.loads(kept.read_text()) if kept.exists() else dict.fromkeys(PROFILES_FIGURES, nan)  # not measured at this size
    return {
        **served,
        "events_per_s": worked["events_per_s"],
        "bare_per_s": worked["bare_per_s"],
        "worker_bytes_per_shopper": worked["redis_bytes_per_shopper"],
        "worker_bytes_per_item": worked["redis_bytes_per_item"],
        "worker_peak_rss_mb": worked["worker_peak_rss_mb"],
    }


def table(rows: list[dict[str, float]], rate: float) -> str:
    head = (
        "| products and shoppers | index build at open | in-process p50 / p99 | "
        f"HTTP at {rate:g}/s p50 / p99 | API process peak RSS | Redis for the world | "
        "Redis a shopper / a product | profiles worker (bare consumer) |"
    )
    lines = [head, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['products']:,.0f} | {r['index_build_s']:.1f} s | {r['in_p50_ms']:.2f} / {r['in_p99_ms']:.2f} ms | "
            f"{r['http_p50_ms']:.2f} / {r['http_p99_ms']:.2f} ms | {r['api_peak_rss_mb']:,.0f} MB | "
            f"{r['redis_world_mb']:,.0f} MB | {r['redis_bytes_per_shopper']:,.0f} / {r['redis_bytes_per_product']:,.0f} B | "
            f"{r['events_per_s']:,.0f}/s ({r['bare_per_s']:,.0f}/s, {r['events_per_s'] / r['bare_per_s']:.3f}×) |"
        )
    return "\n".join(lines)


def chart(rows: list[dict[str, float]], rate: float, out: Path) -> None:
    """Latency and memory against size (log scale), one panel above the other."""
    ticks = {math.log10(r["products"]): f"{r['products']:,.0f}" for r in rows}

    def points(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(math.log10(r["products"]), r[key] * scale) for r in rows]

    latency = line_chart(
        {
            "in-process p50": points("in_p50_ms"),
            "in-process p99": points("in_p99_ms"),
            f"HTTP p50 at {rate:g}/s": points("http_p50_ms"),
            f"HTTP p99 at {rate:g}/s": points("http_p99_ms"),
        },
        "Serving latency as the shop grows (products = shoppers)",
        "products and shoppers (log scale)",
        "ms",
        x_ticks=ticks,
    )
    memory = line_chart(
        {"Redis for the world": points("redis_world_mb", 1 / 1024), "API process peak RSS": points("api_peak_rss_mb", 1 / 1024)},
        "Memory as the shop grows",
        "products and shoppers (log scale)",
        "GiB",
        x_ticks=ticks,
    )
    both = Image.new("RGB", (latency.width, latency.height + memory.height), "white")
    both.paste(latency, (0, 0))
    both.paste(memory, (0, latency.height))
    out.parent.mkdir(parents=True, exist_ok=True)
    both.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="products (and shoppers) per step, comma-separated")
    parser.add_argument("--events", type=int, default=50_000, help="click events the profiles worker applies at each size")
    parser.add_argument("--rate", type=float, default=10.0, help="HTTP requests a second (one API process sustains about 20)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/growth.png"), help="the chart (PNG)")
    parser.add_argument("--keep", type=Path, help="a folder to keep each bench's JSON in")
    parser.add_argument(
        "--only", help="sizes to measure now (comma-separated; empty: none, only draw); the others' figures are read from --keep"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.only is not None and not args.keep:
        raise UserError("--only reads the other sizes' figures from an earlier run: give its folder with --keep")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="shelfsight-growth-"))
    folder.mkdir(parents=True, exist_ok=True)
    for size in [int(size) for size in args.only.split(",") if size] if args.only is not None else sizes:
        measure(size, args.events, args.rate, folder)
    rows = [figures(size, folder) for size in sizes]
    (folder / "growth.json").write_text(json.dumps(rows, indent=2))
    chart(rows, args.rate, args.out)
    print(table(rows, args.rate))
    print(f"chart: {args.out}; figures: {folder / 'growth.json'}")
    return 0


if __name__ == "__main__":
    run_script(main, "bench/growth.py")
