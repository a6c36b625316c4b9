"""What one write's effects are computed from: the batch's state, read from Redis before.

The effects (effects.py) are a pure function of the events and this snapshot, so everything
they look at is read here first: dedupe markers, items, profiles, sessions and histories in one
script (``ProfileState.load``); the trending epoch; the shopper's served lists and the products
reported as seen in the lists their choices may have been made from.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from models.ranking.learners import CHOICE_KINDS
from schemas import ClickEvent
from services.profiles.choices import ServedList, pick_list
from services.profiles.messages import RawMessage
from services.profiles.profile import ClickParams
from services.profiles.state import Loaded, ProfileState

log = logging.getLogger(__name__)

Impressed = dict[tuple[str, str], set[str]]  # (shopper, request id) → products reported as seen


@dataclass(frozen=True)
class Snapshot:
    """The state one write's effects depend on (``now`` too, so the effects read no clock)."""

    loaded: Loaded = field(default_factory=Loaded)
    served: dict[str, list[ServedList]] = field(default_factory=dict)  # the choosers' latest served lists, newest first
    impressed: Impressed = field(default_factory=dict)  # only lists with reports; only those choices may join
    epoch: float = 0.0  # the forward-decay epoch of the group's trending sets
    now: float = 0.0  # when the write is computed: how long parked clicks have waited, when new ones are parked
    unversioned: str | None = None  # the model version of vectors stored without one (state.catalogue)


async def read_snapshot(
    state: ProfileState, events: list[tuple[RawMessage, ClickEvent]], clock: Callable[[], float], item_wait_s: float
) -> Snapshot:
    """Everything the effects of ``events`` read; a write without events reads nothing."""
    if not events:
        return Snapshot()
    loaded = await state.load(
        [event.event_id for _, event in events],
        {event.product_id for _, event in events},
        {event.user_id for _, event in events},
        {event.session_id for _, event in events},
        {event.user_id for _, event in events if event.kind.value in CHOICE_KINDS},
    )
    missing = {product for product, item in loaded.items.items() if item is None}
    can_park = any(message.topic is not None for message, _ in events)
    if missing and item_wait_s > 0 and not can_park:
        # products.indexed is read by another agent of this worker; on a cold start it may
        # be a moment behind the clicks. Give it that moment before calling a product unknown.
        await asyncio.sleep(item_wait_s)
        loaded.items.update(await state.items(missing))
    epoch = await state.current_epoch(clock())
    served = {user: served_lists(blobs) for user, blobs in loaded.served.items()}
    impressed = await state.impressed(chosen_from(events, served, state.params))
    now = clock()
    return Snapshot(loaded, served, impressed, epoch, now, await state.unversioned(now))


def chosen_from(
    events: list[tuple[RawMessage, ClickEvent]], served: dict[str, list[ServedList]], params: ClickParams
) -> set[tuple[str, str]]:
    """The (shopper, request id) of every list a choice among ``events`` may have been made from:
    the lists the effects may join choices with (a superset: some events turn out duplicates)."""
    lists = set()
    for _, event in events:
        if event.kind.value in CHOICE_KINDS:
            request_id = event.context.request_id if event.context else None
            made_from = pick_list(served.get(event.user_id, []), request_id, event.occurred_at.timestamp(), params.served_ttl_s)
            if made_from is not None:
                lists.add((event.user_id, made_from.request_id))
    return lists


def served_lists(blobs: list[bytes]) -> list[ServedList]:
    """The served lists kept for a shopper; one that does not parse is left out with a warning."""
    lists = []
    for blob in blobs:
        try:
            lists.append(ServedList.from_json(blob))
        except (ValueError, KeyError, TypeError) as exc:  # written by this worker's own agent; never fatal
            log.warning("served list ignored", extra={"error": str(exc)[:200]})
    return lists
