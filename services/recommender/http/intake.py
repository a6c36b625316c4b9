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
SECRET_CLICK_KINDS = {"purchase"}  # what a shopper's browser must not claim: only the store knows a sale


@dataclass
class Intake:
    accepted: list[tuple[str, Any]] = field(default_factory=list)  # (logical topic, event)
    problems: list[dict[str, Any]] = field(default_factory=list)
    forbidden: bool = False


@dataclass
class Parsed:
    """A body read as JSON but not yet checked: what the rate limits charge for."""

    items: list[Any]
    problem: str | None = None

    @property
    def count(self) -> int:
        """Events to charge for: at least one, so junk bodies cost something too."""
        return max(1, len(self.items))


def parse(body: bytes) -> Parsed:
    """The items of ``body`` (one object or an array), not yet validated.

    >>> parse(b'[{"a": 1}, {"b": 2}]').count, parse(b'{"a": 1}').count, parse(b"{nope").count
    (2, 1, 1)
    """
    try:
        # pydantic-core's parser bounds nesting (LIMITS.json_depth); json.loads would recurse
        # until RecursionError on a hostile body.
        raw = pydantic_core.from_json(body)
    except ValueError as exc:
        return Parsed([], f"body is not JSON: {exc}")
    items = raw if isinstance(raw, list) else [raw]
    if not items or len(items) > MAX_EVENTS:
        return Parsed(items, f"send between 1 and {MAX_EVENTS} events per request")
    return Parsed(items)


def validate(parsed: Parsed, access: Access) -> Intake:
    """Each of ``parsed``'s events checked against its contract and against what ``access`` may post."""
    intake = Intake()
    if parsed.problem is not None:
        intake.problems.append({"index": None, "reason": parsed.problem})
        return intake
    for index, item in enumerate(parsed.items):
        text = json.dumps(item)
        try:
            if isinstance(item, dict) and isinstance(item.get("event"), str) and item["event"] in PRODUCT_EVENT_KINDS:
                if access is not Access.ALL:
                    intake.forbidden = True
                    intake.problems.append({"index": index, "reason": "product events need a secret API key"})
                    continue
                intake.accepted.append((PRODUCTS_LISTED.name, decode(PRODUCTS_LISTED.reader, text)))
                continue
            click = decode(ClickEvent, text)
            if access is not Access.ALL and click.kind.value in SECRET_CLICK_KINDS:
                intake.forbidden = True
                intake.problems.append(
                    {
                        "index": index,
                        "reason": f"{click.kind.value} events need a secret API key "
                        "(the store's back end); a publishable key sits in a web page",
                    }
                )
                continue
            intake.accepted.append((CLICKS.name, click))
        except ContractError as exc:
            intake.problems.append({"index": index, "reason": exc.reason})
    return intake


def publish(settings: Settings, producer: Producer, intake: Intake, timeout: float = 10.0) -> list[str]:
    """Publish the accepted events; the delivery errors (none when Kafka acknowledged all)."""
    return producer.deliver([(settings.topic(topic), encode(event)) for topic, event in intake.accepted], timeout)
