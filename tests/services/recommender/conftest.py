"""A small shop for the recommender tests: real Qdrant Edge, real Redis, real click handling.

Products sit in clusters of the fused space, one per category, so "looks like" is known in
advance; clicks go through the profiles worker's own ClickHandler into Redis.
"""

import asyncio
import base64
import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from PIL import Image, ImageDraw
from pydantic import SecretStr

from models.ranking.learners import Learners
from schemas import RecommendationServed, encode
from services.profiles.handler import ClickHandler, RawMessage
from services.profiles.profile import ClickParams
from services.profiles.state import ProfileState
from services.recommender.engine import Recommender, Tuning
from services.recommender.learned import Learned
from services.recommender.shopper import ShopperReader
from services.vectors.edge import EdgeProductStore
from services.vectors.store import ProductStore, StoredProduct
from state.keys import Keys
from tests.cleanup import delete_prefixed

DIMS = 16
CATEGORIES = ["Bag", "Sneaker", "Dress", "Coat"]
COLOURS = {"Bag": "saddlebrown", "Sneaker": "royalblue", "Dress": "crimson", "Coat": "darkolivegreen"}


def thumbnail(category: str, n: int) -> str:
    picture = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((12, 12, 84, 84), fill=COLOURS.get(category, "grey"))
    draw.text((20, 40), f"{category[:4]}{n}", fill="white")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Shop:
    store: EdgeProductStore
    keys: Keys
    sync: redis.Redis
    loop: asyncio.AbstractEventLoop
    state: ProfileState
    handler: ClickHandler
    learners: Learners
    vectors: dict[str, np.ndarray]
    categories: dict[str, str]
    letters: list = field(default_factory=list)
    pictures: bool = False  # whether the store has a picture space
    clock: float = field(default_factory=time.time)
    counter: int = 0

    def engine(
        self,
        log_served: bool = False,
        store: ProductStore | None = None,
        assign=None,
        guard=None,
        saved=None,
        versions=None,
        model_version=None,
        **tuning,
    ) -> Recommender:
        """``log_served``: served lists reach Redis the way the profiles worker's `served` agent keeps them;
        ``assign``: experiments' assignment (``RunningExperiments.assign``)."""
        sink = self.remember_served if log_served else None
        return Recommender(
            store or self.store,
            ShopperReader(self.sync, self.keys),
            lambda: Learned.from_learners(self.learners),
            DIMS,
            Tuning(**tuning),
            clock=lambda: self.clock,
            on_served=sink,
            pictures=self.pictures,
            assign=assign or (lambda _user: None),
            guard=guard or (lambda _user, _tag, _seconds, _ok: None),
            saved=saved or (lambda _name: None),
            versions=versions or (lambda _name: contextlib.nullcontext(None)),
            model_version=lambda: model_version,
        )

    def remember_served(self, served: RecommendationServed) -> None:
        self.loop.run_until_complete(self.state.remember_served(served.user_id, encode(served).value, served.request_id, served.experiment))

    def add(
        self,
        product_id: str,
        category: str,
        vector: np.ndarray,
        price: float = 50.0,
        in_stock: bool = True,
        listed_ts: float | None = None,
        picture: np.ndarray | None = None,
        title: str | None = None,
    ) -> None:
        """``picture``: the product's vector in the picture space (a store made with pictures only)."""
        vector = vector / np.linalg.norm(vector)
        listed = listed_ts if listed_ts is not None else self.clock - 30 * 86400
        vectors = {"fused": vector.tolist()}
        if picture is not None:
            vectors["image"] = (picture / np.linalg.norm(picture)).tolist()
        self.store.upsert(
            [
                StoredProduct(
                    product_id,
                    vectors,
                    {
                        "title": title or f"{category} {product_id}",
                        "category": category,
                        "price": price,
                        "currency": "EUR",
                        "in_stock": in_stock,
                        "delisted": False,
                        "listed_ts": listed,
                        "has_image": True,
                        "thumbnail": thumbnail(category, len(self.vectors)),
                    },
                )
            ]
        )
        self.loop.run_until_complete(self.state.put_item(product_id, vector.tolist(), category, price, in_stock))
        self.vectors[product_id] = vector
        self.categories[product_id] = category

    def click(self, user: str, product: str, kind: str = "click", session: str | None = None, request_id: str | None = None) -> None:
        self.counter += 1
        at = datetime.fromtimestamp(self.clock, UTC) - timedelta(seconds=600 - self.counter)
        body = {
            "event_id": f"e-{uuid.uuid4().hex}",
            "user_id": user,
            "product_id": product,
            "kind": kind,
            "occurred_at": at.isoformat(),
            "session_id": session or f"s-{user}",
        }
        if request_id is not None:
            body["context"] = {"widget": "test", "request_id": request_id}
        self.loop.run_until_complete(self.handler.handle([RawMessage(user.encode(), json.dumps(body).encode(), 0, self.counter)]))


def cluster_vector(rng: np.random.Generator, category: str) -> np.ndarray:
    base = np.zeros(DIMS)
    base[CATEGORIES.index(category) * 4] = 1.0
    return base + rng.normal(0, 0.15, DIMS)


@pytest.fixture
def shop(settings, redis_client, tmp_path):
    yield from _shop(settings, redis_client, tmp_path, pictures=False)


@pytest.fixture
def picture_shop(settings, redis_client, tmp_path):
    """The same shop with pictures: each product's picture vector sits in its category's cluster of
    a picture space of its own (as the embedder's ``image`` vectors do)."""
    yield from _shop(settings, redis_client, tmp_path, pictures=True)


def _shop(settings, redis_client, tmp_path, pictures: bool):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    store = EdgeProductStore(tmp_path / "qdrant")
    store.ensure_collection({"fused": DIMS, "image": DIMS} if pictures else {"fused": DIMS})
    loop = asyncio.new_event_loop()
    client = aioredis.Redis.from_url(settings.redis_url)
    params = ClickParams()
    state = ProfileState(client, keys, params)
    learners = Learners(ranker_warmup=100)
    shop = Shop(store, keys, redis_client, loop, state, None, learners, {}, {}, pictures=pictures)  # type: ignore[arg-type]
    shop.handler = ClickHandler(state, learners, params, lambda m, r: shop.letters.append(r), clock=lambda: shop.clock, item_wait_s=0)
    for category in CATEGORIES:
        for n in range(12):
            price = 20.0 + 10 * n
            picture = cluster_vector(rng, category)[::-1].copy() if pictures else None
            shop.add(f"{category.lower()}-{n}", category, cluster_vector(rng, category), price=price, in_stock=n != 3, picture=picture)
    yield shop
    store.close()
    loop.run_until_complete(client.aclose())
    loop.close()
    delete_prefixed(redis_client, keys.prefix)


SECRET_KEY = "sk-test-secret-key-0001"
PUBLISHABLE_KEY = "pk-test-widget-key-0001"


@pytest.fixture
def api_settings(kafka):
    return kafka.model_copy(
        update={
            "api_keys": SecretStr(SECRET_KEY),
            "publishable_keys": PUBLISHABLE_KEY,
            "cors_origins": "https://shop.example",
            "api_max_body_bytes": 64 * 1024,
        }
    )


def api_for(settings, shop):
    """The API over the test shop, with real Kafka behind POST /v1/events and real Redis behind live updates."""
    from services.bus.config import producer_config
    from services.bus.producer import Producer
    from services.recommender.http.app import ApiParts, build_api
    from services.recommender.http.live import LiveUpdates
    from services.recommender.metrics import RecommenderMetrics

    live = LiveUpdates(aioredis.Redis.from_url(settings.redis_url), shop.keys.updates_channel)
    parts = ApiParts(
        settings,
        shop.engine(),
        shop.store,
        Producer(producer_config(settings)),
        live,
        RecommenderMetrics(),
        model_version=lambda: "test-model",
    )
    return build_api(parts), live


@pytest.fixture
def api(api_settings, shop):
    return api_for(api_settings, shop)


@contextlib.contextmanager
def uvicorn_serving(app) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free port (SSE and browsers need one); yields its base URL."""
    import threading

    import uvicorn

    from tests.ports import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(api):
    """The API on a real uvicorn server; yields its base URL and the live updates."""
    app, live = api
    with uvicorn_serving(app) as base:
        yield base, live
