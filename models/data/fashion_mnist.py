"""Debian's ``dataset-fashion-mnist`` (Zalando product photos) as an ImageFolder tree.

The photos are 28×28 greyscale; they are written as PNG untouched, and the backbone's
preprocessing upscales them (bicubic, antialiased) to its input size.
"""

import csv
import gzip
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from models.data.folder import TEXTS_FILE

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CATEGORIES = ("T-shirt-top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot")
SPLITS = {"train": "train", "test": "t10k"}

# The words of the catalogues made from these photos (the demo shop, the synthetic shop, and the
# titles the model is trained with): one vocabulary, so the model learns the shops' language.
STYLES = ("Classic", "Everyday", "Slim", "Relaxed", "Vintage", "Urban", "Soft", "Essential", "Bold", "Light")
MATERIALS = ("cotton", "wool", "denim", "leather", "linen", "jersey", "canvas", "knit", "suede", "satin")
BASE_PRICES = {
    "T-shirt-top": 15,
    "Trouser": 45,
    "Pullover": 40,
    "Dress": 55,
    "Coat": 120,
    "Sandal": 35,
    "Shirt": 30,
    "Sneaker": 70,
    "Bag": 60,
    "Ankle-boot": 90,
}


def display_name(category: str) -> str:
    """``"T-shirt-top"`` → ``"t-shirt"``, ``"Ankle-boot"`` → ``"ankle boot"``."""
    return category.replace("-", " ").replace("T shirt top", "T-shirt").lower()


def product_texts(category: str, rng: random.Random) -> tuple[str, str, str]:
    """A plausible (title, description, material) for a photo of ``category``."""
    style, material = rng.choice(STYLES), rng.choice(MATERIALS)
    name = display_name(category)
    return f"{style} {material} {name}", f"A {style.lower()} {name} in {material}.", material


class DatasetMissing(FileNotFoundError):
    pass


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(split: str, source: Path = DEBIAN_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N]) of ``train`` or ``test``."""
    prefix = SPLITS[split]
    images, labels = source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise DatasetMissing(
            f"Fashion-MNIST not found in {source}: install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        )
    x, y = _read_idx(images), _read_idx(labels)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels in {source}")
    return x, y


def iter_split(split: str, source: Path = DEBIAN_DIR, per_class: int | None = None) -> Iterator[tuple[int, Image.Image, int]]:
    """(index, picture, label), keeping at most ``per_class`` pictures of each category."""
    x, y = load_split(split, source)
    kept = [0] * len(CATEGORIES)
    for index, (pixels, label) in enumerate(zip(x, y, strict=True)):
        if per_class is not None and kept[label] >= per_class:
            continue
        kept[label] += 1
        yield index, Image.fromarray(pixels, mode="L"), int(label)


def export_image_folder(out: Path, source: Path = DEBIAN_DIR, per_class: int | None = None) -> dict[str, int]:
    """Write ``out/{train,test}/<Category>/<index>.png`` and the training photos' titles
    (``out/train/texts.csv``); return the count per split. The test split stays photos only:
    the Fashion-MNIST figure is about what the model sees in a picture."""
    counts = {}
    for split in SPLITS:
        for category in CATEGORIES:
            (out / split / category).mkdir(parents=True, exist_ok=True)
        rng, texts, n = random.Random(split), [["file", "title", "description"]], 0
        for index, picture, label in iter_split(split, source, per_class):
            file = f"{CATEGORIES[label]}/{index:05d}.png"
            picture.save(out / split / file, optimize=False)
            if split == "train":
                texts.append([file, *product_texts(CATEGORIES[label], rng)[:2]])
            n += 1
        counts[split] = n
        if split == "train":
            with (out / split / TEXTS_FILE).open("w", newline="") as handle:
                csv.writer(handle).writerows(texts)
    return counts
