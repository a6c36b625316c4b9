"""Opening the configured product store."""

from pathlib import Path

from services.settings import Settings
from services.vectors.store import ProductStore


def open_store(settings: Settings, dims: dict[str, int]) -> ProductStore:
    """Qdrant Edge under the cache folder by default; a Qdrant server when SHELFSIGHT_QDRANT_URL is set."""
    store: ProductStore
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        from services.vectors.server import ServerProductStore

        client = QdrantClient(location=":memory:") if settings.qdrant_url == ":memory:" else QdrantClient(url=settings.qdrant_url)
        store = ServerProductStore(client, settings.qdrant_collection)
    else:
        from services.vectors.edge import EdgeProductStore

        store = EdgeProductStore(Path(settings.qdrant_path or settings.cache_dir / "qdrant" / settings.qdrant_collection),
                                 indexing_threshold_kb=settings.qdrant_indexing_threshold_kb)
    store.ensure_collection(dims)
    return store
