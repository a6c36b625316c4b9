"""Simulated shoppers for the demo: each has a visual and category taste and shops through the API.

A shopper asks for recommendations, sees them (impressions), clicks what fits their taste —
now and then adds to cart or buys — and sometimes browses the catalogue on their own.
Everything goes through the public HTTP API, as a storefront would send it.
"""

import http.client
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote


@dataclass
class SimulatedShopper:
    user_id: str
    tastes: list[str]  # categories they like
    session: str = field(default_factory=lambda: f"s-{uuid.uuid4().hex[:12]}")


@dataclass
class Figures:
    events: int = 0
    requests: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms[-2000:])
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ShopperCrowd:
    def __init__(self, host: str, port: int, api_key: str, catalogue: dict[str, str], shoppers: int = 12, seed: int = 0) -> None:
        self._connection = http.client.HTTPConnection(host, port, timeout=10)
        self._key = api_key
        self._rng = random.Random(seed)
        self._by_category: dict[str, list[str]] = {}
        for product_id, category in catalogue.items():
            self._by_category.setdefault(category, []).append(product_id)
        categories = sorted(self._by_category)
        self.shoppers = [SimulatedShopper(f"shopper-{n}", self._rng.sample(categories, k=1 + n % 2)) for n in range(shoppers)]
        self.figures = Figures()

    def step(self) -> None:
        """One shopper looks at their recommendations and acts on them."""
        shopper = self._rng.choice(self.shoppers)
        started = time.perf_counter()
        answer = self._call("GET", f"/v1/users/{quote(shopper.user_id)}/recommendations?k=8")
        self.figures.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.figures.requests += 1
        items = answer.get("items", []) if answer else []
        request_id = answer.get("request_id") if answer else None  # the widget names the list its events came from
        events = [self._event(shopper, i["product_id"], "impression", n, request_id) for n, i in enumerate(items)]
        liked = [(n, i) for n, i in enumerate(items) if i.get("category") in shopper.tastes]
        if liked and self._rng.random() < 0.8:
            n, item = self._rng.choice(liked[:4])
            kind = self._rng.choices(["click", "add_to_cart", "purchase"], weights=[0.8, 0.15, 0.05])[0]
            events.append(self._event(shopper, item["product_id"], kind, n, request_id))
        elif self._rng.random() < 0.5 and items:
            n = self._rng.randrange(len(items))
            events.append(self._event(shopper, items[n]["product_id"], "dismiss", n, request_id))
        else:  # browsing on their own: a product from a category they like
            category = self._rng.choice(shopper.tastes)
            events.append(self._event(shopper, self._rng.choice(self._by_category[category]), "view", None))
        if self._call("POST", "/v1/events", events) is not None:
            self.figures.events += len(events)

    def _event(
        self, shopper: SimulatedShopper, product_id: str, kind: str, position: int | None, request_id: str | None = None
    ) -> dict[str, object]:
        event: dict[str, object] = {
            "event_id": f"sim-{uuid.uuid4().hex}",
            "user_id": shopper.user_id,
            "product_id": product_id,
            "kind": kind,
            "occurred_at": datetime.now(UTC).isoformat(),
            "session_id": shopper.session,
        }
        if position is not None:
            context: dict[str, object] = {"widget": "demo-simulator", "position": position}
            if request_id:
                context["request_id"] = request_id
            event["context"] = context
        return event

    def _call(self, method: str, path: str, body: object = None) -> dict[str, Any] | None:
        headers = {"Content-Type": "application/json", "X-API-Key": self._key}
        try:
            self._connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self.figures.errors += 1
            return None
        if response.status >= 300:
            self.figures.errors += 1
            return None
        return json.loads(data) if data else {}
