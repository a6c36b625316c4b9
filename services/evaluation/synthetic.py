"""A synthetic shop on the real Fashion-MNIST photos, for measuring item cold start.

Each shopper has a hidden taste: a favourite category and, within it, a liking for products
that look like one particular photo (cosine of raw pixels to that "prototype", sharpened by a
temperature). Shelfsight never sees the taste, only the clicks it causes.

The timeline:

1. the catalogue (``products`` photos, every category alike) is listed;
2. every shopper clicks ``clicks_before`` products of their taste, with some browsing of
   random products (``view``s) in between;
3. ``new_products`` more photos are listed, as ``new_listings`` says: ``mixed`` (half of them
   with a neutral title, "Item fm-01234", and no category), ``neutral`` (all of them: the
   picture alone must carry them), ``foreign`` (titles in French, German or Spanish, which
   the text model does not read, and no category), ``no-category`` (informative titles, no
   category) or ``informative`` (title and category, as the catalogue's);
4. every shopper clicks ``clicks_after`` more products of their taste, now chosen among old
   and new products alike: these are the questions the evaluation scores, and a new product
   nobody has clicked yet can only be found by what it looks like.

``truth.json`` records each shopper's favourite category and each product's true category.
"""

import base64
import io
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.fashion_mnist import BASE_PRICES, CATEGORIES, DEBIAN_DIR, STYLES, display_name, load_split
from services.evaluation.logs import CATALOGUE, CLICKS, NEW_LISTINGS, TRUTH, write_jsonl, write_meta

START = datetime(2026, 10, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ShopPlan:
    products: int = 800
    new_products: int = 200
    shoppers: int = 200
    clicks_before: int = 8
    clicks_after: int = 3
    views_per_click: float = 0.25  # browsing of random products, as views
    untitled_share: float = 0.5  # of the new products in a ``mixed`` listing: a neutral title and no category
    temperature: float = 0.1  # lower: shoppers stick closer to their prototype
    seed: int = 0
    new_listings: str = "mixed"  # mixed | neutral | foreign | no-category | informative
    new_after_days: int = 7  # the new products are listed this many days after the catalogue


FOREIGN = {  # what a shop in another language calls each category (the text model reads English)
    "T-shirt-top": ("T-shirt basique", "Kurzarmshirt", "Camiseta básica"),
    "Trouser": ("Pantalon droit", "Stoffhose", "Pantalón recto"),
    "Pullover": ("Pull en laine", "Strickpullover", "Jersey de punto"),
    "Dress": ("Robe d'été", "Sommerkleid", "Vestido de verano"),
    "Coat": ("Manteau long", "Wintermantel", "Abrigo largo"),
    "Sandal": ("Sandales plates", "Riemchensandale", "Sandalias planas"),
    "Shirt": ("Chemise en lin", "Leinenhemd", "Camisa de lino"),
    "Sneaker": ("Baskets basses", "Turnschuhe", "Zapatillas deportivas"),
    "Bag": ("Sac en cuir", "Ledertasche", "Bolso de cuero"),
    "Ankle-boot": ("Bottines", "Stiefeletten", "Botines de piel"),
}


def generate(out: Path, plan: ShopPlan = ShopPlan(), source: Path = DEBIAN_DIR) -> tuple[int, int]:
    """Write catalogue.jsonl, clicks.jsonl and truth.json into ``out``; returns (products, events)."""
    rng = random.Random(plan.seed)
    images, labels = load_split("test", source)
    per_category_old, per_category_new = -(-plan.products // len(CATEGORIES)), -(-plan.new_products // len(CATEGORIES))
    picked: dict[int, list[int]] = {c: [] for c in range(len(CATEGORIES))}
    for index, label in enumerate(labels):
        if len(picked[int(label)]) < per_category_old + per_category_new:
            picked[int(label)].append(index)
    old = [i for c in picked for i in picked[c][:per_category_old]][: plan.products]
    new = [i for c in picked for i in picked[c][per_category_old:]][: plan.new_products]
    pixels = images.reshape(len(images), -1).astype(np.float32)
    pixels /= np.linalg.norm(pixels, axis=1, keepdims=True).clip(min=1e-6)
    pid = {i: f"fm-{i:05d}" for i in old + new}
    category = {pid[i]: CATEGORIES[int(labels[i])] for i in old + new}
    if plan.new_listings not in NEW_LISTINGS:
        raise ValueError(f"new_listings must be one of {', '.join(NEW_LISTINGS)}")
    untitled = set(rng.sample(new, int(len(new) * plan.untitled_share))) if plan.new_listings == "mixed" else set()

    listed_old = START - timedelta(days=1)
    listed_new = START + timedelta(days=plan.new_after_days)
    products = [_product(rng, images[i], pid[i], category[pid[i]], listed_old, listing="informative") for i in old]
    products += [_product(rng, images[i], pid[i], category[pid[i]], listed_new, listing=_listing(plan, i in untitled)) for i in new]

    tastes: dict[str, str] = {}
    events: list[tuple[datetime, dict[str, object]]] = []
    for s in range(plan.shoppers):
        user = f"shopper-{s:04d}"
        favourite = rng.randrange(len(CATEGORIES))
        tastes[user] = CATEGORIES[favourite]
        prototype = pixels[rng.choice(picked[favourite][:per_category_old])]
        clicked: set[int] = set()
        for phase, pool, count, day in (
            (1, old, plan.clicks_before, 0),
            (2, old + new, plan.clicks_after, plan.new_after_days),
        ):
            mine = [i for i in pool if int(labels[i]) == favourite]
            at = START + timedelta(days=day, hours=rng.uniform(1, 40))
            session = f"{user}-s{phase}"
            for _ in range(count):
                while rng.random() < plan.views_per_click:
                    at += timedelta(seconds=rng.uniform(20, 90))
                    events.append((at, _event(user, pid[rng.choice(pool)], "view", at, session)))
                choices = [i for i in mine if i not in clicked]
                weights = np.exp((pixels[choices] @ prototype) / plan.temperature)
                chosen = rng.choices(choices, weights=weights.tolist())[0]
                clicked.add(chosen)
                at += timedelta(seconds=rng.uniform(20, 90))
                events.append((at, _event(user, pid[chosen], "click", at, session)))
    events.sort(key=lambda e: (e[0], e[1]["user_id"]))
    rows = [dict(e, event_id=f"syn-{n}") for n, (_, e) in enumerate(events)]
    out.mkdir(parents=True, exist_ok=True)
    (out / TRUTH).write_text(json.dumps({"tastes": tastes, "categories": category}, indent=1) + "\n")
    write_meta(
        out,
        plan.shoppers * plan.clicks_after,
        plan.shoppers * plan.clicks_before,
        "synthetic Fashion-MNIST shop: the scored choices are those made after the new products were listed",
    )
    return write_jsonl(out / CATALOGUE, products), write_jsonl(out / CLICKS, rows)


def _listing(plan: ShopPlan, untitled: bool) -> str:
    if plan.new_listings == "mixed":
        return "neutral" if untitled else "informative"
    return plan.new_listings


def _product(rng: random.Random, pixels: np.ndarray, product_id: str, category: str, listed: datetime, listing: str) -> dict[str, object]:
    """One listing: ``informative`` (title, description and category), ``no-category`` (the same
    without the category), ``neutral`` ("Item <id>" alone) or ``foreign`` (another language's title)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    name = display_name(category)
    style = rng.choice(STYLES)
    titles = {"neutral": f"Item {product_id}", "foreign": rng.choice(FOREIGN[category])}
    product: dict[str, object] = {
        "product_id": product_id,
        "title": titles.get(listing, f"{style} {name}"),
        "price": round(BASE_PRICES[category] * rng.uniform(0.6, 1.6), 2),
        "currency": "EUR",
        "image": base64.b64encode(buffer.getvalue()).decode(),
        "listed_at": listed.isoformat(),
    }
    if listing in ("informative", "no-category"):
        product["description"] = f"A {style.lower()} {name}."
    if listing == "informative":
        product["category_hint"] = category
    return product


def _event(user: str, product: str, kind: str, at: datetime, session: str) -> dict[str, object]:
    return {"user_id": user, "product_id": product, "kind": kind, "occurred_at": at.isoformat(), "session_id": session}
