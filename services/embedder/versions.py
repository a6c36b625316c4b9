"""Model versions of the catalogue: what each is called, where its products live, and the
settings a process runs a version with (``state.catalogue`` holds which one is live).

The version the settings name (``SHELFSIGHT_QDRANT_COLLECTION``, ``SHELFSIGHT_MODEL_DIR``)
is the *base*: its collection and consumer group are the ones Shelfsight always used, so a
shop that never re-embeds sees no change. Other versions get a collection and a consumer group
named after their model version.
"""

import hashlib
import re
from pathlib import Path

import redis

from models.checkpoint import CheckpointError, read_card
from models.predictor import Predictor, version_name
from services.embedder.worker import GROUP_ID
from services.errors import UserError
from services.settings import Settings
from state.catalogue import CatalogueVersion, read_alias
from state.keys import Keys

_NAME_CHARS = 64  # SHELFSIGHT_QDRANT_COLLECTION's own bound


def slug(model_version: str) -> str:
    """A model version as collection and group names may spell it.

    >>> slug("resnet18-10c-1a2b+mirror")
    'resnet18-10c-1a2b_mirror'
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", model_version)


def _bounded(name: str) -> str:
    if len(name) <= _NAME_CHARS:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: _NAME_CHARS - 11]}-{digest}"


def base_version(settings: Settings) -> CatalogueVersion:
    """The version the settings name, as it has always run (read from its model card)."""
    try:
        card = read_card(settings.checkpoint)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None
    mirror = card.mirror_average if settings.mirror_average is None else settings.mirror_average
    return CatalogueVersion(version_name(card, mirror), settings.qdrant_collection, str(settings.checkpoint.resolve()), mirror, GROUP_ID)


def new_version(settings: Settings, predictor: Predictor, checkpoint: Path) -> CatalogueVersion:
    """The version ``predictor`` (loaded from ``checkpoint``) would be, with a collection and group of its own.

    >>> from types import SimpleNamespace as NS
    >>> v = new_version(NS(qdrant_collection="products"), NS(model_version="m-1+mirror", mirror_average=True), Path("/c"))
    >>> v.collection, v.group
    ('products-m-1_mirror', 'shelfsight-embedder-m-1_mirror')
    """
    name = slug(predictor.model_version)
    return CatalogueVersion(
        predictor.model_version,
        _bounded(f"{settings.qdrant_collection}-{name}"),
        str(checkpoint.resolve()),
        predictor.mirror_average,
        _bounded(f"{GROUP_ID}-{name}"),
    )


def settings_for(settings: Settings, version: CatalogueVersion) -> Settings:
    """``settings`` running ``version``: its collection (and embedded folder), checkpoint and mirroring."""
    if version.collection == settings.qdrant_collection:  # the base: where it always was
        return settings.model_copy(update={"model_dir": Path(version.checkpoint), "mirror_average": version.mirror_average})
    folder = settings.qdrant_path.parent if settings.qdrant_path else settings.cache_dir / "qdrant"
    return settings.model_copy(
        update={
            "qdrant_collection": version.collection,
            "qdrant_path": folder / version.collection,
            "model_dir": Path(version.checkpoint),
            "mirror_average": version.mirror_average,
        }
    )


def live_settings(settings: Settings, client: "redis.Redis") -> tuple[Settings, str, int]:
    """``settings`` running the live version, that version's consumer group, and the alias revision
    (0: never switched, and the settings run as they are)."""
    alias = read_alias(client, Keys.of(settings))
    if alias is None:
        return settings, GROUP_ID, 0
    return settings_for(settings, alias.live), alias.live.group, alias.revision
