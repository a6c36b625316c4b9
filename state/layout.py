"""The layout Redis holds: written once, checked by every process that opens the state."""

import redis

from state.keys import Keys


class LayoutMismatch(ValueError):
    """The state in Redis was written with another number of key groups."""


def check_layout(client: redis.Redis, keys: Keys) -> None:
    """Record the layout the first time; refuse to run on state written with another one (its
    keys would not be found: every shopper and counter would start over, silently)."""
    kind = "tagged" if keys.tagged else "plain"
    wanted = f"{keys.shards}/{kind}"
    client.set(keys.layout, wanted, nx=True)
    stored = client.get(keys.layout)
    text = stored.decode() if isinstance(stored, bytes) else stored
    if text is not None and text != wanted:
        groups, _, stored_kind = text.partition("/")
        raise LayoutMismatch(
            f"Redis holds state written with SHELFSIGHT_REDIS_SHARDS={groups} ({stored_kind} keys), not {keys.shards} "
            f"({kind}); set it back, or use a new SHELFSIGHT_REDIS_PREFIX for a fresh state"
        )
