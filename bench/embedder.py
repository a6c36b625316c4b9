"""Embedder throughput and listed→searchable latency, against the bare Predictor in the same run.

1. Baseline: the bare Predictor (decode + model, in this process, torch's default threads) on
   the catalogue, in the embedder's batch size; measured before and after the embedder runs.
2. End to end: the same products pre-loaded on products.listed; an in-process embedder
   (as shipped: on a CPU with its model processes, SHELFSIGHT_EMBEDDER_PROCESSES) indexes
   them into an embedded Qdrant shard, publishing products.indexed and committing offsets.
   Products/s from its first commit to its last (joining the group is not counted).
   Ratio = end to end / the mean of the two baselines.
4. With model processes, their bare pace too (decode here, model there, one batch at a time),
   and end to end against it.
3. Latency: products published at a steady rate while the embedder runs; latency is from
   the produce call to the moment its products.indexed event is read back — produced only
   after the upsert is flushed, so it bounds listed→searchable from above.

Needs the local stack (`shelfsight stack up`) and a checkpoint (`make model`, or --checkpoint).

    .venv/bin/python bench/embedder.py [--products 1000] [--rate 20] [--seconds 15]
"""

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from models.predictor import Predictor, ProductInput
from schemas import ProductListed, decode, encode
from services.bus.config import consumer_config, producer_config
from services.bus.producer import Producer
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.demo.catalogue import catalogue
from services.embedder.inference import predictor_pool
from services.embedder.service import build_embedder, load_predictor
from services.errors import run_script
from services.settings import load_settings


def _products(n: int, seed: int) -> list[ProductListed]:
    import json

    return [decode(ProductListed, json.dumps(p)) for p in catalogue(n, seed=seed)]


def baseline(predictor: Predictor, products: list[ProductListed], batch: int) -> float:
    inputs = [ProductInput(image=p.image, title=p.title, description=p.description) for p in products]
    predictor.predict(inputs[:batch])  # warm up
    started = time.perf_counter()
    for i in range(0, len(inputs), batch):
        predictor.predict(inputs[i : i + batch])
    return len(inputs) / (time.perf_counter() - started)


def baseline_processes(predictor: Predictor, products: list[ProductListed], batch: int, processes: int | None) -> float | None:
    """The same, with the model in the embedder's model processes (None where it runs in-process)."""
    pool = predictor_pool(predictor, processes)
    if pool is None:
        return None
    try:
        inputs = [ProductInput(image=p.image, title=p.title, description=p.description) for p in products]
        pool.predict_decoded(inputs[:batch], [predictor.decode(p) for p in inputs[:batch]])  # warm up
        started = time.perf_counter()
        for i in range(0, len(inputs), batch):
            part = inputs[i : i + batch]
            pool.predict_decoded(part, [predictor.decode(p) for p in part])
        return len(inputs) / (time.perf_counter() - started)
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="products/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()

    base = load_settings()
    settings = base.model_copy(
        update={
            "topic_prefix": f"bench-{uuid.uuid4().hex[:6]}.",
            "qdrant_path": Path(tempfile.mkdtemp(prefix="shelfsight-bench-")) / "qdrant",
            "embedder_metrics_port": 0,
            **({"model_dir": args.checkpoint} if args.checkpoint else {}),
        }
    )
    create_topics(settings)
    try:
        predictor = load_predictor(settings)
        products = _products(args.products, seed=1)
        bare = baseline(predictor, products, settings.embedder_batch_size)

        producer = Producer(producer_config(settings))
        for p in products:
            producer.send(settings.topic("products.listed"), encode(p))
        producer.flush(60)
        embedder = build_embedder(settings, predictor=predictor)
        stop = threading.Event()
        thread = threading.Thread(target=embedder.worker.run, args=(stop,), daemon=True)
        thread.start()
        # From the first commit to the last: joining the consumer group is not throughput. The
        # worker's own counter is read, not the group's lag: a lag query opens a Kafka client,
        # and one every 50 ms took CPU from the worker being measured (and from the broker).
        first_at = first_done = None
        while (done := embedder.worker.indexed_total) < len(products):
            if first_at is None and done > 0:
                first_at, first_done = time.perf_counter(), done
            time.sleep(0.05)
        end_to_end = (done - (first_done or 0)) / (time.perf_counter() - (first_at or time.perf_counter()))

        latencies = _latency(settings, producer, args.rate, args.seconds)
        stop.set()
        thread.join(60)
        # Measured again once the embedder is stopped: this host's pace drifts within minutes,
        # and the ratio is taken against the mean of the two.
        bare_after = baseline(predictor, products, settings.embedder_batch_size)
        bare_processes = baseline_processes(predictor, products, settings.embedder_batch_size, settings.embedder_processes)
        embedder.store.close()
        embedder.pool.shutdown()

        p50 = statistics.median(latencies)
        p95 = statistics.quantiles(latencies, n=20)[18]
        print(f"model {predictor.model_version}, batch {settings.embedder_batch_size}, {len(products)} products")
        processes = embedder.models.processes if embedder.models else 1
        mean_bare = (bare + bare_after) / 2
        print(f"bare Predictor         {mean_bare:8.1f} products/s   (before {bare:.1f}, after {bare_after:.1f})")
        print(f"Kafka → Qdrant → commit {end_to_end:7.1f} products/s   ratio {end_to_end / mean_bare:.2f}   model processes: {processes}")
        if bare_processes is not None:
            print(f"bare model processes   {bare_processes:8.1f} products/s   (end to end against them: {end_to_end / bare_processes:.2f})")
        print(f"listed → indexed at {args.rate:g}/s: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over {len(latencies)} products")
    finally:
        delete_topics(settings, [s.name for s in topic_specs(settings)])


def _latency(settings, producer: Producer, rate: float, seconds: float) -> list[float]:  # type: ignore[no-untyped-def]
    consumer = Consumer(consumer_config(settings, f"bench-{uuid.uuid4()}", **{"auto.offset.reset": "latest"}))
    consumer.subscribe([settings.topic("products.indexed")])
    while not consumer.assignment():
        consumer.poll(0.1)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    fresh = _products(int(rate * seconds), seed=99)
    interval = 1.0 / rate
    next_send = time.perf_counter()
    for i, product in enumerate(fresh):
        pid = f"latency-{i}"
        product = product.model_copy(update={"product_id": pid})
        while time.perf_counter() < next_send:
            message = consumer.poll(min(0.005, max(0.0, next_send - time.perf_counter())))
            if message is not None and not message.error() and message.key():
                seen.setdefault(message.key().decode(), time.perf_counter())
        sent[pid] = time.perf_counter()
        producer.send(settings.topic("products.listed"), encode(product))
        producer.client.flush(1)
        next_send += interval
    deadline = time.perf_counter() + 30
    while len(seen.keys() & sent.keys()) < len(sent) and time.perf_counter() < deadline:
        message = consumer.poll(0.05)
        if message is not None and not message.error() and message.key():
            seen.setdefault(message.key().decode(), time.perf_counter())
    consumer.close()
    return [seen[k] - sent[k] for k in sent if k in seen]


if __name__ == "__main__":
    run_script(main, "bench/embedder.py")
