"""The product vector store: Qdrant, embedded (Qdrant Edge) or as a server (qdrant-client).

Both backends implement :class:`~services.vectors.store.ProductStore`; a contract test runs
the same cases over both.
"""

from services.vectors.store import ProductStore, SearchFilters, SearchHit, StoredProduct, StoreMismatch, point_id

__all__ = ["ProductStore", "SearchFilters", "SearchHit", "StoreMismatch", "StoredProduct", "point_id"]
