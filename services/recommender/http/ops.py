"""Operations routes: /healthz, /metrics and the API documentation, and the ops port.

With ``SHELFSIGHT_API_OPS_PORT`` set, /metrics, /docs, /openapi.json and the full /healthz
report move to a second server on ``SHELFSIGHT_METRICS_HOST`` (127.0.0.1 by default): the
metrics name every route and outcome, the health report names failed parts, and neither is
for the public. The API port keeps a /healthz that says only healthy or not, for load
balancers. The ops server starts and stops with the API (its lifespan), in a thread of its own.
"""

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.errors import UserError
from services.recommender.http.parts import ApiParts
from services.recommender.http.timeouts import head_timeout_protocol

log = logging.getLogger(__name__)


def health_router(parts: ApiParts, full: bool) -> APIRouter:
    """/healthz: the whole report (``full``), or only whether the process is healthy."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    def healthz() -> JSONResponse:
        report = parts.health()
        healthy = bool(report.get("healthy"))
        return JSONResponse(report if full else {"healthy": healthy}, status_code=200 if healthy else 503)

    return router


def metrics_router(parts: ApiParts) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", response_class=Response)
    def prometheus() -> Response:
        body = b"".join(generate_latest(r) for r in (parts.metrics.registry, *parts.registries))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def build_ops_api(parts: ApiParts, public: FastAPI) -> FastAPI:
    """The ops port's app: metrics, the full health report, and the public API's documentation."""
    ops = FastAPI(title="Shelfsight (operations)", version="1", redoc_url=None)
    ops.include_router(health_router(parts, full=True))
    ops.include_router(metrics_router(parts))
    if parts.experiment_report is not None:
        from services.recommender.http import experiments
        from services.recommender.http.guards import ApiKeys

        settings = parts.settings
        keys = ApiKeys.parse(settings.api_keys.get_secret_value(), settings.publishable_keys)
        ops.include_router(experiments.router(parts.experiment_report, parts.experiments, keys))
        ops.include_router(experiments.dashboard())
    ops.openapi = public.openapi  # type: ignore[method-assign]  # /docs here describes the public API
    return ops


def bind(host: str, port: int) -> socket.socket:
    """The ops port's socket, bound now: a busy port is one line from `serve` before anything starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(
            f"the ops API could not listen on {host}:{port} ({exc.strerror}); "
            "set SHELFSIGHT_API_OPS_PORT to a free port, or SHELFSIGHT_METRICS_HOST"
        ) from None
    return sock


@contextlib.contextmanager
def ops_server(parts: ApiParts, public: FastAPI, sock: socket.socket) -> Iterator[None]:
    """The ops server on ``sock`` while the API runs: started in a thread, stopped when the API stops."""
    settings = parts.settings
    server = uvicorn.Server(
        uvicorn.Config(
            build_ops_api(parts, public),
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=2,
            http=head_timeout_protocol(settings.api_head_timeout_s),
        )
    )
    # Off the main thread uvicorn leaves signals alone: the API's own server handles them.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ops-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    url = f"http://{settings.metrics_host}:{settings.api_ops_port}/"
    if server.started:
        log.info("ops API listening", extra={"url": url})
    else:  # the port is bound already, so this is no user mistake: say so and serve the API regardless
        log.error("the ops API did not start; /metrics and /docs are unavailable", extra={"url": url})
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
