"""A product catalogue (ProductListed JSON Lines) from the real Fashion-MNIST photographs."""

import base64
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from models.data.fashion_mnist import BASE_PRICES, CATEGORIES, DEBIAN_DIR, iter_split, product_texts


def catalogue(count: int, split: str = "test", seed: int = 0, source: Path = DEBIAN_DIR) -> Iterator[dict[str, object]]:
    """``count`` products, each with its real photo inline (PNG, base64) and a plausible title."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    per_class = -(-count // len(CATEGORIES))
    made = 0
    for index, picture, label in iter_split(split, source, per_class=per_class):
        if made == count:
            return
        category = CATEGORIES[label]
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        title, description, material = product_texts(category, rng)
        yield {
            "product_id": f"fm-{split}-{index:05d}",
            "title": title,
            "description": description,
            "price": round(BASE_PRICES[category] * rng.uniform(0.6, 1.6), 2),
            "currency": "EUR",
            "in_stock": rng.random() > 0.1,
            "category_hint": category,
            "attributes": {"material": material, "source": "fashion-mnist"},
            "image": base64.b64encode(buffer.getvalue()).decode(),
            "listed_at": (start + timedelta(minutes=index)).isoformat(),
        }
        made += 1


def write_catalogue(out: Path, count: int, split: str = "test", seed: int = 0) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w") as handle:
        for product in catalogue(count, split, seed):
            handle.write(json.dumps(product) + "\n")
            n += 1
    return n
