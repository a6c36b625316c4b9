"""Why an item was recommended, in words a shopper understands.

>>> explain("looks", {"category": "Sneaker"}, "Urban canvas sneaker", is_new=False)
'Looks like Urban canvas sneaker you viewed'
>>> explain("looks", {"category": "Sneaker"}, "Urban canvas sneaker", is_new=True)
'New in Sneaker, looks like Urban canvas sneaker you viewed'
>>> explain("recent", {"category": "Sneaker"}, "Urban canvas sneaker", is_new=False)
'Similar to Urban canvas sneaker you viewed'
>>> explain("trending_in", {"category": "Bag"}, None, is_new=False)
'Popular in Bag'
>>> explain("covisit", {"category": "Bag"}, "Bold leather bag", is_new=False)
'Often viewed with Bold leather bag'
>>> explain("history", {"category": "Bag"}, "Bold leather bag", is_new=False)
'Shoppers who viewed Bold leather bag also viewed it'
>>> explain("new", {"category": "Uncategorised", "category_source": "unsure"}, None, is_new=True)
'New in the shop, matches your style'
"""

from typing import Any

from schemas.limits import LIMITS

# Behaviour specific to this shopper speaks loudest, then likeness, then the crowd.
_PRIORITY = (
    "context",
    "covisit",
    "history",
    "items",
    "looks",
    "recent",
    "taste",
    "new",
    "trending_in",
    "trending",
    "affinity",
    "catalogue",
)
_LIKENESS = frozenset({"taste", "recent", "new", "looks"})


def strongest(evidence: dict[str, tuple[float, str | None]], looks_alike: float) -> tuple[str, str | None]:
    """Which source explains a candidate: likeness (a cosine) only counts when it is real (≥ ``looks_alike``).

    >>> strongest({"taste": (0.2, None), "trending": (7.0, None)}, looks_alike=0.5)
    ('trending', None)
    >>> strongest({"taste": (0.8, None), "trending": (7.0, None)}, looks_alike=0.5)
    ('taste', None)
    """
    usable = {s: v for s, v in evidence.items() if s not in _LIKENESS or v[0] >= looks_alike}
    for source in _PRIORITY:
        if source in usable:
            return source, usable[source][1]
    source = max(evidence, key=lambda s: evidence[s][0])
    return source, evidence[source][1]


def credited(evidence: dict[str, tuple[float, str | None]], contributions: dict[str, float], looks_alike: float) -> tuple[str, str | None]:
    """The source a candidate's reason names: of the sources that proposed it, the one whose
    features added most to its score (likeness only where it is real, ≥ ``looks_alike``);
    :func:`strongest` when none added anything.

    >>> evidence = {"covisit": (1.0, "p1"), "items": (0.4, None), "taste": (0.3, None)}
    >>> credited(evidence, {"covisit": 0.1, "items": 0.9, "taste": 2.0}, looks_alike=0.5)
    ('items', None)
    >>> credited(evidence, {"covisit": -0.2}, looks_alike=0.5)
    ('covisit', 'p1')
    """
    usable = [s for s, v in evidence.items() if s not in _LIKENESS or v[0] >= looks_alike]
    best = max(usable, key=lambda s: contributions.get(s, 0.0), default=None)
    if best is None or contributions.get(best, 0.0) <= 0.0:
        return strongest(evidence, looks_alike)
    return best, evidence[best][1]


def explain(source: str, payload: dict[str, Any], anchor_title: str | None, is_new: bool) -> str:
    # A product the store head could not file is "Uncategorised": no shopper wants to read that.
    category = "the shop" if payload.get("category_source") == "unsure" else str(payload.get("category") or "the shop")
    if source == "looks" and anchor_title:  # said only of pictures that look alike (``strongest``/``credited``)
        text = f"New in {category}, looks like {anchor_title} you viewed" if is_new else f"Looks like {anchor_title} you viewed"
    elif source in _LIKENESS:  # the fused space: title and picture together, so no claim about looks
        if anchor_title:
            text = f"New in {category}, similar to {anchor_title} you viewed" if is_new else f"Similar to {anchor_title} you viewed"
        else:
            text = f"New in {category}, matches your style" if is_new else f"Matches your style in {category}"
    elif source == "context":  # the fused space
        text = f"Similar to {anchor_title}" if anchor_title else f"More in {category}"
    elif source == "context_looks":  # the picture space (``Recommender.similar`` on a product with a picture)
        text = f"Looks like {anchor_title}" if anchor_title else f"More in {category}"
    elif source == "covisit":
        text = f"Often viewed with {anchor_title}" if anchor_title else "Often viewed together"
    elif source == "history":
        text = f"Shoppers who viewed {anchor_title} also viewed it" if anchor_title else "Shoppers like you viewed it"
    elif source == "items":
        text = "Goes with what you have viewed"
    elif source == "affinity":
        text = "Shoppers with your taste liked it"
    elif source == "trending_in":
        text = f"New in {category}" if is_new else f"Popular in {category}"
    elif source == "trending":
        text = f"New in {category}" if is_new else "Popular right now"
    else:  # catalogue
        text = f"New in {category}" if is_new else f"From our {category} range"
    return text[: LIMITS.reason_chars]
