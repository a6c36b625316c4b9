"""A product catalogue (ProductListed JSON Lines) from the real Fashion-MNIST photographs."""

import base64
import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from models.data.fashion_mnist import CATEGORIES, DEBIAN_DIR, iter_split

_STYLE = ["Classic", "Everyday", "Slim", "Relaxed", "Vintage", "Urban", "Soft", "Essential", "Bold", "Light"]
_MATERIAL = ["cotton", "wool", "denim", "leather", "linen", "jersey", "canvas", "knit", "suede", "satin"]
_PRICE = {"T-shirt-top": 15, "Trouser": 45, "Pullover": 40, "Dress": 55, "Coat": 120, "Sandal": 35, "Shirt": 30,
          "Sneaker": 70, "Bag": 60, "Ankle-boot": 90}


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
        name = category.replace("-", " ").replace("T shirt top", "T-shirt")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        style, material = rng.choice(_STYLE), rng.choice(_MATERIAL)
        yield {
            "product_id": f"fm-{split}-{index:05d}",
            "title": f"{style} {material} {name.lower()}",
            "description": f"A {style.lower()} {name.lower()} in {material}.",
            "price": round(_PRICE[category] * rng.uniform(0.6, 1.6), 2),
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
