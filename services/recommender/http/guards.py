"""API keys and request size limits for the HTTP API.

Two kinds of key: secret keys (``SHELFSIGHT_API_KEYS``) may post any event, from a store's
back end; publishable keys (``SHELFSIGHT_PUBLISHABLE_KEYS``) are meant to sit in a web page,
so they may post shoppers' click events only.
"""

import hmac
from dataclasses import dataclass
from enum import Enum

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.settings import comma_list


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


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413: by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body over the {limit} byte limit (SHELFSIGHT_API_MAX_BODY_BYTES)"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
