"""Who may do what, and how often: one ``Gate`` per API, built from the settings.

Every limit counts a client by ``clients.client_address`` (the trusted-proxy rule, IPv6 by
/64). A secret key is a store's back end, speaking for many shoppers from one address, so the
per-address limits do not apply to it; everyone else is counted (docs/security.md).
"""

import math
import time
from typing import Annotated

from fastapi import Header, HTTPException, Request

from services.recommender.http import clients, tokens
from services.recommender.http.guards import Access, ApiKeys
from services.recommender.http.limits import Buckets, Concurrent
from services.recommender.metrics import RecommenderMetrics
from services.settings import Settings

BURST_SECONDS = 4  # every rate may be spent four seconds' worth at once


class Gate:
    def __init__(self, settings: Settings, metrics: RecommenderMetrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.keys = ApiKeys.parse(settings.api_keys.get_secret_value(), settings.publishable_keys)
        secret = settings.shopper_token_secret
        self.token_secret = secret.get_secret_value().encode() if secret is not None else None
        self.trusted = clients.networks(settings.trusted_proxies)
        self.client_events = _buckets(settings.api_client_events_per_s)
        self.key_events = _buckets(settings.api_key_events_per_s)
        self.client_requests = _buckets(settings.api_client_requests_per_s)
        self.client_streams = Concurrent(settings.api_client_streams)
        self.user_streams = Concurrent(settings.api_user_streams)

    def client(self, request: Request) -> str:
        """The address (or IPv6 /64) the per-address limits count ``request`` under."""
        peer = request.client.host if request.client else None
        return clients.client_address(peer, request.headers.getlist("x-forwarded-for"), self.trusted)

    def as_shopper(self, user_id: str, api_key: str | None, token: str | None) -> float | None:
        """With shopper tokens on, only that shopper's token (or a secret key) acts for them.
        Returns when the token expires (None when no token was needed), so a stream can end then."""
        if self.token_secret is None or self.keys.access(api_key) is Access.ALL:
            return None
        problem = tokens.verify(self.token_secret, user_id, token, time.time(), self.settings.shopper_token_max_ttl_s)
        if problem is not None:
            self.metrics.refused.labels("shopper_token").inc()
            raise HTTPException(401 if not token else 403, problem)
        return tokens.expiry(token or "")

    def acts_for_shopper(self, api_key: str | None) -> bool:
        """After :meth:`as_shopper` passed: whether the caller proved it acts for the shopper (a secret
        key, or the shopper's token when tokens are on), not merely named them."""
        return self.token_secret is not None or self.keys.access(api_key) is Access.ALL

    def limit_requests(self, request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
        """A dependency of the GET routes: SHELFSIGHT_API_CLIENT_REQUESTS_PER_S per address."""
        if self.keys.access(x_api_key) is Access.ALL:
            return
        wait = self.client_requests.take(self.client(request))
        if wait:
            raise self.too_many(
                f"more than {self.settings.api_client_requests_per_s:g} requests/s from one address (SHELFSIGHT_API_CLIENT_REQUESTS_PER_S)",
                wait,
            )

    def charge_events(self, request: Request, count: int) -> None:
        """Charge a batch of ``count`` events to its address, before it is validated."""
        self._charge(self.client_events, self.client(request), count, "one address", "SHELFSIGHT_API_CLIENT_EVENTS_PER_S")

    def charge_key(self, api_key: str, count: int) -> None:
        """Charge a batch to its publishable key, shared by the whole shop: only once its shoppers'
        tokens held, so junk posted with the public key alone cannot use up the shop's budget."""
        self._charge(self.key_events, api_key, count, "this key", "SHELFSIGHT_API_KEY_EVENTS_PER_S")

    def _charge(self, buckets: Buckets, key: str, count: int, who: str, setting: str) -> None:
        wait = buckets.take(key, count)
        if wait == math.inf:  # no wait would let it through: say how big a batch may be
            self.metrics.refused.labels("rate_limited").inc()
            most = int(buckets.burst)
            raise HTTPException(
                413,
                f"a batch of {count} events is more than {who} may send at once ({most}: "
                f"{BURST_SECONDS} × {setting}); send at most {most} events per request",
            )
        if wait:
            rate = buckets.burst / BURST_SECONDS
            raise self.too_many(f"more than {rate:g} events/s from {who} ({setting})", wait)

    def too_many(self, detail: str, retry_after_s: float) -> HTTPException:
        self.metrics.refused.labels("rate_limited").inc()
        return HTTPException(429, detail, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def _buckets(rate_per_s: float) -> Buckets:
    return Buckets(rate_per_s, BURST_SECONDS * rate_per_s)
