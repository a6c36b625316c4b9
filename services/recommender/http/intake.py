"""``POST /v1/events``: validate a batch of events, publish them, answer once Kafka has them.

All or nothing: if any event breaks its contract, none is published and the answer lists
every problem by index, so a client can fix and resend the batch (event ids make that safe).
"""

import json
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from schemas import ClickEvent, ContractError, decode, encode
from schemas.topics import CLICKS, PRODUCTS_LISTED
from services.bus.producer import Producer
from services.recommender.http.guards import Access
from services.settings import Settings

MAX_EVENTS = 500
PRODUCT_EVENT_KINDS = {"product.listed", "product.updated"}


@dataclass
class Intake:
    accepted: list[tuple[str, Any]] = field(default_factory=list)  # (logical topic, event)
    problems: list[dict[str, Any]] = field(default_factory=list)
    forbidden: bool = False


def validate(body: bytes, access: Access) -> Intake:
    """The events in ``body`` (one object or an array), each checked against its contract."""
    intake = Intake()
    try:
        # pydantic-core's parser bounds nesting (LIMITS.json_depth); json.loads would recurse
        # until RecursionError on a hostile body.
        raw = pydantic_core.from_json(body)
    except ValueError as exc:
        intake.problems.append({"index": None, "reason": f"body is not JSON: {exc}"})
        return intake
    items = raw if isinstance(raw, list) else [raw]
    if not items or len(items) > MAX_EVENTS:
        intake.problems.append({"index": None, "reason": f"send between 1 and {MAX_EVENTS} events per request"})
        return intake
    for index, item in enumerate(items):
        text = json.dumps(item)
        try:
            if isinstance(item, dict) and item.get("event") in PRODUCT_EVENT_KINDS:
                if access is not Access.ALL:
                    intake.forbidden = True
                    intake.problems.append({"index": index, "reason": "product events need a secret API key"})
                    continue
                intake.accepted.append((PRODUCTS_LISTED.name, decode(PRODUCTS_LISTED.reader, text)))
            else:
                intake.accepted.append((CLICKS.name, decode(ClickEvent, text)))
        except ContractError as exc:
            intake.problems.append({"index": index, "reason": exc.reason})
    return intake


def publish(settings: Settings, producer: Producer, intake: Intake, timeout: float = 10.0) -> list[str]:
    """Publish the accepted events; the delivery errors (none when Kafka acknowledged all)."""
    return producer.deliver([(settings.topic(topic), encode(event)) for topic, event in intake.accepted], timeout)
