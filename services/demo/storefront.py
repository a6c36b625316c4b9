"""`make demo`: the whole system on one machine, with simulated shoppers and a live storefront.

1. the local stack (Kafka + Redis) and the topics;
2. a catalogue made from the real Fashion-MNIST photographs;
3. the product model: the cached checkpoint, or a quick one trained now (with a progress bar);
4. `shelfsight serve` (embedder + API + Kafka responder) and `shelfsight profiles`, as processes;
5. the catalogue published to Kafka, and shoppers who browse and click through the API;
6. the storefront URL and live figures, until Ctrl-C (or ``--seconds``) stops everything.
"""

import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas.topics import PRODUCTS_LISTED
from services.bus.config import producer_config
from services.bus.producer import Producer
from services.bus.publish import Publisher
from services.bus.topics import create_topics
from services.demo.catalogue import write_catalogue
from services.demo.shoppers import ShopperCrowd
from services.errors import UserError
from services.recommender.http.tokens import mint
from services.settings import Settings
from services.stack import Stack
from services.stack.model import ensure_model
from services.stack.supervisor import Service, health, start_service, wait_healthy


def run_storefront_demo(
    settings: Settings, seconds: float | None = None, products: int = 1000, shoppers: int = 12, rate: float = 8.0
) -> int:
    print("== 1. local stack: Apache Kafka (KRaft) + redis-server")
    for s in Stack.from_settings(settings).up():
        print(f"   {s.name:<6} {s.address:<21} {s.state.value:<9} {s.version or ''}")
    create_topics(settings)

    folder = settings.cache_dir / "demo"
    catalogue_file = folder / "catalogue.jsonl"
    print(f"== 2. catalogue: {products} products with real Fashion-MNIST photographs")
    catalogue = _write_catalogue(catalogue_file, products)

    print("== 3. product model")
    checkpoint = ensure_model(settings)
    print(f"   {checkpoint}")

    keys = _DemoKeys.fresh()
    env = {**os.environ, "SHELFSIGHT_MODEL_DIR": str(checkpoint), **keys.env(), "PYTHONUNBUFFERED": "1"}
    base = f"http://{settings.api_host}:{settings.api_port}"
    print("== 4. services: `shelfsight serve` (embedder + API + Kafka responder) and `shelfsight profiles`")
    services = [start_service("serve", ["serve"], env, folder / "logs"), start_service("profiles", ["profiles"], env, folder / "logs")]
    stopping = {"now": False}

    def interrupt(*_: object) -> None:
        stopping["now"] = True

    previous = signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        wait_healthy(f"{base}/healthz", services[0])
        print(f"   serve     {base}   (logs: {services[0].log})")
        print(f"   profiles  running   (logs: {services[1].log})")
        _publish_catalogue(settings, catalogue_file)
        _print_storefront_links(base, keys.token_secret)
        _start_experiment(settings, base, keys.secret)
        crowd = ShopperCrowd(settings.api_host, settings.api_port, keys.secret, catalogue, shoppers)
        _run_shoppers(crowd, services, base, rate, seconds, lambda: stopping["now"])
    finally:
        signal.signal(signal.SIGINT, previous)
        print("== stopping the services …")
        codes = {s.name: s.stop() for s in reversed(services)}
        print("   " + ", ".join(f"{name} exited {code}" for name, code in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1


@dataclass(frozen=True)
class _DemoKeys:
    """This run's API keys and shopper-token secret: made up afresh, known only to the demo and its services."""

    publishable: str
    secret: str
    token_secret: str

    @classmethod
    def fresh(cls) -> "_DemoKeys":
        return cls(f"pk-demo-{secrets.token_hex(8)}", f"sk-demo-{secrets.token_hex(16)}", secrets.token_bytes(32).hex())

    def env(self) -> dict[str, str]:
        return {
            "SHELFSIGHT_PUBLISHABLE_KEYS": self.publishable,
            "SHELFSIGHT_API_KEYS": self.secret,
            "SHELFSIGHT_SHOPPER_TOKEN_SECRET": self.token_secret,
        }


def _write_catalogue(catalogue_file: Path, products: int) -> dict[str, str]:
    """Write the catalogue; each product's category, by product id."""
    write_catalogue(catalogue_file, products)
    catalogue = {}
    for line in catalogue_file.read_text().splitlines():
        product = json.loads(line)
        catalogue[product["product_id"]] = product["category_hint"]
    return catalogue


def _publish_catalogue(settings: Settings, catalogue_file: Path) -> None:
    print(f"== 5. publishing the catalogue to {settings.topic(PRODUCTS_LISTED.name)}")
    producer = Producer(producer_config(settings))
    topic = PRODUCTS_LISTED
    report = Publisher(producer, topic, settings.topic(topic.name), settings.topic(topic.dlq)).publish_file(catalogue_file)
    print(f"   {report.delivered} delivered; the embedder indexes them as they arrive")


def _print_storefront_links(base: str, token_secret: str) -> None:
    print("== 6. simulated shoppers at work. Open the storefront as one of them:")
    expires = int(time.time() + 12 * 3600)
    for user in ("shopper-0", "shopper-1", "shopper-2"):
        print(f"      {base}/?user={user}&token={mint(token_secret.encode(), user, expires)}")
    print("   (each link carries a shopper token, as a store's back end would mint it; the API documentation is at /docs)")
    print("   Ctrl-C stops the shoppers and the services; the stack keeps running (`make down` stops it).\n")


def _start_experiment(settings: Settings, base: str, secret_key: str) -> None:
    """An A/B test among the simulated shoppers: the learned ranking against the hand-set prior.
    A demo's earlier experiment is stopped first; a shop's own running experiment is left alone."""
    from datetime import UTC, datetime

    from schemas.experiments import ExperimentSpec, VariantSpec
    from services.redis_clients import redis_client
    from state import experiments as stored
    from state.keys import Keys

    client, keys, now = redis_client(settings), Keys.of(settings), datetime.now(UTC)
    for earlier in stored.load_all(client, keys):
        if earlier.experiment_id.startswith("demo-") and earlier.stopped_at is None:
            stored.stop(client, keys, earlier.experiment_id, now)
    spec = ExperimentSpec(
        experiment_id=f"demo-{now:%Y%m%d-%H%M%S}",
        variants=[VariantSpec(name="prior", share=0.5, ranking="prior"), VariantSpec(name="learned", share=0.5, ranking="learned")],
        description="make demo: the learned ranking against the hand-set prior",
    )
    try:
        stored.create(client, keys, spec, now)
    except stored.ExperimentError as error:
        print(f"   no demo experiment: {error}")
        return
    print(f"== 7. experiment {spec.experiment_id}: the learned ranking against the prior, half the shoppers each")
    print(f"      dashboard: {base}/experiments?experiment={spec.experiment_id}   (secret key for the page: {secret_key})")
    print(f"      or: shelfsight experiments report {spec.experiment_id}\n")


def _run_shoppers(
    crowd: ShopperCrowd, services: list[Service], base: str, rate: float, seconds: float | None, stopping: Callable[[], bool]
) -> None:
    """Step the shoppers ``rate`` times a second until ``stopping`` or ``seconds`` pass, with figures every 5 s;
    a UserError if a service stops."""
    started = last_print = time.monotonic()
    interval = 1.0 / rate
    while not stopping() and (seconds is None or time.monotonic() - started < seconds):
        for service in services:
            if not service.alive():
                raise UserError(f"{service.name} stopped; its log ({service.log}) ends:\n{service.tail()}")
        tick = time.monotonic()
        crowd.step()
        if tick - last_print >= 5.0:
            last_print = tick
            state = health(f"{base}/healthz")
            f = crowd.figures
            print(
                f"   t={tick - started:5.0f}s  indexed {state.get('indexed', '?'):>5}  events {f.events:>6}  "
                f"recommendations {f.requests:>5}  p50 {f.percentile(0.5):6.1f} ms  p99 {f.percentile(0.99):6.1f} ms  "
                f"errors {f.errors}",
                flush=True,
            )
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))
