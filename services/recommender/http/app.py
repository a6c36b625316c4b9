"""The FastAPI application: the routers of each concern, the middleware, the widget and the
storefront page, and the ops port when one is set (OpenAPI at /docs)."""

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse

from services.recommender.http import events, experiments, ops, products, shoppers
from services.recommender.http.access import Gate
from services.recommender.http.guards import BodyLimit
from services.recommender.http.parts import ApiParts
from services.recommender.http.timeouts import BodyTimeout
from services.settings import comma_list

__all__ = ["ApiParts", "build_api"]

log = logging.getLogger(__name__)


def build_api(parts: ApiParts) -> FastAPI:
    """The public API over ``parts``. With SHELFSIGHT_API_OPS_PORT set, its port is bound now
    (a busy one is a UserError here) and served while the API runs."""
    settings = parts.settings
    gate = Gate(settings, parts.metrics)
    if gate.token_secret is None:
        log.warning("anyone who knows a user id can read that shopper's recommendations: set SHELFSIGHT_SHOPPER_TOKEN_SECRET")
    ops_socket = ops.bind(settings.metrics_host, settings.api_ops_port) if settings.api_ops_port else None
    on_api_port = ops_socket is None
    app = FastAPI(
        title="Shelfsight",
        version="1",
        summary="Real-time product recommendations from what products look like and what shoppers do.",
        lifespan=_lifespan(parts, ops_socket),
        docs_url="/docs" if on_api_port else None,
        redoc_url="/redoc" if on_api_port else None,
        openapi_url="/openapi.json" if on_api_port else None,
    )
    origins = list(comma_list(settings.cors_origins))
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "X-Shopper-Token"],
            max_age=600,
        )
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(BodyTimeout, timeout_s=settings.api_body_timeout_s)
    app.include_router(shoppers.router(parts, gate))
    app.include_router(products.router(parts, gate))
    app.include_router(events.router(parts, gate))
    if parts.experiment_report is not None:
        app.include_router(experiments.router(parts.experiment_report, parts.experiments, gate.keys))
        app.include_router(experiments.dashboard())
    app.include_router(ops.health_router(parts, full=on_api_port))
    if on_api_port:
        app.include_router(ops.metrics_router(parts))
    _add_storefront(app, gate.keys.publishable)
    return app


def _lifespan(parts: ApiParts, ops_socket: socket.socket | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything built at start (engine, learners, clients) lives as long as the process:
        # kept out of the cyclic collector, whose full passes over it stalled requests ~100 ms.
        gc.collect()
        gc.freeze()
        listener = asyncio.create_task(parts.live.run(), name="live-updates")
        with contextlib.ExitStack() as stack:
            if ops_socket is not None:
                stack.enter_context(ops.ops_server(parts, app, ops_socket))
            try:
                yield
            finally:
                listener.cancel()
                # Bounded: a Redis connection stuck mid-close must not hold the process's stop.
                _, pending = await asyncio.wait({listener}, timeout=5.0)
                if pending:
                    log.warning("live updates did not stop within 5 s; leaving them")

    return lifespan


def _add_storefront(app: FastAPI, publishable: tuple[str, ...]) -> None:
    """The widget's script and the demo storefront page that uses it."""
    web = resources.files("services.recommender") / "web"
    widget_js = (web / "shelfsight-recs.js").read_bytes()
    storefront = (web / "storefront.html").read_text()

    @app.get("/widget/shelfsight-recs.js", include_in_schema=False)
    def widget() -> Response:
        return Response(widget_js, media_type="text/javascript", headers={"Cache-Control": "public, max-age=300"})

    @app.get("/", include_in_schema=False)
    def storefront_page() -> HTMLResponse:
        key = publishable[0] if publishable else ""
        return HTMLResponse(storefront.replace("{{PUBLISHABLE_KEY}}", key))
