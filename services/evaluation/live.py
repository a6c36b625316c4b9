"""`evaluate-recs --live`: the stream through the running services, as a shop would send it.

`shelfsight serve` and `shelfsight profiles` run as their own processes, on topics, Redis keys
and a Qdrant shard of this run's own (nothing of a shop's state is touched). The catalogue and
the events go in through `POST /v1/events`; every question is a `GET
/v1/users/{id}/recommendations` over HTTP. Nothing is driven from inside: the worker batches,
checkpoints and the API reloads and refits on their own clocks, so the figure is what a shop
sees at that event rate.

- The events before the served part are the shop's history: posted as fast as the API takes
  them, then the run waits until the worker has applied them and ``serve`` has reloaded its
  learners.
- The served part is posted at ``rate`` events per second (its actual rate is reported): before
  each choice the shopper's top k is asked for, then the event is posted.
- The baselines answer the same questions from the same events, in this process
  (``scoring.Scoreboard``); candidate sources and recall@100 are not visible through the API
  and are measured by the in-process replay only.
"""

import http.client
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from schemas import ClickEvent, ProductListed
from schemas.topics import CLICKS, PRODUCTS_INDEXED
from services.bus.consume import group_lag
from services.bus.topics import create_topics, delete_topics, topic_specs
from services.errors import UserError
from services.evaluation.logs import Dataset
from services.evaluation.replay import ReplayResult, _settings_used, ranker_summary
from services.evaluation.scoring import ReplayConfig, Scoreboard
from services.profiles.app import GROUP_ID as PROFILES_GROUP
from services.redis_clients import sync_redis
from services.settings import Settings
from services.stack.supervisor import Service, health, start_service, wait_healthy
from state.checkpoints import checkpoint_names, load
from state.keys import Keys

MODE = "live: `shelfsight serve` and `shelfsight profiles` as processes; events in over POST /v1/events, recommendations over HTTP"
BATCH = 500  # events per POST while loading history (the API's most)


@dataclass(frozen=True)
class Deployment:
    """Where this run's services live: settings with topics, keys and a shard of its own."""

    settings: Settings
    env: dict[str, str]
    base: str
    secret_key: str
    logs: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployment(settings: Settings, checkpoint: Path, rate: float, workdir: Path) -> Deployment:
    run = uuid.uuid4().hex[:8]
    port = _free_port()
    key = f"sk-eval-{secrets.token_hex(16)}"
    own = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}eval-{run}.",
            "redis_prefix": f"{settings.redis_prefix}eval-{run}:",
            "api_port": port,
        }
    )
    overrides = {
        "SHELFSIGHT_TOPIC_PREFIX": own.topic_prefix,
        "SHELFSIGHT_REDIS_PREFIX": own.redis_prefix,
        "SHELFSIGHT_API_PORT": str(port),
        "SHELFSIGHT_API_HOST": "127.0.0.1",
        "SHELFSIGHT_MODEL_DIR": str(checkpoint),
        "SHELFSIGHT_QDRANT_PATH": str(workdir / "qdrant"),
        "SHELFSIGHT_QDRANT_URL": "",
        "SHELFSIGHT_API_KEYS": key,
        "SHELFSIGHT_PUBLISHABLE_KEYS": "",
        "SHELFSIGHT_STATE_SECRET": secrets.token_hex(24),
        "SHELFSIGHT_EMBEDDER_METRICS_PORT": "0",
        "SHELFSIGHT_PROFILES_METRICS_PORT": "0",
        # This run is the API's only client, from one address: the limits meant for a crowd would throttle it.
        "SHELFSIGHT_API_CLIENT_REQUESTS_PER_S": str(max(100.0, 4 * rate)),
        "SHELFSIGHT_SERVED_LOG_PER_S": str(max(100.0, 4 * rate)),
        "PYTHONUNBUFFERED": "1",
    }
    env = {k: v for k, v in {**os.environ, **overrides}.items() if v != ""}
    return Deployment(own, env, f"http://127.0.0.1:{port}", key, settings.cache_dir / "eval-live" / run)


class Api:
    """One keep-alive HTTP connection to the run's `serve`."""

    def __init__(self, base: str, key: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self._headers = {"X-API-Key": key, "Content-Type": "application/json"}

    def post(self, events: list[dict[str, object]]) -> None:
        status, body = self._call("POST", "/v1/events", json.dumps(events).encode())
        if status != 202:
            raise UserError(f"POST /v1/events answered {status}: {body[:300]!r}")

    def recommend(self, user_id: str, k: int) -> list[str]:
        return [item["product_id"] for item in self.answer(user_id, k)["items"]]

    def answer(self, user_id: str, k: int) -> dict[str, Any]:
        """The whole response (items, request id, experiment)."""
        return self.get_json(f"/v1/users/{user_id}/recommendations?k={k}")

    def get_json(self, path: str) -> dict[str, Any]:
        status, body = self._call("GET", path, None)
        if status != 200:
            raise UserError(f"GET {path} answered {status}: {body[:300]!r}")
        return dict(json.loads(body))

    def _call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile is opened again once
            try:
                self._connection.request(method, path, body=body, headers=self._headers)
                answer = self._connection.getresponse()
                return answer.status, answer.read()
            except (ConnectionError, http.client.HTTPException):
                self._connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._connection.close()


@contextmanager
def _terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM ends the run as Ctrl-C does, through the clauses that stop the services it started
    and remove their topics and keys (the default would leave them running)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        sys.exit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def running(settings: Settings, checkpoint: Path, rate: float) -> Iterator[tuple[Deployment, list[Service]]]:
    """`serve` and `profiles` on this run's own topics, keys and shard; everything removed afterwards."""
    with _terminated_as_interrupted(), tempfile.TemporaryDirectory(prefix="shelfsight-live-") as folder:
        where = deployment(settings, checkpoint, rate, Path(folder))
        create_topics(where.settings)
        services: list[Service] = []
        try:
            services.append(start_service("serve", ["serve"], where.env, where.logs))
            services.append(start_service("profiles", ["profiles"], where.env, where.logs))
            wait_healthy(f"{where.base}/healthz", services[0])
            yield where, services
        finally:
            for service in reversed(services):
                service.stop()
            delete_topics(where.settings, [spec.name for spec in topic_specs(where.settings)])
            client = sync_redis(settings.redis_url, settings.redis_cluster)
            batch: list[bytes] = []
            for key in client.scan_iter(f"{where.settings.redis_prefix}*", count=1000):
                batch.append(key)
                if len(batch) == 1000:  # one round trip a thousand keys: a long run leaves 100,000s
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
            client.close()


class LiveRun:
    """One live evaluation: load the catalogue and history, then ask and post at the rate."""

    def __init__(self, dataset: Dataset, config: ReplayConfig, where: Deployment, services: list[Service]) -> None:
        self.dataset, self.config, self.where, self.services = dataset, config, where, services
        self.api = Api(where.base, where.secret_key)
        self.board = Scoreboard(dataset, config)
        self.products = sorted(dataset.products, key=lambda p: p.listed_at)
        self.listed = 0

    def go(self, progress: bool) -> ReplayResult:
        started = time.perf_counter()
        events, board = self.dataset.events, self.board
        result = ReplayResult(
            self.dataset.name,
            self.config,
            _settings_used(self.where.settings),
            board.tallies,
            board.cold,
            len(self.products),
            len(events),
            0,
            0.0,
            scored_span=board.scored_span(),
            mode=MODE,
        )
        try:
            self.load_history(events[: board.opening], progress)
            self._serve(events, result, progress)
            result.ranker = self._ranker()
        finally:
            self.api.close()
        result.seconds = time.perf_counter() - started
        result.dropped = board.dropped
        return result

    def load_history(self, history: list[ClickEvent], progress: bool) -> None:
        """The catalogue up to the history's end and the history, posted; then until both are applied."""
        first = history[0].occurred_at.timestamp() if history else float("inf")
        self._list_until(first if history else self._opening_time())
        self._wait_indexed()
        for start in tqdm(range(0, len(history), BATCH), desc="history", disable=not progress, mininterval=1.0):
            chunk = history[start : start + BATCH]
            self._list_until(chunk[-1].occurred_at.timestamp())
            self.api.post([_wire(e) for e in chunk])
            for event in chunk:
                self.board.learn(event)
        self._wait_applied(len(history))

    def _serve(self, events: list[ClickEvent], result: ReplayResult, progress: bool) -> None:
        board, config = self.board, self.config
        began = time.monotonic()
        part = events[board.opening : max(board.served, default=board.opening - 1) + 1]  # nothing after the last question
        for offset, event in enumerate(tqdm(part, desc="live", unit="event", disable=not progress, mininterval=1.0)):
            n = board.opening + offset
            self._pace(began + offset / config.rate)
            self._list_until(event.occurred_at.timestamp())
            if n in board.served:
                t0 = time.perf_counter()
                items = self.api.recommend(event.user_id, config.k)
                result.latency_ms.append((time.perf_counter() - t0) * 1000)
                result.served += 1
                if n in board.scored:
                    board.score(event, items, items, lambda _items: None)
            self.api.post([_wire(event)])
            board.learn(event)
        result.settings["achieved_rate"] = round(len(part) / max(1e-9, time.monotonic() - began), 2)

    def _ranker(self) -> dict[str, object]:
        """What the workers' learned ranking learned, from their newest checkpoint in Redis."""
        settings = self.where.settings
        client = sync_redis(settings.redis_url, settings.redis_cluster)
        try:
            keys = Keys.of(settings)
            secret = self.where.env["SHELFSIGHT_STATE_SECRET"].encode()
            names = checkpoint_names(client, keys, time.time())
            blobs = [b for b in client.mget([keys.learners(n) for n in names]) if isinstance(b, bytes)]
        finally:
            client.close()
        learners = [load(blob, secret) for blob in blobs]
        return ranker_summary(max(learners, key=lambda x: x.events)) if learners else {}

    def _pace(self, due: float) -> None:
        for service in self.services:
            if not service.alive():
                raise UserError(f"{service.name} stopped during the run; its log ({service.log}) ends:\n{service.tail()}")
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the shop's clock: events arrive at the rate, not as fast as they can

    def _list_until(self, at: float) -> None:
        """Products whose listing time has come, posted as the store would list them."""
        due: list[ProductListed] = []
        while self.listed < len(self.products) and self.products[self.listed].listed_at.timestamp() <= at:
            due.append(self.products[self.listed])
            self.listed += 1
        for start in range(0, len(due), 50):  # inline pictures: keep each body well under the API's limit
            self.api.post([json.loads(p.model_dump_json()) for p in due[start : start + 50]])
        self.board.listed(due)

    def _opening_time(self) -> float:
        events = self.dataset.events
        return events[self.board.opening].occurred_at.timestamp() if self.board.opening < len(events) else float("inf")

    def _wait_indexed(self, timeout: float = 900.0) -> None:
        """Until `serve` has indexed what was listed and the worker knows every item."""
        wanted = self.listed
        group = self.where.settings.group(PROFILES_GROUP)
        topic = self.where.settings.topic(PRODUCTS_INDEXED.name)
        self._until(
            lambda: (
                _count(health(f"{self.where.base}/healthz").get("indexed")) >= wanted and group_lag(self.where.settings, topic, group) == 0
            ),
            timeout,
            f"{wanted} products indexed",
        )

    def _wait_applied(self, events: int, timeout: float = 1800.0) -> None:
        """Until the worker has applied the history and `serve` has reloaded learners that saw it."""
        group = self.where.settings.group(PROFILES_GROUP)
        topic = self.where.settings.topic(CLICKS.name)
        self._until(
            lambda: (
                group_lag(self.where.settings, topic, group) == 0
                and _count(health(f"{self.where.base}/healthz").get("learner_events")) >= events
            ),
            timeout,
            f"the {events} history events applied and learned",
        )

    def _until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pace(0.0)
            if done():
                return
            time.sleep(1.0)
        raise UserError(f"the live run waited {timeout:.0f} s for {what}; see the logs in {self.where.logs}")


def _count(value: object) -> int:
    """A count from a /healthz report: 0 while the service does not say."""
    return int(value) if isinstance(value, (int, float, str)) else 0


def _wire(event: ClickEvent) -> dict[str, object]:
    return json.loads(event.model_dump_json())


def run_live(settings: Settings, checkpoint: Path, dataset: Dataset, config: ReplayConfig, progress: bool) -> ReplayResult:
    with running(settings, checkpoint, config.rate) as (where, services):
        return LiveRun(dataset, config, where, services).go(progress)
