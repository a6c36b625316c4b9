"""How well the store head learns a store's own categories from its labelled listings.

Fashion-MNIST catalogue products (the `test` split: photos the model never trained on) are
embedded by the product model exactly as the embedder does (decode → Predictor), then:

1. 10 % of them are labelled (their `category_hint` given), the store head
   (`services.embedder.taxonomy.StoreTaxonomy`, the embedder's own class and settings) learns
   from those, and files the other 90 %: accuracy, how many it is sure of, accuracy among
   those, expected calibration error. Baseline in the same run: the product model's own
   classifier on the same products.
2. The same with a store taxonomy the model has never seen (five coarse groups), where the
   model's classes cannot answer at all.
3. Labelled listings needed: accuracy on the unlabelled rest as the labelled share grows.

With `--photos-only` the products are embedded from their photos alone: the catalogue's
titles name the category ("Slim denim trouser"), and since the model reads them, the figures
as listed say little about the vision side.

    .venv/bin/python bench/store_head.py [--products 5000] [--checkpoint DIR] [--photos-only]
"""

import argparse
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np

from models.predictor import ProductInput
from schemas import ProductListed, decode
from services.demo.catalogue import catalogue
from services.embedder.service import load_predictor
from services.embedder.taxonomy import StoreTaxonomy, TaxonomyConfig
from services.errors import run_script
from services.settings import load_settings

COARSE = {
    "T-shirt-top": "Tops",
    "Shirt": "Tops",
    "Pullover": "Knitwear & coats",
    "Coat": "Knitwear & coats",
    "Dress": "Dresses",
    "Trouser": "Trousers",
    "Sandal": "Shoes",
    "Sneaker": "Shoes",
    "Ankle-boot": "Shoes",
    "Bag": "Bags",
}


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return total


def store_head_on(fused: np.ndarray, ids: list[str], truth: list[str], labelled: list[int], config: TaxonomyConfig) -> dict[str, float]:
    taxonomy = StoreTaxonomy(config)
    started = time.perf_counter()
    taxonomy.learn((ids[i], fused[i], truth[i]) for i in labelled)
    fit_s = time.perf_counter() - started
    rest = sorted(set(range(len(ids))) - set(labelled))
    found = taxonomy.classify(fused[rest]) or []
    if not found:
        return {"accuracy": float("nan")}
    guess = np.array([c.guess == truth[i] for c, i in zip(found, rest, strict=True)])
    sure = np.array([c.source == "store_head" for c in found])
    confidence = np.array([c.confidence for c in found])
    return {
        "accuracy": float(guess.mean()),
        "sure": float(sure.mean()),
        "accuracy_when_sure": float(guess[sure].mean()) if sure.any() else float("nan"),
        "ece": ece(confidence, guess.astype(float)),
        "fit_s": fit_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photos-only", action="store_true", help="embed the photos without the titles")
    parser.add_argument(
        "--neutral-titles",
        action="store_true",
        help="the labelled 10 %% as listed; the rest with a photo and a title that says nothing ('Item <id>')",
    )
    args = parser.parse_args()
    settings = load_settings()
    if args.checkpoint:
        settings = settings.model_copy(update={"model_dir": args.checkpoint})
    predictor = load_predictor(settings)
    products = [decode(ProductListed, json.dumps(p)) for p in catalogue(args.products, split="test", seed=args.seed)]
    rng = random.Random(args.seed)
    order = list(range(len(products)))
    rng.shuffle(order)
    tenth = order[: len(order) // 10]
    rest = sorted(set(order) - set(tenth))
    neutral = set(rest) if args.neutral_titles else set()
    fused_rows, model_says = [], []
    for start in range(0, len(products), 64):
        batch = products[start : start + 64]
        inputs = [
            ProductInput(image=p.image)
            if args.photos_only
            else ProductInput(image=p.image, title=f"Item {p.product_id}")
            if start + n in neutral
            else ProductInput(image=p.image, title=p.title, description=p.description)
            for n, p in enumerate(batch)
        ]
        for prediction in predictor.predict(inputs):
            fused_rows.append(prediction.vectors["fused"])
            model_says.append(prediction.category)
    fused = np.array(fused_rows, dtype=np.float32)
    ids = [p.product_id for p in products]
    fine = [p.category_hint or "" for p in products]
    coarse = [COARSE[c] for c in fine]
    config = TaxonomyConfig(unsure_below=settings.store_head_unsure_below, max_examples=settings.store_head_max_examples)

    shown = "photos alone" if args.photos_only else "the rest with a neutral title" if args.neutral_titles else "photos and titles"
    print(
        f"model {predictor.model_version}; {len(products)} Fashion-MNIST catalogue products (test split, {shown}); unsure below {config.unsure_below}"
    )
    model_accuracy = float(np.mean([model_says[i] == fine[i] for i in rest]))
    print(f"baseline, the product model's classifier, on the 90 %: accuracy {model_accuracy:.4f}")
    for name, truth in (("the model's ten classes as the store's", fine), ("five coarse store groups", coarse)):
        r = store_head_on(fused, ids, truth, tenth, config)
        print(
            f"store head, 10 % labelled ({len(tenth)}), {name}: accuracy {r['accuracy']:.4f}, sure of {r['sure']:.1%}, "
            f"accuracy when sure {r['accuracy_when_sure']:.4f}, ECE {r['ece']:.3f}, fit {r['fit_s']:.2f} s"
        )
    print("labelled listings → accuracy on the rest (ten classes / five groups):")
    for n in (10, 20, 50, 100, 200, 500, 1000, 2000):
        if n >= len(order):
            break
        a = store_head_on(fused, ids, fine, order[:n], config)["accuracy"]
        b = store_head_on(fused, ids, coarse, order[:n], config)["accuracy"]
        print(f"  {n:5d}  {a:.4f}  {b:.4f}")


if __name__ == "__main__":
    run_script(main, "bench/store_head.py")
