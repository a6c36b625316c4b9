"""A dataset folder as the evaluation reads it: the project's own contracts, one per line.

- ``catalogue.jsonl``: ``ProductListed`` events (each product's ``listed_at`` says when it joins);
- ``clicks.jsonl``: ``ClickEvent`` events in the order they happened;
- ``truth.json`` (optional): what a synthetic shop knows and the services do not — each shopper's
  favourite category and each product's true category — for the cold-start figures;
- ``dataset.json`` (optional): its protocol — how many choices the evaluation scores and serves
  before them (``eval_size``, ``warmup_size``) — and a description.
"""

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from schemas import ClickEvent, ContractError, ProductListed, decode
from services.errors import UserError

CATALOGUE, CLICKS, TRUTH, META = "catalogue.jsonl", "clicks.jsonl", "truth.json", "dataset.json"
NEW_LISTINGS = ("mixed", "neutral", "foreign", "no-category", "informative")  # how a synthetic shop lists its new products


@dataclass(frozen=True)
class Truth:
    tastes: dict[str, str] = field(default_factory=dict)  # shopper → favourite category
    categories: dict[str, str] = field(default_factory=dict)  # product → true category


@dataclass(frozen=True)
class Dataset:
    name: str
    products: list[ProductListed]
    events: list[ClickEvent]
    truth: Truth | None = None
    meta: dict[str, object] = field(default_factory=dict)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, object]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_dataset(folder: Path, limit_events: int | None = None) -> Dataset:
    """The dataset in ``folder``; a bad line is a one-line error naming the file and line."""
    if not (folder / CATALOGUE).exists() or not (folder / CLICKS).exists():
        raise UserError(
            f"{folder} holds no {CATALOGUE} and {CLICKS}; make one with `shelfsight datasets movielens-100k "
            f"{folder}` or `shelfsight datasets synthetic-shop {folder}`"
        )
    products = [p for p in _read(folder / CATALOGUE, ProductListed)]
    events: list[ClickEvent] = []
    for event in _read(folder / CLICKS, ClickEvent):
        if limit_events is not None and len(events) >= limit_events:
            break
        events.append(event)
    for before, after in itertools.pairwise(events):
        if after.occurred_at < before.occurred_at:
            raise UserError(f"{folder / CLICKS}: events must be in time order ({after.event_id} comes before {before.event_id})")
    truth = None
    if (folder / TRUTH).exists():
        raw = json.loads((folder / TRUTH).read_text())
        truth = Truth(dict(raw.get("tastes", {})), dict(raw.get("categories", {})))
    meta = json.loads((folder / META).read_text()) if (folder / META).exists() else {}
    return Dataset(folder.name, products, events, truth, meta)


def write_meta(folder: Path, eval_size: int, warmup_size: int, description: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"eval_size": eval_size, "warmup_size": warmup_size, "description": description}
    (folder / META).write_text(json.dumps(meta, indent=1) + "\n")


def _read(path: Path, contract: type) -> Iterator:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield decode(contract, line)
            except ContractError as exc:
                raise UserError(f"{path}:{number}: {exc.reason}") from None
