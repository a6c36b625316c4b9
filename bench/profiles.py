"""Click-stream throughput per worker and click → profile latency, against a bare consumer.

1. N click events are pre-loaded on a fresh `clicks` topic (items already in Redis).
2. Baseline: a bare aiokafka consume loop reads the same N messages (no processing).
3. Worker: `shelfsight profiles` (one process, or `--workers N` in one consumer group on a
   topic of `--partitions` partitions) consumes them from the start; events/s is measured
   from the group's first commit to its last, so start-up is not counted.
4. Latency: single clicks at a steady rate, each timed from the produce call to the
   profile-updated notification, which Redis publishes in the same transaction as the write.
5. Memory: MEMORY USAGE of a shopper's keys and of an item's keys, averaged, and the
   worker's peak resident memory (VmHWM) after the run.

Needs the local stack (`shelfsight stack up`). With `--redis-cluster N`, Redis is a local
3-node Redis Cluster (services/stack/redis_cluster.py, on the same cores) and the workers run
with `SHELFSIGHT_REDIS_CLUSTER=true SHELFSIGHT_REDIS_SHARDS=N`, as a clustered deployment would.

    .venv/bin/python bench/profiles.py [--events 50000] [--shoppers 5000] [--items 2000] [--rate 200] [--seconds 10] [--workers 1]
                                       [--partitions 4] [--redis-cluster 4] [--json PATH]
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.bus.config import producer_config
from services.bus.consume import group_lag
from services.bus.producer import Producer
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.errors import run_script
from services.ops.memory import peak_rss_mb
from services.profiles.app import GROUP_ID
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from services.redis_clients import async_redis, sync_redis
from services.settings import load_settings
from services.stack.redis_cluster import LocalRedisCluster
from state.keys import Keys


def _click(i: int, now: datetime, users: int, items: int, user: str | None = None) -> bytes:
    return json.dumps(
        {
            "event_id": f"e{i}",
            "user_id": user or f"u{i % users}",
            "product_id": f"p{(i * 7919) % items}",
            "kind": ("view", "view", "click", "add_to_cart", "purchase", "dismiss")[i % 6],
            "occurred_at": (now - timedelta(milliseconds=i)).isoformat(),
            "session_id": f"s{i % 900}",
        }
    ).encode()


async def _items(settings, keys: Keys, items: int) -> None:  # type: ignore[no-untyped-def]
    client = async_redis(settings.redis_url, settings.redis_cluster)
    state = ProfileState(client, keys, ClickParams())
    rng = np.random.default_rng(0)
    for start in range(0, items, 32):  # a few in flight at a time: the client's pool is bounded
        vectors = rng.normal(size=(min(items, start + 32) - start, 256)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await asyncio.gather(
            *(state.put_item(f"p{i}", v.tolist(), f"c{i % 10}", float(10 + i % 90), True) for i, v in enumerate(vectors, start))
        )
    await client.aclose()


async def _bare(settings, topic: str, n: int) -> float:  # type: ignore[no-untyped-def]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    partitions = [TopicPartition(topic, p) for p in admin.list_topics(topic, timeout=10).topics[topic].partitions]
    if not partitions:
        await consumer.stop()
        raise SystemExit(f"topic {topic} has no partitions")
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    seen, started = 0, time.perf_counter()
    while seen < n:
        batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shoppers", type=int, default=5000, help="distinct shoppers among the events")
    parser.add_argument("--items", type=int, default=2000, help="products clicked among the events (their copies written first)")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench/growth.py reads them)")
    parser.add_argument("--workers", type=int, default=1, help="profiles processes in the consumer group")
    parser.add_argument("--partitions", type=int, default=None, help="partitions per topic (default: the settings')")
    parser.add_argument(
        "--redis-cluster",
        type=int,
        default=0,
        metavar="GROUPS",
        help="run on a local 3-node Redis Cluster, the state split into GROUPS key groups",
    )
    args = parser.parse_args()
    base = load_settings()
    cluster = None
    redis_env: dict[str, str] = {}
    if args.redis_cluster:
        cluster = LocalRedisCluster.on_free_ports(base.cache_dir / "bench-redis-cluster").up()
        redis_env = {
            "SHELFSIGHT_REDIS_URL": cluster.url,
            "SHELFSIGHT_REDIS_CLUSTER": "true",
            "SHELFSIGHT_REDIS_SHARDS": str(args.redis_cluster),
        }
        base = base.model_copy(update={"redis_url": cluster.url, "redis_cluster": True, "redis_shards": args.redis_cluster})
    settings = base.model_copy(
        update={"topic_prefix": f"bench-{uuid.uuid4().hex[:6]}.", **({"topic_partitions": args.partitions} if args.partitions else {})}
    )
    prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    keys = Keys(prefix, settings.redis_shards, settings.redis_cluster)
    create_topics(settings)
    topic = settings.topic("clicks")
    workers: list[subprocess.Popen] = []
    r = sync_redis(settings.redis_url, settings.redis_cluster)
    # per node: Redis's own counters, and PUBLISH reaching every node's subscribers
    nodes = [redis.Redis(host="127.0.0.1", port=p) for p in cluster.ports] if cluster else [r]
    try:
        asyncio.run(_items(settings, keys, args.items))
        producer = Producer(producer_config(settings))
        now = datetime.now(UTC)
        for i in range(args.events):
            producer.client.produce(topic, key=f"u{i % args.shoppers}".encode(), value=_click(i, now, args.shoppers, args.items))
            if i % 10_000 == 0:
                producer.client.flush(60)  # the local queue holds 100,000 messages
        producer.flush(120)
        bare = asyncio.run(_bare(settings, topic, args.events))

        env = {
            **os.environ,
            "SHELFSIGHT_TOPIC_PREFIX": settings.topic_prefix,
            "SHELFSIGHT_REDIS_PREFIX": prefix,
            "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
            "SHELFSIGHT_LOG_LEVEL": "WARNING",
            **redis_env,
        }
        redis_before = _redis_busy(nodes)
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", "profiles"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for _ in range(args.workers)
        ]
        group = settings.group(GROUP_ID)
        first_at = first_lag = None
        while True:
            lag = group_lag(settings, topic, group)
            if first_at is None and lag < args.events:
                first_at, first_lag = time.perf_counter(), lag
            if lag == 0:
                break
            time.sleep(0.5)  # each look opens a Kafka client: not too often, it shares the cores
        rate = (first_lag or 0) / max(time.perf_counter() - (first_at or time.perf_counter()), 1e-9)
        redis_after = _redis_busy(nodes)
        scripts_s = (redis_after[0] - redis_before[0]) / 1e6
        commands = redis_after[1] - redis_before[1]

        latencies = _latency(settings, nodes[0], keys, producer, args.rate, args.seconds, args.items)
        shopper, item = _memory(r, keys, min(args.shoppers, args.events), args.items)
        peak_mb = max(peak_rss_mb(w.pid) for w in workers)
        p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
        where = f"a local 3-node Redis Cluster, {args.redis_cluster} key groups" if cluster else "one Redis"
        print(f"{args.events} click events, {args.shoppers} shoppers, {args.items} items (256-d vectors), on {where}")
        print(f"bare aiokafka consume loop  {bare:9.0f} events/s")
        print(f"profiles workers ({args.workers}, {settings.topic_partitions} partitions) {rate:9.0f} events/s   ratio {rate / bare:.3f}")
        print(
            f"Redis's own time in the worker's scripts: {scripts_s:.1f} s for {args.events} events "
            f"({scripts_s / args.events * 1e6:.0f} µs an event; the worker ran {args.events / rate:.1f} s), "
            f"{commands / args.events:.0f} Redis commands an event"
        )
        print(f"click → profile in Redis at {args.rate:g}/s: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms over {len(latencies)} clicks")
        print(f"peak resident memory of a worker: {peak_mb:.0f} MB")
        print(f"Redis memory: {shopper:.0f} bytes per shopper, {item:.0f} bytes per item (item hash + session and history neighbours)")
        pair_members, pair_sets = _pair_sets(r, keys)
        print(f"pair sets: {pair_members} members in {pair_sets} sets (bound: SHELFSIGHT_COVISIT_MAX_PAIRS members in all)")
        if args.json:
            figures = {"events": args.events, "shoppers": args.shoppers, "items": args.items, "events_per_s": rate, "bare_per_s": bare}
            figures |= {"redis_bytes_per_shopper": shopper, "redis_bytes_per_item": item, "worker_peak_rss_mb": peak_mb}
            figures |= {"pair_members": pair_members, "pair_sets": pair_sets}
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        for key in r.scan_iter(f"{prefix}*", count=10_000):
            r.delete(key)
        delete_topics(settings, [s.name for s in topic_specs(settings)])
        if cluster:
            cluster.down()


def _redis_busy(nodes: list[redis.Redis]) -> tuple[int, int]:
    """(microseconds Redis spent in scripts, commands it ran, scripts' inner commands included) so
    far, over every node."""
    scripts = commands = 0
    for node in nodes:
        stats = node.info("commandstats")
        scripts += sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_eval", "cmdstat_evalsha"))
        commands += sum(v["calls"] for v in stats.values())
    return scripts, commands


def _latency(settings, r: redis.Redis, keys: Keys, producer: Producer, rate: float, seconds: float, items: int) -> list[float]:  # type: ignore[no-untyped-def]
    listener = r.pubsub()
    listener.subscribe(keys.updates_channel)
    listener.get_message(timeout=2)
    sent: dict[str, float] = {}
    got: dict[str, float] = {}
    now = datetime.now(UTC)
    next_send = time.perf_counter()
    for i in range(int(rate * seconds)):
        user = f"latency-{i}"
        while time.perf_counter() < next_send:
            message = listener.get_message(timeout=max(0.0, next_send - time.perf_counter()))
            if message and message["type"] == "message":
                got.setdefault(message["data"].decode(), time.perf_counter())
        sent[user] = time.perf_counter()
        producer.client.produce(settings.topic("clicks"), key=user.encode(), value=_click(10_000_000 + i, now, 1, items, user))
        producer.client.poll(0)
        next_send += 1.0 / rate
    producer.flush(10)
    deadline = time.perf_counter() + 10
    while len(got.keys() & sent.keys()) < len(sent) and time.perf_counter() < deadline:
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "message":
            got.setdefault(message["data"].decode(), time.perf_counter())
    listener.close()
    return [got[u] - sent[u] for u in sent if u in got]


def _pair_sets(r: redis.Redis, keys: Keys) -> tuple[int, int]:
    """Members counted in all pair sets, and the sets the ledgers list, over every key group (state/pairs.py)."""
    return sum(int(r.get(g.pair_count) or 0) for g in keys.groups()), sum(int(r.zcard(g.pair_sets)) for g in keys.groups())


def _memory(r: redis.Redis, keys: Keys, users: int, items_in_all: int) -> tuple[float, float]:
    """Mean MEMORY USAGE of 100 shoppers the events reached and of 100 items."""
    shoppers = [f"u{i}" for i in range(0, users, max(1, users // 100))]
    items = [f"p{i}" for i in range(0, items_in_all, max(1, items_in_all // 100))]

    def usage(key: str) -> int:
        return int(r.memory_usage(key) or 0)

    per_shopper = statistics.mean(
        usage(keys.user(u)) + usage(keys.recent(u)) + usage(keys.purchased(u)) + usage(keys.dismissed(u)) + usage(keys.seen_items(u))
        for u in shoppers
    )
    per_item = statistics.mean(
        usage(keys.item(i)) + sum(usage(g.neighbours(i)) + usage(g.history(i)) for g in keys.groups()) for i in items
    )
    return per_shopper, per_item


if __name__ == "__main__":
    run_script(main, "bench/profiles.py")
