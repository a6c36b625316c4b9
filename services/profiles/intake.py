"""A batch's messages as one key group takes them in: decoded once, its own told from the
other groups', and those that break the contract or come from the future refused on sight.

On a single Redis every message is the one group's. Split into key groups (Redis Cluster), each
group takes its shoppers' events and passes over the rest, so every group looks at every
message: :data:`Decoded` keeps each decoded once per batch, whichever groups look at it.
"""

from schemas import ClickEvent, ContractError, decode
from schemas.base import too_far_ahead
from services.profiles.messages import RawMessage
from services.profiles.parking import Refusal
from state.keys import Keys

# Each message decoded once per batch: by its place in Kafka (a gap read back by one group and
# again by another is the same message), or by ``id`` without one.
Decoded = dict[object, ClickEvent | ContractError]


def decoded_event(message: RawMessage, decoded: Decoded) -> ClickEvent | ContractError:
    """The message's event, or why it is none, decoded on first sight."""
    place = (message.topic, message.partition, message.offset) if message.topic is not None else id(message)
    if place not in decoded:
        try:
            decoded[place] = decode(ClickEvent, message.value)
        except ContractError as exc:
            decoded[place] = exc
    return decoded[place]


def belongs(message: RawMessage, keys: Keys, decoded: Decoded) -> bool:
    """Whether ``message`` is the group's of ``keys``: its shopper's, or (unreadable) its key's."""
    if keys.shards == 1:
        return True
    event = decoded_event(message, decoded)
    owner = event.user_id if isinstance(event, ClickEvent) else (message.key or b"").decode(errors="replace")
    return keys.group_of(owner) == keys.group


def take_in(
    messages: list[RawMessage], keys: Keys, decoded: Decoded, now: float
) -> tuple[list[tuple[RawMessage, ClickEvent]], list[Refusal]]:
    """The group's valid events, in order, and its messages refused with their reasons."""
    events: list[tuple[RawMessage, ClickEvent]] = []
    refused: list[Refusal] = []
    for message in messages:
        if not belongs(message, keys, decoded):
            continue  # another group's: only this group's position passes over it
        event = decoded_event(message, decoded)
        if isinstance(event, ContractError):
            refused.append((message, event.reason))
        elif (ahead := too_far_ahead(event.occurred_at, now)) is not None:
            refused.append((message, f"occurred_at {ahead}"))
        else:
            events.append((message, event))
    return events, refused
