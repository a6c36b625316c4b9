"""From the engine's picks to the public contract (``RecommendationResponse``), for every interface."""

from datetime import UTC, datetime
from typing import Any

from schemas import RecommendationResponse
from schemas.base import printable
from schemas.experiments import ExperimentTag
from schemas.recommendations import (
    RecommendationError,
    RecommendationFilters,
    RecommendedItem,
)
from services.recommender.engine import Pick
from services.vectors.store import SearchFilters


def image_url(product_id: str, payload: dict[str, Any]) -> str | None:
    """The product's own image URL, else the API path of the thumbnail made when it was indexed."""
    if payload.get("image_url"):
        return str(payload["image_url"])
    return f"/v1/products/{product_id}/image" if payload.get("has_image") else None


def item(pick: Pick) -> RecommendedItem:
    p = pick.payload
    return RecommendedItem(
        product_id=pick.product_id,
        score=pick.score,
        reason=pick.reason,
        title=p.get("title"),
        category=p.get("category"),
        price=float(p["price"]) if p.get("price") is not None else None,
        currency=p.get("currency"),
        image_url=image_url(pick.product_id, p),
    )


def response(
    request_id: str, user_id: str, picks: list[Pick], model_version: str | None, experiment: ExperimentTag | None = None
) -> RecommendationResponse:
    return RecommendationResponse(
        request_id=request_id,
        user_id=user_id,
        items=[item(p) for p in picks],
        model_version=model_version,
        experiment=experiment,
        generated_at=datetime.now(UTC),
    )


def error(request_id: str, user_id: str, code: str, message: str) -> RecommendationResponse:
    return RecommendationResponse(
        request_id=request_id,
        user_id=user_id,
        error=RecommendationError(code=code, message=printable(message)),  # a quoted input may hold anything
        generated_at=datetime.now(UTC),
    )


def search_filters(filters: RecommendationFilters) -> SearchFilters:
    return SearchFilters(category=filters.category, min_price=filters.min_price, max_price=filters.max_price, in_stock=filters.in_stock)
