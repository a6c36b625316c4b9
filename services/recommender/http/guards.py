"""API keys, the start-up check and request size limits for the HTTP API.

Two kinds of key: secret keys (``SHELFSIGHT_API_KEYS``) may post any event, from a store's
back end; publishable keys (``SHELFSIGHT_PUBLISHABLE_KEYS``) are meant to sit in a web page,
so they may post shoppers' click events only, never a purchase (docs/security.md).
"""

import hmac
import json
from dataclasses import dataclass
from enum import Enum

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.errors import UserError
from services.settings import Settings, comma_list


class Access(str, Enum):
    NONE = "none"
    CLICKS = "clicks"
    ALL = "all"


@dataclass(frozen=True)
class ApiKeys:
    secret: tuple[str, ...] = ()
    publishable: tuple[str, ...] = ()

    @classmethod
    def parse(cls, secret: str, publishable: str) -> "ApiKeys":
        return cls(comma_list(secret), comma_list(publishable))

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.publishable)

    def access(self, presented: str | None) -> Access:
        """What ``presented`` may do; every key is compared in constant time."""
        if not presented:
            return Access.NONE
        given = presented.encode()
        if any(hmac.compare_digest(given, k.encode()) for k in self.secret):
            return Access.ALL
        if any(hmac.compare_digest(given, k.encode()) for k in self.publishable):
            return Access.CLICKS
        return Access.NONE


def check_serving(settings: Settings) -> None:
    """Refuse to serve an API that would be open by mistake (`shelfsight serve` calls this first)."""
    if settings.publishable_keys and settings.shopper_token_secret is None:
        # A publishable key sits in a web page; without tokens anyone could then read any
        # shopper's recommendations and post clicks in their name.
        raise UserError(
            "SHELFSIGHT_PUBLISHABLE_KEYS is set but SHELFSIGHT_SHOPPER_TOKEN_SECRET is not: set it to a random "
            "secret of at least 16 characters that the store's back end signs shopper tokens with"
        )
    if settings.api_ops_port and settings.api_ops_port == settings.api_port:
        raise UserError(
            f"SHELFSIGHT_API_OPS_PORT is the API port ({settings.api_port}): set it to another port, or 0 "
            "to serve /metrics and /docs on the API port"
        )


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._too_large = f"request body over the {max_bytes} byte limit (SHELFSIGHT_API_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await json_error(send, 413, self._too_large)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        tracking = StartTracking(send)
        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not tracking.started:
                await json_error(send, 413, self._too_large)


class StartTracking:
    """Wraps ``send`` and remembers whether the response has started (an error can only be sent before)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def json_error(send: Send, status: int, detail: str, close: bool = False) -> None:
    """A complete JSON error response ``{"detail": …}``, written straight to ASGI ``send``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
