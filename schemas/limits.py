"""Size bounds shared by every contract.

They live in one place so the broker's ``message.max.bytes``, the producers and the
validators cannot disagree about how large an event may be.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what a single event may carry."""

    id_chars: int = 128
    title_chars: int = 300
    description_chars: int = 5_000
    category_chars: int = 100
    attributes: int = 50
    attribute_key_chars: int = 64
    attribute_value_chars: int = 512
    url_chars: int = 2_048
    image_bytes: int = 2 * 1024 * 1024
    vector_dims: int = 4_096
    vectors_per_event: int = 8
    recommendations: int = 100
    served_candidates: int = 300  # candidates logged with their features per served list
    feature_names: int = 64
    reason_chars: int = 300
    message_chars: int = 1_000
    future_skew_s: int = 300  # how far ahead of the receiver's clock an event time may be
    json_depth: int = 200  # nesting, enforced by the JSON parser (pydantic-core's own limit)
    # base64 inflates the image by 4/3; the rest of a product is a few KiB at most.
    event_bytes: int = 4 * 1024 * 1024
    # The most of a refused message a dead letter copies: a whole event, base64 at worst.
    dead_letter_copy_bytes: int = 4 * 1024 * 1024


LIMITS = Limits()
