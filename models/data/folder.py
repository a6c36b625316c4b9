"""An ImageFolder directory (one sub-folder per category) with optional product texts.

Texts come from a CSV (columns ``file``, ``title``, ``description``) or JSON Lines file
with the same keys; ``file`` is the path relative to the dataset root, or the bare name.
A ``texts.csv`` in the dataset root is read unless another file is named.
"""

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
TEXTS_FILE = "texts.csv"


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    title: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class FolderDataset:
    root: Path
    categories: tuple[str, ...]
    samples: tuple[Sample, ...]

    def fingerprint(self) -> str:
        """sha256 over every file's relative path, label and bytes, and the texts."""
        digest = hashlib.sha256()
        for s in self.samples:
            digest.update(f"{s.path.relative_to(self.root)}\0{s.label}\0{s.title}\0{s.description}\0".encode())
            digest.update(s.path.read_bytes())
        return digest.hexdigest()


def load_texts(path: Path) -> dict[str, tuple[str | None, str | None]]:
    if not path.is_file():
        raise DatasetError(f"no such texts file: {path}")
    rows: list[dict[str, str]]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    texts = {}
    for number, row in enumerate(rows, start=1):
        if "file" not in row:
            raise DatasetError(f"{path}: row {number} has no 'file' column")
        texts[row["file"]] = (row.get("title") or None, row.get("description") or None)
    return texts


def load_folder(root: Path, texts: Path | None = None, per_class: int | None = None) -> FolderDataset:
    """Categories are the sub-folder names, sorted; files inside are sorted too (reproducible)."""
    if not root.is_dir():
        raise DatasetError(f"no such dataset folder: {root} (expected one sub-folder per category)")
    categories = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if len(categories) < 2:
        raise DatasetError(f"{root} needs at least two category sub-folders, found {len(categories)}")
    if texts is None and (root / TEXTS_FILE).is_file():
        texts = root / TEXTS_FILE  # a catalogue's titles beside its photos are read by default
    table = load_texts(texts) if texts else {}
    samples = []
    for label, category in enumerate(categories):
        files = sorted(p for p in (root / category).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:per_class]:
            title, description = table.get(str(path.relative_to(root)), table.get(path.name, (None, None)))
            samples.append(Sample(path, label, title, description))
    if not samples:
        raise DatasetError(f"{root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return FolderDataset(root, categories, tuple(samples))
