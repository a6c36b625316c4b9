"""Opening the configured product store."""

import os
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

        store = EdgeProductStore(
            Path(settings.qdrant_path or settings.cache_dir / "qdrant" / settings.qdrant_collection),
            indexing_threshold_kb=settings.qdrant_indexing_threshold_kb,
            search_threads=settings.qdrant_search_threads or os.cpu_count(),
            quantization=settings.qdrant_quantization,
            oversampling=settings.qdrant_oversampling,
            search_ef=settings.qdrant_search_ef,
        )
    store.ensure_collection(dims)
    return store


def cached_store(settings: Settings, store: ProductStore) -> ProductStore:
    """``store`` behind the vector cache `serve` reads through with a Qdrant server; ``store``
    itself for the embedded shard, where reading vectors costs about what a cache miss does
    (docs/benchmarks.md), or when the cache is off."""
    if not settings.qdrant_url or settings.vector_cache_s <= 0 or settings.vector_cache_items <= 0:
        return store
    from services.vectors.cache import VectorCache

    return VectorCache(store, settings.vector_cache_s, settings.vector_cache_items)
