"""The catalogue alias: which model version's product collection is live, stored where every
process sees it (``Keys.catalogue``).

Each model version keeps its products in a collection of its own and follows
``products.listed`` with a consumer group of its own, so a version can be brought up to date
at any time from where it stopped. The alias names the live one, and the one it replaced (for
a rollback). `serve`, `shelfsight embedder` and the profiles worker read it; only
``shelfsight reembed`` writes it, with a compare-and-set on its revision, so two switches
never interleave.

Absent, nothing was ever switched: the services use the collection and checkpoint their
settings name, as they always did.

>>> v = CatalogueVersion("m-1", "products-m-1", "/ckpt", False, "shelfsight-embedder-m-1")
>>> alias = CatalogueAlias(live=v, previous=None, revision=3, unversioned="m-0")
>>> decode_alias(encode_alias(alias)) == alias
True
>>> decode_alias(None) is None
True
"""

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

import redis

from state.keys import Keys


@dataclass(frozen=True)
class CatalogueVersion:
    """One model version's products: its collection, the checkpoint that embeds them, and the
    consumer group whose committed offsets say how far into ``products.listed`` they are."""

    name: str  # the Predictor's model_version ("…+mirror" when pictures are mirror-averaged)
    collection: str
    checkpoint: str
    mirror_average: bool
    group: str  # logical consumer group (Settings.group adds the deployment's prefix)


@dataclass(frozen=True)
class CatalogueAlias:
    live: CatalogueVersion
    previous: CatalogueVersion | None
    revision: int  # raised by one at every switch
    # The version whose space tastes and product copies written without a version are in: the
    # one live before the first switch (they were written before versions were recorded).
    unversioned: str | None = None


class AliasChanged(RuntimeError):
    """Someone else switched the catalogue since it was read."""


def encode_alias(alias: CatalogueAlias) -> str:
    return json.dumps(
        {
            "live": asdict(alias.live),
            "previous": asdict(alias.previous) if alias.previous else None,
            "revision": alias.revision,
            "unversioned": alias.unversioned,
        },
        sort_keys=True,
    )


_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,200}$")
_COLLECTION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # SHELFSIGHT_QDRANT_COLLECTION's own rule: a folder name, never a path


def _version(raw: dict[str, Any]) -> CatalogueVersion:
    """One version of the document; ValueError when a field could lead anywhere unexpected (the
    collection names a folder, the group another service's consumer group)."""
    version = CatalogueVersion(
        str(raw["name"]), str(raw["collection"]), str(raw["checkpoint"]), bool(raw["mirror_average"]), str(raw["group"])
    )
    if not (_NAME.match(version.name) and _COLLECTION.match(version.collection) and _NAME.match(version.group)):
        raise ValueError(f"the catalogue alias names a version it may not: {raw!r:.200}")
    if not version.group.startswith("shelfsight-embedder") or not version.checkpoint.startswith("/") or "\x00" in version.checkpoint:
        raise ValueError(f"the catalogue alias names a version it may not: {raw!r:.200}")
    return version


def decode_alias(raw: bytes | str | None) -> CatalogueAlias | None:
    if raw is None:
        return None
    doc = json.loads(raw)
    unversioned = doc.get("unversioned")
    if unversioned is not None and not _NAME.match(str(unversioned)):
        raise ValueError(f"the catalogue alias names a version it may not: {unversioned!r:.200}")
    return CatalogueAlias(
        _version(doc["live"]), _version(doc["previous"]) if doc.get("previous") else None, int(doc["revision"]), unversioned
    )


def read_alias(client: "redis.Redis", keys: Keys) -> CatalogueAlias | None:
    return decode_alias(client.get(keys.catalogue))


# Set only if the stored revision is still the one the caller read (0: nothing stored yet).
_COMPARE_AND_SET = """
local raw = redis.call('GET', KEYS[1])
local stored = 0
if raw then stored = cjson.decode(raw)['revision'] end
if stored ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def write_alias(client: "redis.Redis", keys: Keys, alias: CatalogueAlias) -> None:
    """Store ``alias`` if the revision before it is still ``alias.revision - 1``; else AliasChanged."""
    done = client.eval(_COMPARE_AND_SET, 1, keys.catalogue, alias.revision - 1, encode_alias(alias))
    if not done:
        raise AliasChanged("the catalogue was switched by someone else meanwhile; look with `shelfsight reembed --status` and try again")


# -- staged versions: filled and checked, not switched to (``shelfsight reembed --stage``) ---------

MAX_STAGED = 8  # each holds a collection on disk and, while an experiment names it, a model in `serve`


def room_to_stage(client: "redis.Redis", keys: Keys, name: str) -> None:
    """ValueError when ``MAX_STAGED`` other versions are staged already (asked before hours of filling)."""
    known = client.hkeys(keys.catalogue_staged)
    if len(known) >= MAX_STAGED and name.encode() not in known:
        raise ValueError(
            f"{MAX_STAGED} versions are staged already: switch to one, or unstage one with `shelfsight reembed --unstage NAME`"
        )


def stage(client: "redis.Redis", keys: Keys, version: CatalogueVersion) -> None:
    """Record ``version`` as staged: experiments may name it (``VariantSpec.model``)."""
    room_to_stage(client, keys, version.name)
    client.hset(keys.catalogue_staged, version.name, json.dumps(asdict(version), sort_keys=True))


def unstage(client: "redis.Redis", keys: Keys, name: str) -> bool:
    return bool(client.hdel(keys.catalogue_staged, name))


def staged(client: "redis.Redis", keys: Keys) -> dict[str, CatalogueVersion]:
    """The staged versions by name; an entry that could lead anywhere unexpected is left out."""
    out = {}
    for name, raw in client.hgetall(keys.catalogue_staged).items():
        try:
            version = _version(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            continue
        if version.name == (
            name.decode(errors="replace") if isinstance(name, bytes) else name
        ):  # as `stage` writes it, so `--unstage NAME` finds it
            out[version.name] = version
    return out


def servable(client: "redis.Redis", keys: Keys, base: CatalogueVersion | None) -> dict[str, CatalogueVersion]:
    """Every version a request may be served from, by name: the live one (``base`` until the first
    switch; None: not known here), the one before it, and the staged ones."""
    return servable_under(read_alias(client, keys), staged(client, keys), base)


def servable_under(
    alias: CatalogueAlias | None, staged_versions: dict[str, CatalogueVersion], base: CatalogueVersion | None
) -> dict[str, CatalogueVersion]:
    """:func:`servable`, from an alias and staged versions already read."""
    live = alias.live if alias is not None else base
    kept = [v for v in (live, alias.previous if alias is not None else None) if v is not None]
    # A staged entry must not write into a kept version's collection, nor read as its consumer group.
    taken = {v.collection for v in kept} | {v.group for v in kept}
    found = {n: v for n, v in staged_versions.items() if not {v.collection, v.group} & taken}
    for version in reversed(kept):
        found[version.name] = version
    return found
