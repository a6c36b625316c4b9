"""Products: those that look like a given one, and each one's thumbnail."""

import base64
import uuid

from fastapi import APIRouter, Depends, HTTPException, Response
from fastapi.responses import RedirectResponse

from schemas import RecommendationResponse
from services.recommender import answers
from services.recommender.engine import UnknownProduct
from services.recommender.http.access import Gate
from services.recommender.http.params import Filters, IdPath, K
from services.recommender.http.parts import ApiParts


def router(parts: ApiParts, gate: Gate) -> APIRouter:
    routes = APIRouter(tags=["products"], dependencies=[Depends(gate.limit_requests)])

    @routes.get("/v1/products/{product_id:path}/similar", response_model=RecommendationResponse, responses={429: {}})
    def similar_products(product_id: IdPath, filters: Filters, k: K = 10) -> RecommendationResponse:
        """Products that look like this one."""
        try:
            result = parts.engine.similar(product_id, k, filters)
        except UnknownProduct:
            raise HTTPException(404, f"product {product_id} is not indexed") from None
        return answers.response(f"http-{uuid.uuid4().hex}", "", result.items, parts.model_version())

    @routes.get(
        "/v1/products/{product_id:path}/image", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, 404: {}, 429: {}}
    )
    def product_image(product_id: IdPath) -> Response:
        """The product's thumbnail, made when it was indexed (or a redirect to its own image URL)."""
        found = parts.store.get([product_id], fields=("thumbnail", "image_url", "image_error"))
        if not found:
            raise HTTPException(404, f"product {product_id} is not indexed")
        payload = found[0].payload
        if payload.get("thumbnail"):
            return Response(
                base64.b64decode(payload["thumbnail"]), media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"}
            )
        if payload.get("image_error"):  # the embedder refused or failed that URL: never send a browser there
            raise HTTPException(404, f"product {product_id} has no usable image: {payload['image_error']}")
        if payload.get("image_url"):
            return RedirectResponse(payload["image_url"], status_code=302)
        raise HTTPException(404, f"product {product_id} has no image")

    return routes
