"""A tiny HTTP server for /metrics (Prometheus) and /healthz, on a daemon thread."""

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class OpsServer:
    """Serves ``registry`` at /metrics and ``health()`` at /healthz (200 when healthy, else 503)."""

    def __init__(self, port: int, registry: CollectorRegistry, health: Callable[[], dict[str, object]], host: str = "127.0.0.1") -> None:
        registry_, health_ = registry, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, status, kind = generate_latest(registry_), 200, CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    report = health_()
                    status = 200 if report.get("healthy") else 503
                    body, kind = json.dumps(report).encode(), "application/json"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # scrapes every few seconds would drown the logs

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    def start(self) -> "OpsServer":
        self._thread.start()
        log.info("metrics and health endpoint up", extra={"url": f"http://127.0.0.1:{self.port}/metrics"})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_ops(port: int, host: str, registry: CollectorRegistry, health: Callable[[], dict[str, object]], setting: str) -> OpsServer | None:
    """Start /metrics and /healthz on ``port`` (0: none); a busy port is a one-line UserError naming ``setting``."""
    from services.errors import UserError

    if not port:
        return None
    try:
        return OpsServer(port, registry, health, host=host).start()
    except OSError as exc:
        raise UserError(f"port {port} for the metrics is busy ({exc.strerror}); set {setting} (0 turns it off)") from None
