"""A shopper's recommendations: one answer, or a live stream of them (Server-Sent Events).

Both are behind the per-address request limit; the stream also behind caps on open streams
per address and per shopper, and it ends when the shopper token it was opened with expires
(a stream lives for hours; checking the token only at connect would let it outlive it).
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from schemas import RecommendationResponse
from schemas.limits import LIMITS
from services.recommender import answers
from services.recommender.engine import Query as EngineQuery
from services.recommender.http.access import Gate
from services.recommender.http.params import Filters, IdPath, K
from services.recommender.http.parts import ApiParts
from services.vectors.store import SearchFilters

KEEPALIVE_S = 15.0
EXPIRED = 'event: expired\ndata: {"detail": "the shopper token has expired: ask the store for a new one"}\n\n'


def router(parts: ApiParts, gate: Gate) -> APIRouter:
    routes = APIRouter(tags=["recommendations"], dependencies=[Depends(gate.limit_requests)])
    _add_stream(routes, parts, gate)
    _add_recommendations(routes, parts, gate)
    return routes


def _recommend(
    parts: ApiParts, user_id: str, k: int, filters: SearchFilters, context: str | None, interface: str, known: bool
) -> RecommendationResponse:
    """``known``: the caller proved it acts for the shopper (their token, or a secret key); only then
    does the list enter an experiment, so nobody can count lists in another shopper's name."""
    started = time.perf_counter()
    request_id = f"http-{uuid.uuid4().hex}"
    result = parts.engine.recommend(EngineQuery(user_id, k, filters, context, request_id, experiments=known))
    parts.metrics.requests.labels(interface, "ok").inc()
    parts.metrics.latency.labels(interface).observe(time.perf_counter() - started)
    return answers.response(request_id, user_id, result.items, result.model_version or parts.model_version(), result.experiment)


def _add_recommendations(routes: APIRouter, parts: ApiParts, gate: Gate) -> None:
    @routes.get("/v1/users/{user_id:path}/recommendations", response_model=RecommendationResponse, responses={429: {}})
    def user_recommendations(
        user_id: IdPath,
        filters: Filters,
        k: K = 10,
        context_product_id: Annotated[str | None, Query(max_length=LIMITS.id_chars)] = None,
        x_api_key: Annotated[str | None, Header()] = None,
        x_shopper_token: Annotated[str | None, Header(max_length=200)] = None,
    ) -> RecommendationResponse:
        """Recommendations for a shopper, fresh from their latest clicks. Purchased and recently seen items are left out.

        With shopper tokens on (`SHELFSIGHT_SHOPPER_TOKEN_SECRET`), send the shopper's token in
        `X-Shopper-Token`, or a secret key in `X-API-Key`."""
        gate.as_shopper(user_id, x_api_key, x_shopper_token)
        return _recommend(parts, user_id, k, filters, context_product_id, "http", gate.acts_for_shopper(x_api_key))


def _add_stream(routes: APIRouter, parts: ApiParts, gate: Gate) -> None:
    @routes.get(
        "/v1/users/{user_id:path}/recommendations/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 429: {}},
    )
    async def recommendation_stream(
        request: Request,
        user_id: IdPath,
        filters: Filters,
        k: K = 8,
        token: Annotated[str | None, Query(max_length=200, description="Shopper token (EventSource cannot send headers).")] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: a `recommendations` event now, and again whenever the shopper's profile changes.
        With shopper tokens on, an `expired` event ends the stream when its token expires."""
        expires = gate.as_shopper(user_id, x_api_key, token)
        release = _open_stream(parts, gate, gate.client(request), user_id)
        queue = parts.live.subscribe(user_id)
        if queue is None:
            release()
            raise HTTPException(503, "too many open streams; retry later")
        parts.metrics.streams.inc()

        known = gate.acts_for_shopper(x_api_key)

        def answer() -> RecommendationResponse:
            return _recommend(parts, user_id, k, filters, None, "sse", known)

        async def events() -> AsyncIterator[str]:
            try:
                async for event in _events(request, answer, queue, expires):
                    yield event
            finally:
                parts.live.unsubscribe(user_id, queue)
                release()
                parts.metrics.streams.dec()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(
    request: Request, answer: Callable[[], RecommendationResponse], changes: "asyncio.Queue[None]", expires: float | None
) -> AsyncIterator[str]:
    """Recommendations now and after every change, keep-alives between; over once ``expires`` has passed."""
    while True:
        fresh = await run_in_threadpool(answer)
        yield f"event: recommendations\ndata: {fresh.model_dump_json()}\n\n"
        while True:
            left = KEEPALIVE_S if expires is None else min(KEEPALIVE_S, expires - time.time())
            if left <= 0:
                yield EXPIRED
                return
            try:
                await asyncio.wait_for(changes.get(), timeout=left)
                break
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"


def _open_stream(parts: ApiParts, gate: Gate, client: str, user_id: str) -> Callable[[], None]:
    """Take a stream slot for ``client`` and for ``user_id``; returns what gives both back."""
    settings = parts.settings
    if not gate.client_streams.acquire(client):
        raise gate.too_many(f"more than {settings.api_client_streams} live streams from one address (SHELFSIGHT_API_CLIENT_STREAMS)", 5)
    if not gate.user_streams.acquire(user_id):
        gate.client_streams.release(client)
        raise gate.too_many(f"more than {settings.api_user_streams} live streams for one shopper (SHELFSIGHT_API_USER_STREAMS)", 5)

    def release() -> None:
        gate.user_streams.release(user_id)
        gate.client_streams.release(client)

    return release
