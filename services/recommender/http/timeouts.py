"""Slow clients cannot hold connections: a deadline for each request head and for each body.

uvicorn times out idle keep-alive connections, but not a client that trickles its headers
or its body a byte at a time: a few hundred of those would hold the API's connections for
ever. ``head_timeout_protocol`` closes a connection whose request head is not complete in
time (from the connection's start, or from the previous response); ``BodyTimeout`` answers
408 when a body is not complete in time. Streaming responses (the SSE stream) are not
affected: the deadlines cover only what the client sends.
"""

import asyncio

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.recommender.http.guards import StartTracking, json_error
from services.settings import Settings


class _HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own: a Transport
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request's head is already in
        super().on_response_complete()
        if waiting and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def head_timeout_protocol(head_timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for every request head (``uvicorn.Config(http=…)``)."""
    return type("HeadTimeoutProtocol", (_HeadTimeoutProtocol,), {"head_timeout_s": head_timeout_s})


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How ``shelfsight serve`` runs the API: its address, and the head deadline on every connection.

    uvicorn's own proxy headers are off: by default it believes ``X-Forwarded-For`` from
    127.0.0.1, so anyone on the machine could pick the address the limits count them under.
    ``SHELFSIGHT_TRUSTED_PROXIES`` decides instead (``http/clients.py``)."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        http=head_timeout_protocol(settings.api_head_timeout_s),
        proxy_headers=False,
    )


class BodyTimeout:
    """Answers 408 when a request body has not fully arrived ``timeout_s`` after its head."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = False

        async def bounded() -> Message:
            nonlocal body_done
            if body_done:  # after the body, receive() only waits for a disconnect (SSE): no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _TooSlow() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        tracking = StartTracking(send)
        try:
            await self.app(scope, bounded, tracking)
        except _TooSlow:
            if not tracking.started:
                await json_error(send, 408, f"request body not received within {self.timeout_s:g} s", close=True)


class _TooSlow(Exception):
    pass
