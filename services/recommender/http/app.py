"""The FastAPI application: every route, with its limits and documentation (served at /docs)."""

import asyncio
import base64
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas import RecommendationResponse
from schemas.base import ID_PATTERN
from schemas.limits import LIMITS
from services.bus.producer import Producer
from services.recommender import answers
from services.recommender.engine import Query as EngineQuery
from services.recommender.engine import Recommender, UnknownProduct
from services.recommender.http import intake
from services.recommender.http import tokens
from services.recommender.http.guards import Access, ApiKeys, BodyLimit
from services.recommender.http.limits import Buckets, Concurrent
from services.recommender.http.timeouts import BodyTimeout
from services.recommender.http.live import LiveUpdates
from services.recommender.metrics import RecommenderMetrics
from services.settings import Settings, comma_list
from services.vectors.store import ProductStore, SearchFilters

log = logging.getLogger(__name__)

IdPath = Annotated[str, Path(min_length=1, max_length=LIMITS.id_chars, pattern=ID_PATTERN)]
K = Annotated[int, Query(ge=1, le=LIMITS.recommendations, description="How many items.")]
KEEPALIVE_S = 15.0


@dataclass
class ApiParts:
    """What the API talks to; built by `shelfsight serve` (or a test) and passed in."""

    settings: Settings
    engine: Recommender
    store: ProductStore
    producer: Producer
    live: LiveUpdates
    metrics: RecommenderMetrics
    registries: tuple[CollectorRegistry, ...] = ()
    health: Callable[[], dict[str, object]] = lambda: {"healthy": True}
    model_version: Callable[[], str | None] = lambda: None


def _filters(category: str | None, min_price: float | None, max_price: float | None, in_stock: bool | None) -> SearchFilters:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise HTTPException(422, "min_price is greater than max_price")
    return SearchFilters(category=category, min_price=min_price, max_price=max_price, in_stock=in_stock)


def build_api(parts: ApiParts) -> FastAPI:
    settings, engine, metrics, live = parts.settings, parts.engine, parts.metrics, parts.live
    keys = ApiKeys.parse(settings.api_keys.get_secret_value(), settings.publishable_keys)
    token_secret = settings.shopper_token_secret.get_secret_value().encode() if settings.shopper_token_secret else None
    if token_secret is None:
        log.warning("anyone who knows a user id can read that shopper's recommendations: set SHELFSIGHT_SHOPPER_TOKEN_SECRET")
    per_client = Buckets(settings.api_client_events_per_s, 4 * settings.api_client_events_per_s)
    per_key = Buckets(settings.api_key_events_per_s, 4 * settings.api_key_events_per_s)
    streams = Concurrent(settings.api_client_streams)

    def as_shopper(user_id: str, api_key: str | None, token: str | None) -> None:
        """With shopper tokens on, only that shopper's token (or a secret key) acts for them."""
        if token_secret is None or keys.access(api_key) is Access.ALL:
            return
        problem = tokens.verify(token_secret, user_id, token, time.time(), settings.shopper_token_max_ttl_s)
        if problem is not None:
            metrics.refused.labels("shopper_token").inc()
            raise HTTPException(401 if not token else 403, problem)

    def too_many(detail: str, retry_after_s: float) -> HTTPException:
        metrics.refused.labels("rate_limited").inc()
        return HTTPException(429, detail, headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))})

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built at start (engine, learners, clients) lives as long as the process:
        # kept out of the cyclic collector, whose full passes over it stalled requests ~100 ms.
        gc.collect()
        gc.freeze()
        listener = asyncio.create_task(live.run(), name="live-updates")
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    app = FastAPI(
        title="Shelfsight",
        version="1",
        summary="Real-time product recommendations from what products look like and what shoppers do.",
        lifespan=lifespan,
    )
    origins = list(comma_list(settings.cors_origins))
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "X-Shopper-Token"], max_age=600,
        )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(BodyTimeout, timeout_s=settings.api_body_timeout_s)

    def recommend(user_id: str, k: int, filters: SearchFilters, context: str | None, interface: str) -> RecommendationResponse:
        started = time.perf_counter()
        request_id = f"http-{uuid.uuid4().hex}"
        result = engine.recommend(EngineQuery(user_id, k, filters, context, request_id))
        metrics.requests.labels(interface, "ok").inc()
        metrics.latency.labels(interface).observe(time.perf_counter() - started)
        return answers.response(request_id, user_id, result.items, parts.model_version())

    @app.get("/v1/users/{user_id:path}/recommendations/stream", tags=["recommendations"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def recommendation_stream(
        request: Request,
        user_id: IdPath,
        k: K = 8,
        category: str | None = None,
        min_price: Annotated[float | None, Query(ge=0)] = None,
        max_price: Annotated[float | None, Query(ge=0)] = None,
        token: Annotated[str | None, Query(max_length=200, description="Shopper token (EventSource cannot send headers).")] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: a `recommendations` event now, and again whenever the shopper's profile changes."""
        as_shopper(user_id, x_api_key, token)
        filters = _filters(category, min_price, max_price, True)
        client = client_of(request)
        if not streams.acquire(client):
            raise too_many(f"more than {settings.api_client_streams} live streams from one address (SHELFSIGHT_API_CLIENT_STREAMS)", 5)
        queue = live.subscribe(user_id)
        if queue is None:
            streams.release(client)
            raise HTTPException(503, "too many open streams; retry later")
        metrics.streams.inc()

        async def events() -> AsyncIterator[str]:
            try:
                while True:
                    answer = await run_in_threadpool(recommend, user_id, k, filters, None, "sse")
                    yield f"event: recommendations\ndata: {answer.model_dump_json()}\n\n"
                    while True:
                        try:
                            await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                            break
                        except TimeoutError:
                            if await request.is_disconnected():
                                return
                            yield ": keep-alive\n\n"
            finally:
                live.unsubscribe(user_id, queue)
                streams.release(client)
                metrics.streams.dec()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/users/{user_id:path}/recommendations", response_model=RecommendationResponse, tags=["recommendations"])
    def user_recommendations(
        user_id: IdPath,
        k: K = 10,
        category: str | None = None,
        min_price: Annotated[float | None, Query(ge=0)] = None,
        max_price: Annotated[float | None, Query(ge=0)] = None,
        in_stock: bool | None = True,
        context_product_id: str | None = None,
        x_api_key: Annotated[str | None, Header()] = None,
        x_shopper_token: Annotated[str | None, Header(max_length=200)] = None,
    ) -> RecommendationResponse:
        """Recommendations for a shopper, fresh from their latest clicks. Purchased and recently seen items are left out.

        With shopper tokens on (`SHELFSIGHT_SHOPPER_TOKEN_SECRET`), send the shopper's token in
        `X-Shopper-Token`, or a secret key in `X-API-Key`."""
        as_shopper(user_id, x_api_key, x_shopper_token)
        return recommend(user_id, k, _filters(category, min_price, max_price, in_stock), context_product_id, "http")

    @app.get("/v1/products/{product_id:path}/similar", response_model=RecommendationResponse, tags=["products"])
    def similar_products(
        product_id: IdPath,
        k: K = 10,
        category: str | None = None,
        min_price: Annotated[float | None, Query(ge=0)] = None,
        max_price: Annotated[float | None, Query(ge=0)] = None,
        in_stock: bool | None = True,
    ) -> RecommendationResponse:
        """Products that look like this one."""
        try:
            result = engine.similar(product_id, k, _filters(category, min_price, max_price, in_stock))
        except UnknownProduct:
            raise HTTPException(404, f"product {product_id} is not indexed") from None
        return answers.response(f"http-{uuid.uuid4().hex}", "", result.items, parts.model_version())

    @app.get("/v1/products/{product_id:path}/image", tags=["products"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {}})
    def product_image(product_id: IdPath) -> Response:
        """The product's thumbnail, made when it was indexed (or a redirect to its own image URL)."""
        found = parts.store.get([product_id], fields=("thumbnail", "image_url", "image_error"))
        if not found:
            raise HTTPException(404, f"product {product_id} is not indexed")
        payload = found[0].payload
        if payload.get("thumbnail"):
            return Response(base64.b64decode(payload["thumbnail"]), media_type="image/jpeg",
                            headers={"Cache-Control": "public, max-age=86400"})
        if payload.get("image_error"):  # the embedder refused or failed that URL: never send a browser there
            raise HTTPException(404, f"product {product_id} has no usable image: {payload['image_error']}")
        if payload.get("image_url"):
            return RedirectResponse(payload["image_url"], status_code=302)
        raise HTTPException(404, f"product {product_id} has no image")

    @app.post("/v1/events", status_code=202, tags=["events"],
              responses={401: {}, 403: {}, 413: {}, 422: {}, 503: {}})
    async def post_events(request: Request, x_api_key: Annotated[str | None, Header()] = None,
                          x_shopper_token: Annotated[str | None, Header(max_length=200)] = None) -> dict[str, Any]:
        """Publish click events (publishable or secret key) or product events (secret key) to Kafka.

        The body is one event or an array of up to 500. It is answered once Kafka has stored them all.
        With a publishable key, events are rate-limited per client address and per key (429 with
        Retry-After), and with shopper tokens on each event's shopper needs `X-Shopper-Token`.
        """
        if not keys.configured:
            raise HTTPException(503, "no API keys configured: set SHELFSIGHT_API_KEYS and/or SHELFSIGHT_PUBLISHABLE_KEYS")
        access = keys.access(x_api_key)
        if access is Access.NONE:
            metrics.events.labels("unauthorized").inc()
            raise HTTPException(401, "missing or unknown X-API-Key")
        checked = intake.validate(await request.body(), access)
        if access is Access.CLICKS and checked.accepted:
            for user_id in sorted({event.user_id for _, event in checked.accepted}):
                as_shopper(user_id, x_api_key, x_shopper_token)
            count = len(checked.accepted)
            wait = per_client.take(client_of(request), count)
            if wait:
                raise too_many(f"more than {settings.api_client_events_per_s:g} events/s from one address "
                               "(SHELFSIGHT_API_CLIENT_EVENTS_PER_S)", wait)
            wait = per_key.take(x_api_key or "", count)
            if wait:
                raise too_many(f"more than {settings.api_key_events_per_s:g} events/s with this key (SHELFSIGHT_API_KEY_EVENTS_PER_S)", wait)
        if checked.forbidden:
            metrics.events.labels("forbidden").inc()
            return JSONResponse({"detail": "forbidden", "problems": checked.problems}, status_code=403)
        if checked.problems:
            metrics.events.labels("invalid").inc(len(checked.problems))
            return JSONResponse({"detail": "invalid events; none was published", "problems": checked.problems}, status_code=422)
        errors = await run_in_threadpool(intake.publish, settings, parts.producer, checked)
        if errors:
            metrics.events.labels("failed").inc(len(checked.accepted))
            raise HTTPException(503, f"Kafka did not acknowledge the events: {errors[0]}")
        metrics.events.labels("published").inc(len(checked.accepted))
        return {"accepted": len(checked.accepted)}

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        report = parts.health()
        return JSONResponse(report, status_code=200 if report.get("healthy") else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def prometheus() -> Response:
        body = b"".join(generate_latest(r) for r in (metrics.registry, *parts.registries))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    web = resources.files("services.recommender") / "web"
    widget_js = (web / "shelfsight-recs.js").read_bytes()
    storefront = (web / "storefront.html").read_text()

    @app.get("/widget/shelfsight-recs.js", include_in_schema=False)
    def widget() -> Response:
        return Response(widget_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"})

    @app.get("/", include_in_schema=False)
    def storefront_page() -> HTMLResponse:
        key = keys.publishable[0] if keys.publishable else ""
        return HTMLResponse(storefront.replace("{{PUBLISHABLE_KEY}}", key))

    return app
