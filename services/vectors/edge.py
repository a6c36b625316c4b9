"""The embedded backend: the real Qdrant engine in-process, through qdrant-edge-py.

One process owns a shard: a second open fails on the WAL lock, reported as a
:class:`ShardLocked` with what to do instead.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any

import qdrant_edge as q

from services.vectors.store import (
    HINT,
    INDEXED_FIELDS,
    VECTOR_NAMES,
    SearchFilters,
    SearchHit,
    StoredProduct,
    StoreMismatch,
    VectorQuery,
    availability,
    point_id,
    vector_selection,
    with_availability,
)

log = logging.getLogger(__name__)

_SCHEMA = {"keyword": q.PayloadSchemaType.Keyword, "float": q.PayloadSchemaType.Float}
_META = "shelfsight-collection.json"


class ShardLocked(RuntimeError):
    pass


class EdgeProductStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._shard: q.EdgeShard | None = None

    def ensure_collection(self, dims: dict[str, int]) -> None:
        wanted = {name: size for name, size in dims.items() if name in VECTOR_NAMES}
        meta = self._path / _META
        shard_dir = self._path / "shard"
        if meta.exists():
            existing = json.loads(meta.read_text())["dims"]
            if existing != wanted:
                raise StoreMismatch(
                    f"the product collection in {self._path} has vectors {existing}, the model gives {wanted}; "
                    "run `shelfsight reindex` to rebuild it for this model"
                )
            self._shard = self._open(lambda: q.EdgeShard.load(str(shard_dir)))
            self.optimize()
            return
        config = q.EdgeConfig(vectors={n: q.EdgeVectorParams(size, q.Distance.Cosine) for n, size in wanted.items()})
        self._path.mkdir(parents=True, exist_ok=True)
        self._shard = self._open(lambda: q.EdgeShard.create(str(shard_dir), config))
        for name, kind in INDEXED_FIELDS.items():
            self._shard.update(q.UpdateOperation.create_field_index(name, _SCHEMA[kind]))
        self._shard.flush()
        meta.write_text(json.dumps({"dims": wanted}) + "\n")

    def _open(self, opener):  # type: ignore[no-untyped-def]
        try:
            return opener()
        except Exception as exc:  # qdrant-edge raises plain Exception
            if "WAL" in str(exc) or "WouldBlock" in str(exc):
                raise ShardLocked(
                    f"the embedded Qdrant shard in {self._path} is open in another process; in embedded mode "
                    "one `shelfsight serve` process owns it (or set SHELFSIGHT_QDRANT_URL to use a Qdrant server)"
                ) from None
            raise

    @property
    def shard(self) -> q.EdgeShard:
        if self._shard is None:
            raise RuntimeError("call ensure_collection() first")
        return self._shard

    def upsert(self, products: list[StoredProduct]) -> None:
        if not products:
            return
        points = [q.Point(point_id(p.product_id), dict(p.vectors), {**with_availability(p.payload), "product_id": p.product_id}) for p in products]
        self.shard.update(q.UpdateOperation.upsert_points(points))
        # Offsets are committed after this returns: make the write durable first.
        self.shard.flush()

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        if not self.shard.retrieve([point_id(product_id)], with_payload=False, with_vector=False):
            return False
        self.shard.update(q.UpdateOperation.set_payload([point_id(product_id)], with_availability(payload)))
        self.shard.flush()
        return True

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        records = self.shard.retrieve([point_id(p) for p in product_ids], with_payload=_payload(fields), with_vector=vector_selection(with_vectors))
        products = []
        for r in records:
            payload = r.payload  # each attribute access converts from Rust: read it once
            products.append(StoredProduct(payload["product_id"], dict(r.vector or {}) if with_vectors else {}, payload))
        return products

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        found: list[StoredProduct] = []
        offset = None
        hinted = q.Filter(must_not=[q.IsEmptyCondition(HINT)])
        while len(found) < limit:
            records, offset = self.shard.scroll(q.ScrollRequest(
                offset=offset, limit=min(1_000, limit - len(found)), filter=hinted,
                with_payload=_payload((HINT,)), with_vector=[using],
            ))
            for r in records:
                payload = r.payload
                found.append(StoredProduct(payload["product_id"], dict(r.vector or {}), payload))
            if offset is None or not records:
                break
        return found

    def search(
        self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None
    ) -> list[SearchHit]:
        return self.query_many([VectorQuery(vector=vector, using=using, limit=limit, filters=filters)])[0]

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        if not queries:
            return []
        requests = [
            q.QueryRequest(
                limit=x.limit,
                query=_query(x),
                with_payload=_payload(x.fields),
                with_vector=[x.using] if x.with_vector else False,
                filter=_filter(x.filters),
            )
            for x in queries
        ]
        results = self.shard.query_batch(q.QueryBatchRequest(requests))
        found = []
        for x, points in zip(queries, results, strict=True):
            hits = []
            for p in points:
                payload = p.payload  # each attribute access converts from Rust: read it once
                vector = p.vector if x.with_vector else None
                hits.append(SearchHit(payload["product_id"], p.score, payload, vector[x.using] if vector else None))
            found.append(hits)
        return found

    def optimize(self) -> bool:
        """Build the HNSW index of segments that outgrew plain search. Called when an existing shard
        is opened, before anything queries it (so `serve` starts with an index, however the shard
        was written); it blocks for as long as the build takes and returns at once when there is
        nothing to build. Segments written while the process runs are searched plainly until the
        next open."""
        started = time.perf_counter()
        changed = bool(self.shard.optimize())
        if changed:
            log.info("shard index built", extra={"path": str(self._path), "seconds": round(time.perf_counter() - started, 1)})
        return changed

    def count(self) -> int:
        return self.shard.count(q.CountRequest(exact=True))

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None


def _payload(fields: tuple[str, ...] | None) -> "bool | q.PayloadSelector":
    # product_id is how a point maps back to its product, so it always comes along.
    return True if fields is None else q.PayloadSelector.Include(sorted({*fields, "product_id"}))


def _query(x: VectorQuery) -> q.Query:
    if x.vector is not None:
        return q.Query.Nearest(x.vector, using=x.using)
    return q.Query.RecommendBestScore(q.RecommendQuery(list(x.positives), list(x.negatives)), using=x.using)


def _filter(filters: SearchFilters | None) -> q.Filter | None:
    if filters is None:
        return None
    must: list[Any] = []
    if filters.category is not None:
        must.append(q.FieldCondition("category", match=q.MatchValue(filters.category)))
    if filters.in_stock is not None:
        must.append(q.FieldCondition("availability", match=q.MatchValue(availability(filters.in_stock))))
    if filters.min_price is not None or filters.max_price is not None:
        must.append(q.FieldCondition("price", range=q.RangeFloat(gte=filters.min_price, lte=filters.max_price)))
    if filters.listed_after is not None:
        must.append(q.FieldCondition("listed_ts", range=q.RangeFloat(gte=filters.listed_after)))
    must_not = [q.HasIdCondition({point_id(p) for p in filters.exclude})] if filters.exclude else None
    if not must and not must_not:
        return None
    return q.Filter(must=must or None, must_not=must_not)
