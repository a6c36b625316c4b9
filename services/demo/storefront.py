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
import subprocess
import sys
import time
import urllib.request
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

DEMO_TRAIN_PER_CLASS = 600


@dataclass
class Service:
    name: str
    process: subprocess.Popen  # type: ignore[type-arg]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(5)
        return int(self.process.returncode)

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_service(name: str, args: list[str], env: dict[str, str], logs: Path) -> Service:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    handle = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", *args], env=env, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the services in order
    )
    return Service(name, process, log)


def ensure_model(settings: Settings) -> Path:
    """The checkpoint `make model` trains; else a quick demo model, trained once and cached.
    Checkpoints from before text was part of every product are passed over (retrained)."""
    if _carries_text(settings.checkpoint):
        return settings.checkpoint
    if (settings.checkpoint / "model_card.json").exists():
        print(f"   {settings.checkpoint} predates text in every product vector: `make model` retrains it")
    quick = settings.cache_dir / "checkpoints" / "fashion-mnist-demo"
    if _carries_text(quick):
        return quick
    from models.data import fashion_mnist
    from models.training import TrainConfig, train

    if not (fashion_mnist.DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        raise UserError("Fashion-MNIST is missing: run `make demo` (it installs dataset-fashion-mnist) or apt-get install it")
    data = settings.cache_dir / "datasets" / f"fashion-mnist-{DEMO_TRAIN_PER_CLASS}"
    if not (data / "train" / "texts.csv").exists():
        print(f"   exporting {DEMO_TRAIN_PER_CLASS} photos per category …")
        fashion_mnist.export_image_folder(data, per_class=DEMO_TRAIN_PER_CLASS)
    print("   training a quick demo model (frozen EfficientNet-Lite0, 64 px); `make model` trains the full one")
    result = train(data / "train", TrainConfig(input_size=64, epochs=8, batch_size=128), out=quick, progress=True)
    print(f"   validation accuracy {result.best_val_accuracy:.1%} in {result.seconds:.0f} s")
    return quick


def _carries_text(checkpoint: Path) -> bool:
    from models.checkpoint import CheckpointError, read_card

    try:
        return read_card(checkpoint).text_model is not None
    except CheckpointError:
        return False


def wait_healthy(url: str, service: Service, timeout: float = 180.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise UserError(f"{service.name} stopped while starting; its log ({service.log}) ends:\n{service.tail()}")
        report = health(url)
        if report:
            return report
        time.sleep(0.5)
    raise UserError(f"{service.name} did not become healthy at {url} within {timeout:.0f} s; see {service.log}")


def health(url: str) -> dict[str, object]:
    """The /healthz report when the service answers healthy; empty otherwise (503 raises OSError)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return {}


def run_storefront_demo(settings: Settings, seconds: float | None = None, products: int = 1000, shoppers: int = 12,
                        rate: float = 8.0) -> int:
    print("== 1. local stack: Apache Kafka (KRaft) + redis-server")
    for s in Stack.from_settings(settings).up():
        print(f"   {s.name:<6} {s.address:<21} {s.state.value:<9} {s.version or ''}")
    create_topics(settings)

    folder = settings.cache_dir / "demo"
    catalogue_file = folder / "catalogue.jsonl"
    print(f"== 2. catalogue: {products} products with real Fashion-MNIST photographs")
    write_catalogue(catalogue_file, products)
    catalogue = {}
    for line in catalogue_file.read_text().splitlines():
        product = json.loads(line)
        catalogue[product["product_id"]] = product["category_hint"]

    print("== 3. product model")
    checkpoint = ensure_model(settings)
    print(f"   {checkpoint}")

    publishable, secret = f"pk-demo-{secrets.token_hex(8)}", f"sk-demo-{secrets.token_hex(16)}"
    token_secret = secrets.token_bytes(32).hex()
    env = {**os.environ, "SHELFSIGHT_MODEL_DIR": str(checkpoint), "SHELFSIGHT_PUBLISHABLE_KEYS": publishable,
           "SHELFSIGHT_API_KEYS": secret, "SHELFSIGHT_SHOPPER_TOKEN_SECRET": token_secret, "PYTHONUNBUFFERED": "1"}
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

        print(f"== 5. publishing the catalogue to {settings.topic(PRODUCTS_LISTED.name)}")
        producer = Producer(producer_config(settings))
        topic = PRODUCTS_LISTED
        report = Publisher(producer, topic, settings.topic(topic.name), settings.topic(topic.dlq)).publish_file(catalogue_file)
        print(f"   {report.delivered} delivered; the embedder indexes them as they arrive")

        print("== 6. simulated shoppers at work. Open the storefront as one of them:")
        expires = int(time.time() + 12 * 3600)
        for user in ("shopper-0", "shopper-1", "shopper-2"):
            print(f"      {base}/?user={user}&token={mint(token_secret.encode(), user, expires)}")
        print("   (each link carries a shopper token, as a store's back end would mint it; the API documentation is at /docs)")
        print("   Ctrl-C stops the shoppers and the services; the stack keeps running (`make down` stops it).\n")
        crowd = ShopperCrowd(settings.api_host, settings.api_port, secret, catalogue, shoppers)
        started = last_print = time.monotonic()
        interval = 1.0 / rate
        while not stopping["now"] and (seconds is None or time.monotonic() - started < seconds):
            for service in services:
                if not service.alive():
                    raise UserError(f"{service.name} stopped; its log ({service.log}) ends:\n{service.tail()}")
            tick = time.monotonic()
            crowd.step()
            if tick - last_print >= 5.0:
                last_print = tick
                state = health(f"{base}/healthz")
                f = crowd.figures
                print(f"   t={tick - started:5.0f}s  indexed {state.get('indexed', '?'):>5}  events {f.events:>6}  "
                      f"recommendations {f.requests:>5}  p50 {f.percentile(0.5):6.1f} ms  p99 {f.percentile(0.99):6.1f} ms  "
                      f"errors {f.errors}", flush=True)
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    finally:
        signal.signal(signal.SIGINT, previous)
        print("== stopping the services …")
        codes = {s.name: s.stop() for s in reversed(services)}
        print("   " + ", ".join(f"{name} exited {code}" for name, code in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1
