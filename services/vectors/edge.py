"""The embedded backend: the real Qdrant engine in-process, through qdrant-edge-py.

This module is the store adapter: products in and out, queries in the engine's dialect. The
shard itself (opening, locking, keeping its index up while serving) is ``edge_shard.py``'s.
"""

import threading
from pathlib import Path
from typing import Any

import qdrant_edge as q

from services.vectors.edge_config import Quantization
from services.vectors.edge_shard import IndexBuilder, PendingWrites, ShardKeeper, ShardLocked
from services.vectors.index_build import build_offline
from services.vectors.store import (
    HINT,
    Match,
    SearchFilters,
    SearchHit,
    StoredProduct,
    VectorQuery,
    conditions,
    point_id,
    read_payload,
    read_vectors,
    vector_selection,
    with_availability,
)

__all__ = ["EdgeProductStore", "PendingWrites", "ShardLocked"]


class EdgeProductStore:
    def __init__(
        self,
        path: Path,
        indexing_threshold_kb: int | None = None,
        search_threads: int | None = None,
        quantization: Quantization = "int8",
        oversampling: float = 1.5,
        search_ef: int | None = None,
    ) -> None:
        """``quantization``: for a shard created here (one that exists keeps its own). A quantised
        shard's searches take ``oversampling`` × limit by the int8 vectors and rescore them with the
        originals (docs/benchmarks.md). ``search_ef``: the HNSW beam of a search (None: Qdrant's)."""
        self._shards = ShardKeeper(path, indexing_threshold_kb, search_threads, quantization)
        self._rescored = q.SearchParams(hnsw_ef=search_ef, quantization=q.QuantizationSearchParams(rescore=True, oversampling=oversampling))
        self._plain = q.SearchParams(hnsw_ef=search_ef) if search_ef else None

    def ensure_collection(self, dims: dict[str, int]) -> None:
        self._shards.open(dims)

    def upsert(self, products: list[StoredProduct]) -> None:
        if not products:
            return
        ids = [point_id(p.product_id) for p in products]
        points = [
            q.Point(i, dict(p.vectors), {**with_availability(p.payload), "product_id": p.product_id})
            for i, p in zip(ids, products, strict=True)
        ]
        with self._shards.write(ids) as shard:
            shard.update(q.UpdateOperation.upsert_points(points))
            # Offsets are committed after this returns: make the write durable first.
            shard.flush()

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        pid = point_id(product_id)
        with self._shards.shard() as shard:
            if not shard.retrieve([pid], with_payload=False, with_vector=False):
                return False
        with self._shards.write([pid]) as shard:
            shard.update(q.UpdateOperation.set_payload([pid], with_availability(payload)))
            shard.flush()
        return True

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        with self._shards.shard() as shard:
            records = shard.retrieve(
                [point_id(p) for p in product_ids], with_payload=_payload(fields), with_vector=vector_selection(with_vectors)
            )
        products = []
        for r in records:
            payload = read_payload(r.payload)  # each attribute access converts from Rust: read it once
            products.append(StoredProduct(payload["product_id"], read_vectors(r.vector) if with_vectors else {}, payload))
        return products

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        found: list[StoredProduct] = []
        offset = None
        hinted = q.Filter(must_not=[q.IsEmptyCondition(HINT)])
        with self._shards.shard() as shard:
            while len(found) < limit:
                records, offset = shard.scroll(
                    q.ScrollRequest(
                        offset=offset,
                        limit=min(1_000, limit - len(found)),
                        filter=hinted,
                        with_payload=_payload((HINT,)),
                        with_vector=[using],
                    )
                )
                for r in records:
                    payload = read_payload(r.payload)
                    found.append(StoredProduct(payload["product_id"], read_vectors(r.vector), payload))
                if offset is None or not records:
                    break
        return found

    def search(self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        return self.query_many([VectorQuery(vector=vector, using=using, limit=limit, filters=filters)])[0]

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        if not queries:
            return []
        params = self._rescored if self._shards.quantised else self._plain
        requests = [
            q.QueryRequest(
                limit=x.limit,
                query=_query(x),
                with_payload=_payload(x.fields),
                with_vector=[x.using] if x.with_vector else False,
                filter=_filter(x.filters),
                params=params,
            )
            for x in queries
        ]
        with self._shards.shard() as shard:
            results = shard.query_batch(q.QueryBatchRequest(requests))
        found = []
        for x, points in zip(queries, results, strict=True):
            hits = []
            for p in points:
                payload = read_payload(p.payload)  # each attribute access converts from Rust: read it once
                vectors = read_vectors(p.vector) if x.with_vector else {}
                hits.append(SearchHit(payload["product_id"], p.score, payload, vectors[x.using] if vectors else None))
            found.append(hits)
        return found

    def optimize(self) -> bool:
        return self._shards.optimize()

    def pending_writes(self) -> PendingWrites:
        return self._shards.pending_writes()

    def indexed(self) -> tuple[int, int]:
        return self._shards.indexed()

    def rebuild_index(self, build: IndexBuilder = build_offline, cancel: threading.Event | None = None) -> bool:
        return self._shards.rebuild_index(build, cancel)

    def count(self) -> int:
        with self._shards.shard() as shard:
            return shard.count(q.CountRequest(exact=True))

    def close(self) -> None:
        self._shards.close()


def _payload(fields: tuple[str, ...] | None) -> "bool | q.PayloadSelector":
    # product_id is how a point maps back to its product, so it always comes along.
    return True if fields is None else q.PayloadSelector.Include(sorted({*fields, "product_id"}))


def _query(x: VectorQuery) -> q.Query:
    if x.vector is not None:
        return q.Query.Nearest(x.vector, using=x.using)
    return q.Query.RecommendBestScore(q.RecommendQuery(list(x.positives), list(x.negatives)), using=x.using)


def _filter(filters: SearchFilters | None) -> q.Filter | None:
    """The store's filter rule (:func:`conditions`) in qdrant-edge's dialect."""
    if filters is None:
        return None
    must: list[Any] = [
        q.FieldCondition(c.field, match=q.MatchValue(c.value))
        if isinstance(c, Match)
        else q.FieldCondition(c.field, range=q.RangeFloat(gte=c.gte, lte=c.lte))
        for c in conditions(filters)
    ]
    must_not: list[q.ConditionType] | None = [q.HasIdCondition({point_id(p) for p in filters.exclude})] if filters.exclude else None
    if not must and not must_not:
        return None
    return q.Filter(must=must or None, must_not=must_not)
