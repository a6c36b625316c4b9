"""``POST /v1/events``: who may post what, charged to the rate limits before anything is checked.

The batch is charged by its size as soon as it parses as JSON, invalid events included: the
limits bound the work a client causes, and validating 500 events is work.
"""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from schemas.topics import CLICKS
from services.recommender.http import intake
from services.recommender.http.access import Gate
from services.recommender.http.guards import Access
from services.recommender.http.parts import ApiParts
from services.recommender.just_posted import Posted

log = logging.getLogger(__name__)


def router(parts: ApiParts, gate: Gate) -> APIRouter:
    routes = APIRouter(tags=["events"])
    metrics = parts.metrics

    @routes.post(
        "/v1/events", status_code=202, response_model=dict[str, Any], responses={401: {}, 403: {}, 413: {}, 422: {}, 429: {}, 503: {}}
    )
    async def post_events(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        x_shopper_token: Annotated[str | None, Header(max_length=200)] = None,
    ) -> dict[str, Any] | JSONResponse:
        """Publish click events (publishable or secret key) or product events and purchases (secret key) to Kafka.

        The body is one event or an array of up to 500. It is answered once Kafka has stored them all.
        With a publishable key, events are rate-limited per client address and per key (429 with
        Retry-After; 413 for a batch larger than a burst), and with shopper tokens on each event's
        shopper needs `X-Shopper-Token`.
        """
        if not gate.keys.configured:
            raise HTTPException(503, "no API keys configured: set SHELFSIGHT_API_KEYS and/or SHELFSIGHT_PUBLISHABLE_KEYS")
        access = gate.keys.access(x_api_key)
        if access is Access.NONE:
            metrics.events.labels("unauthorized").inc()
            raise HTTPException(401, "missing or unknown X-API-Key")
        parsed = intake.parse(await request.body())
        if access is Access.CLICKS:
            gate.charge_events(request, parsed.count)
        checked = intake.validate(parsed, access)
        if access is Access.CLICKS:
            for user_id in sorted({event.user_id for _, event in checked.accepted}):
                gate.as_shopper(user_id, x_api_key, x_shopper_token)
            gate.charge_key(x_api_key or "", parsed.count)
        if checked.forbidden:
            metrics.events.labels("forbidden").inc()
            return JSONResponse({"detail": "forbidden", "problems": checked.problems}, status_code=403)
        if checked.problems:
            metrics.events.labels("invalid").inc(len(checked.problems))
            return JSONResponse({"detail": "invalid events; none was published", "problems": checked.problems}, status_code=422)
        errors = await run_in_threadpool(intake.publish, parts.settings, parts.producer, checked)
        if not errors:  # in Kafka now: the shoppers' next requests read them before the worker has applied them
            parts.engine.posted.add(Posted(e.user_id, e.product_id, e.kind.value) for topic, e in checked.accepted if topic == CLICKS.name)
        if errors:
            metrics.events.labels("failed").inc(len(checked.accepted))
            # What Kafka said names brokers and topics: for the log, not for the client.
            log.warning("events not acknowledged by Kafka", extra={"events": len(checked.accepted), "error": errors[0][:300]})
            raise HTTPException(
                503, "the events could not all be stored just now: send the batch again later (its event ids make that safe)"
            )
        metrics.events.labels("published").inc(len(checked.accepted))
        return {"accepted": len(checked.accepted)}

    return routes
