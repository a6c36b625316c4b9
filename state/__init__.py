"""The Redis state: the contract between the profiles worker (writes) and the recommender (reads),
as ``schemas/`` is the contract of the Kafka topics.

- ``keys``        — every key name, ids escaped so no two things share a key
- ``values``      — the stored values (a shopper's profile, a product's item hash) and their codecs
- ``bounds``      — how much is kept under each key: the most a reader can find there
- ``checkpoints`` — the learners checkpoint format (signed), its names, how long they are kept, and copies saved by name
- ``layout``      — the key-group layout Redis holds, checked at start
- ``secret``      — the key that signs the checkpoints

Only these modules name keys or encode values; ``docs/profiles.md`` lists the layout.
"""

from state.bounds import BOUNDS, Bounds
from state.checkpoints import (
    CHECKPOINT_KEEP_S,
    CheckpointRejected,
    checkpoint_names,
    dump,
    load,
)
from state.keys import Keys, escape
from state.layout import LayoutMismatch, check_layout
from state.secret import state_secret
from state.values import (
    Item,
    Profile,
    decode_item,
    decode_profile,
    encode_item,
    encode_profile,
    same_space,
)

__all__ = [
    "BOUNDS",
    "CHECKPOINT_KEEP_S",
    "Bounds",
    "CheckpointRejected",
    "Item",
    "Keys",
    "LayoutMismatch",
    "Profile",
    "check_layout",
    "checkpoint_names",
    "decode_item",
    "decode_profile",
    "dump",
    "encode_item",
    "encode_profile",
    "escape",
    "load",
    "same_space",
    "state_secret",
]
