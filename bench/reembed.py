"""What `shelfsight reembed` costs a running shop, against the same shop in the same run.

Setup: N products of the demo catalogue (real Fashion-MNIST photos, inline) on products.listed,
and `shelfsight serve` (embedded shard, its own embedder) as a process, waited for until it has
indexed them all. The new version is the checkpoint with its fusion weights nudged and saved
again: a new model version, with exactly the work per product of a model retrained on the same
backbone (mirror averaging as the checkpoint chose).

1. Bare baseline: the Predictor of the new version alone on (the first 2,000 of) the same
   products, in the embedder's batch size (decode + model), in this process before anything
   else runs.
2. Serving before: GET /v1/users/{id}/recommendations at a fixed rate (open loop, timed from
   each request's scheduled send) for ``--seconds``: p50 and p99.
3. `shelfsight reembed --model CHECKPOINT` as a process, as an operator runs it, while the same
   load goes on: p50 and p99 during the backfill (and their ratio to before, with a bootstrap
   95 % interval), the catch-up's products/s (from the command's
   own report) and its ratio to the bare Predictor, the command's wall time, its peak RSS, and
   the disk of both collections.

Needs the local stack (`shelfsight stack up`) and a checkpoint (`make model`, or --checkpoint).

    .venv/bin/python bench/reembed.py [--products 2000] [--rate 10] [--seconds 20] [--checkpoint DIR]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from models.checkpoint import load_checkpoint, read_card, save_checkpoint
from models.predictor import Predictor
from schemas import ProductListed, decode, encode
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.demo.catalogue import catalogue
from services.embedder.service import image_policy
from services.errors import run_script
from services.settings import load_settings
from services.stack.processes import free_port

sys.path.insert(0, str(Path(__file__).parent))
from embedder import baseline  # bench/embedder.py: the bare Predictor, the same way
from serve import load, percentiles


def retrained(checkpoint: Path, out: Path) -> Path:
    """A copy of ``checkpoint`` whose fusion weights moved a little: another model version, the same cost."""
    import torch

    model, card = load_checkpoint(checkpoint)
    with torch.no_grad():
        for parameter in model.fusion.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-3)
    card.model_version, card.created_at = "", ""
    return save_checkpoint(out, model, card)


def bare(checkpoint: Path, products: list[ProductListed], batch: int) -> float:
    return baseline(Predictor.load(checkpoint, image_policy=image_policy(load_settings())), products, batch)


def health(url: str) -> dict:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            return json.loads(answer.read())
    except OSError:
        return {}


def peak_rss_mb_of(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.2):
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        found = re.search(r"VmRSS:\s+(\d+) kB", text)
        if found:
            peak[0] = max(peak[0], int(found.group(1)) / 1024)


def ratio_interval(during: list[float], before: list[float], q: float, rounds: int = 2000) -> tuple[float, float]:
    """A bootstrap 95 % interval of quantile ``q`` during over the same quantile before."""
    import numpy as np

    rng = np.random.default_rng(0)
    d, b = np.asarray(during), np.asarray(before)
    ratios = [np.quantile(rng.choice(d, d.size), q) / np.quantile(rng.choice(b, b.size), q) for _ in range(rounds)]
    low, high = np.quantile(ratios, [0.025, 0.975])
    return float(low), float(high)


def disk_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10.0, help="recommendation requests a second, before and during")
    parser.add_argument("--seconds", type=float, default=20.0, help="of load before the re-embed")
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()

    settings = load_settings()
    checkpoint = (args.checkpoint or settings.checkpoint).resolve()
    folder = Path(tempfile.mkdtemp(prefix="shelfsight-bench-reembed-"))
    new = retrained(checkpoint, folder / "retrained")
    card, new_card = read_card(checkpoint), read_card(new)
    split = "test" if args.products <= 10_000 else "train"  # the test split has 10,000 photos
    products = [decode(ProductListed, json.dumps(p)) for p in catalogue(args.products, split=split, seed=3)]
    print(f"{len(products)} products; live {card.model_version}, new {new_card.model_version} (mirror averaging {card.mirror_average})")
    baseline = bare(new, products[:2000], settings.embedder_batch_size)  # a rate: 2,000 products tell it
    print(f"1. bare Predictor (new version)     {baseline:8.1f} products/s")

    port = free_port()
    run = settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:6]}."})
    env = {
        **os.environ,
        "SHELFSIGHT_TOPIC_PREFIX": run.topic_prefix,
        "SHELFSIGHT_REDIS_PREFIX": f"bench-reembed-{port}:",
        "SHELFSIGHT_MODEL_DIR": str(checkpoint),
        "SHELFSIGHT_QDRANT_PATH": str(folder / "products"),
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_STATE_SECRET": "bench-reembed-secret-01",
        "SHELFSIGHT_LOG_LEVEL": "WARNING",
    }
    create_topics(run)
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([sys.executable, "-m", "services.cli", "serve"], env=env, stderr=(folder / "serve.log").open("wb"))
    try:
        producer = Producer(producer_config(run))
        for p in products:
            producer.send(run.topic("products.listed"), encode(p))
        producer.flush(60)
        while int(health(url).get("indexed") or 0) < len(products):
            if serve.poll() is not None:
                raise SystemExit((folder / "serve.log").read_text()[-2000:])
            time.sleep(1.0)
        users = [f"shopper-{n}" for n in range(50)]
        load([port], users, args.rate, 2.0)  # warm up
        before, _ = load([port], users, args.rate, args.seconds)
        p50, p99 = percentiles(before)
        print(f"2. serving before, {args.rate:g}/s      p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({len(before)} requests)")
        during, report = reembed_under_load(env, new, port, users, args.rate)
        d50, d99 = percentiles(during)
        print(f"3. serving during the re-embed     p50 {d50:7.2f} ms  p99 {d99:7.2f} ms  ({len(during)} requests)")
        (l50, h50), (l99, h99) = (ratio_interval(during, before, q) for q in (0.5, 0.99))
        print(f"   ratio during / before           p50 {d50 / p50:.2f} [{l50:.2f}, {h50:.2f}]  p99 {d99 / p99:.2f} [{l99:.2f}, {h99:.2f}]")
        caught_up = len(products) / report["catch_up_s"]
        print(f"   catch-up                        {caught_up:8.1f} products/s   ratio to bare {caught_up / baseline:.2f}")
        print(f"   command                         {report['wall_s']:6.1f} s in all, peak RSS {report['rss_mb']:.0f} MB")
        filled = next(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("products-"))
        print(f"   disk                            {disk_mb(filled):6.1f} MB new collection, {disk_mb(folder / 'products'):.1f} MB old")
    finally:
        serve.terminate()
        serve.wait(60)
        delete_topics(run, [s.name for s in topic_specs(run)])
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def reembed_under_load(
    env: dict[str, str], checkpoint: Path, port: int, users: list[str], rate: float
) -> tuple[list[float], dict[str, float]]:
    """The command as a process while the load goes on, in 2 s rounds until it exits."""
    started = time.perf_counter()
    command = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "reembed", "--model", str(checkpoint)], env=env, stderr=subprocess.PIPE, text=True
    )
    stop, peak = threading.Event(), [0.0]
    watcher = threading.Thread(target=peak_rss_mb_of, args=(command.pid, stop, peak), daemon=True)
    watcher.start()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(command.stderr or []), daemon=True)
    reader.start()
    latencies: list[float] = []
    while command.poll() is None:
        latencies += load([port], users, rate, 2.0)[0]
    wall = time.perf_counter() - started
    stop.set()
    reader.join(10)
    text = "".join(stderr)
    if command.returncode != 0:
        raise SystemExit(f"reembed failed: {text[-2000:]}")
    found = re.search(r"up to date with products.listed \(([\d.]+) s\)", text)
    return latencies, {"wall_s": wall, "rss_mb": peak[0], "catch_up_s": float(found.group(1)) if found else wall}


if __name__ == "__main__":
    run_script(main, "bench/reembed.py")
