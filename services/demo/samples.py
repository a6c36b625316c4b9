"""A small set of valid and deliberately broken events, for the demo and for trying things out."""

import base64
import io
import json
import random
from datetime import UTC, datetime, timedelta

from PIL import Image, ImageDraw

_PRODUCTS = [
    ("sku-boot-01", "Black leather ankle boot", "Ankle boot with a side zip.", 89.0, "Ankle boot", (30, 30, 30)),
    ("sku-sneaker-01", "White canvas sneaker", "Low-top canvas sneaker.", 49.5, "Sneaker", (235, 235, 235)),
    ("sku-dress-01", "Red summer dress", "Light cotton dress.", 39.9, "Dress", (200, 30, 40)),
    ("sku-bag-01", "Brown tote bag", "Roomy leather tote.", 120.0, "Bag", (120, 70, 30)),
]


def _png(colour: tuple[int, int, int], seed: int) -> bytes:
    """A small product-like picture: a coloured shape on white."""
    rng = random.Random(seed)
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    x, y = rng.randint(8, 24), rng.randint(8, 24)
    draw.rounded_rectangle((x, y, 96 - x, 96 - y // 2), radius=12, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_products(now: datetime | None = None) -> tuple[list[str], list[str]]:
    """(valid lines, invalid lines) of a products JSON Lines file."""
    now = now or datetime.now(UTC)
    valid = []
    for i, (pid, title, description, price, category, colour) in enumerate(_PRODUCTS):
        valid.append(
            json.dumps(
                {
                    "product_id": pid,
                    "title": title,
                    "description": description,
                    "price": price,
                    "currency": "EUR",
                    "in_stock": True,
                    "category_hint": category,
                    "attributes": {"colour": f"rgb{colour}"},
                    "image": base64.b64encode(_png(colour, i)).decode(),
                    "listed_at": (now - timedelta(minutes=i)).isoformat(),
                }
            )
        )
    valid.append(
        json.dumps(
            {
                "product_id": "sku-scarf-01",
                "title": "Wool scarf",
                "description": "Text only: no picture yet.",
                "price": 25.0,
                "currency": "EUR",
                "listed_at": now.isoformat(),
            }
        )
    )
    base = json.loads(valid[-1])
    invalid = [
        json.dumps({**base, "product_id": "sku-bad-price", "price": -3}),
        json.dumps({k: v for k, v in base.items() if k != "title"} | {"product_id": "sku-no-title"}),
        json.dumps({**base, "product_id": "sku-two-images", "image": "aGk=", "image_url": "https://x.example/a.jpg"}),
        '{"product_id": "sku-truncated", "title": "Half a li',
    ]
    return valid, invalid


def sample_clicks(now: datetime | None = None, count: int = 12, seed: int = 7) -> tuple[list[str], list[str]]:
    """(valid lines, invalid lines) of a clicks JSON Lines file."""
    now = now or datetime.now(UTC)
    rng = random.Random(seed)
    kinds = ["view", "view", "view", "click", "click", "add_to_cart", "purchase", "dismiss"]
    valid = [
        json.dumps(
            {
                "event_id": f"evt-{i:04d}",
                "user_id": f"shopper-{rng.randint(1, 3)}",
                "product_id": rng.choice(_PRODUCTS)[0],
                "kind": rng.choice(kinds),
                "occurred_at": (now - timedelta(seconds=count - i)).isoformat(),
                "session_id": f"session-{rng.randint(1, 4)}",
                "context": {"widget": "home", "position": rng.randint(0, 7)},
            }
        )
        for i in range(count)
    ]
    base = json.loads(valid[0])
    invalid = [
        json.dumps({**base, "event_id": "evt-bad-kind", "kind": "like"}),
        json.dumps({**base, "event_id": "evt-naive-time", "occurred_at": "2026-11-27T10:00:00"}),
        json.dumps({**base, "event_id": "evt-extra", "coupon": "SAVE10"}),
    ]
    return valid, invalid
