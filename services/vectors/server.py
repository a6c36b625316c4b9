"""The server backend: a Qdrant server through qdrant-client (also its in-process ``:memory:`` mode)."""

import warnings
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as m

from services.vectors.store import (
    HINT,
    INDEXED_FIELDS,
    VECTOR_NAMES,
    Match,
    SearchFilters,
    SearchHit,
    StoredProduct,
    StoreMismatch,
    VectorQuery,
    conditions,
    point_id,
    read_payload,
    read_vectors,
    vector_selection,
    with_availability,
)

_SCHEMA = {"keyword": m.PayloadSchemaType.KEYWORD, "float": m.PayloadSchemaType.FLOAT}


class ServerProductStore:
    def __init__(self, client: QdrantClient, collection: str = "products") -> None:
        self._client = client
        self._collection = collection

    def ensure_collection(self, dims: dict[str, int]) -> None:
        wanted = {name: size for name, size in dims.items() if name in VECTOR_NAMES}
        if self._client.collection_exists(self._collection):
            vectors = self._client.get_collection(self._collection).config.params.vectors
            named = vectors if isinstance(vectors, dict) else {}  # one unnamed vector is not this store's layout
            existing = {name: params.size for name, params in named.items()}
            if existing != wanted:
                raise StoreMismatch(
                    f"Qdrant collection {self._collection!r} has vectors {existing}, the model gives {wanted}; "
                    "run `shelfsight reindex` to rebuild it for this model"
                )
            return
        try:
            self._client.create_collection(
                self._collection,
                vectors_config={n: m.VectorParams(size=size, distance=m.Distance.COSINE) for n, size in wanted.items()},
            )
        except Exception:
            # Several embedders starting at once: another created it between our check and our
            # create. Then it must simply be right for this model; anything else is a real error.
            if not self._client.collection_exists(self._collection):
                raise
            self.ensure_collection(dims)
            return
        with warnings.catch_warnings():
            # qdrant-client's in-process mode ignores payload indexes and says so; a server uses them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for name, kind in INDEXED_FIELDS.items():
                self._client.create_payload_index(self._collection, name, _SCHEMA[kind])

    def upsert(self, products: list[StoredProduct]) -> None:
        if not products:
            return
        points = [
            m.PointStruct(
                id=point_id(p.product_id), vector=dict(p.vectors), payload={**with_availability(p.payload), "product_id": p.product_id}
            )
            for p in products
        ]
        self._client.upsert(self._collection, points, wait=True)

    def update_payload(self, product_id: str, payload: dict[str, Any]) -> bool:
        if not self._client.retrieve(self._collection, [point_id(product_id)], with_payload=False):
            return False
        self._client.set_payload(self._collection, with_availability(payload), points=[point_id(product_id)], wait=True)
        return True

    def get(
        self, product_ids: list[str], with_vectors: bool | tuple[str, ...] = False, fields: tuple[str, ...] | None = None
    ) -> list[StoredProduct]:
        records = self._client.retrieve(
            self._collection, [point_id(p) for p in product_ids], with_payload=_payload(fields), with_vectors=vector_selection(with_vectors)
        )
        products = []
        for r in records:
            payload = read_payload(r.payload)
            products.append(StoredProduct(payload["product_id"], read_vectors(r.vector) if with_vectors else {}, dict(payload)))
        return products

    def labelled(self, limit: int, using: str = "fused") -> list[StoredProduct]:
        found: list[StoredProduct] = []
        offset = None
        hinted = m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=HINT))])
        while len(found) < limit:
            records, offset = self._client.scroll(
                self._collection,
                scroll_filter=hinted,
                limit=min(1_000, limit - len(found)),
                offset=offset,
                with_payload=_payload((HINT,)),
                with_vectors=[using],
            )
            for r in records:
                payload = read_payload(r.payload)
                found.append(StoredProduct(payload["product_id"], read_vectors(r.vector), dict(payload)))
            if offset is None or not records:
                break
        return found

    def search(self, vector: list[float], using: str = "fused", limit: int = 10, filters: SearchFilters | None = None) -> list[SearchHit]:
        return self.query_many([VectorQuery(vector=vector, using=using, limit=limit, filters=filters)])[0]

    def query_many(self, queries: list[VectorQuery]) -> list[list[SearchHit]]:
        if not queries:
            return []
        requests = [
            m.QueryRequest(
                query=_query(x),
                using=x.using,
                limit=x.limit,
                filter=_filter(x.filters),
                with_payload=_payload(x.fields),
                with_vector=[x.using] if x.with_vector else False,
            )
            for x in queries
        ]
        responses = self._client.query_batch_points(self._collection, requests)
        return [
            [_hit(p, x.using if x.with_vector else None) for p in response.points] for x, response in zip(queries, responses, strict=True)
        ]

    def count(self) -> int:
        return self._client.count(self._collection, exact=True).count

    def close(self) -> None:
        self._client.close()


def _hit(point: m.ScoredPoint, using: str | None) -> SearchHit:
    """A search hit, with the vector of the space it was searched in when ``using`` names it."""
    payload = read_payload(point.payload)
    vectors = read_vectors(point.vector) if using is not None else {}
    return SearchHit(payload["product_id"], point.score, dict(payload), list(vectors[using]) if using is not None and vectors else None)


def _payload(fields: tuple[str, ...] | None) -> bool | list[str]:
    return True if fields is None else sorted({*fields, "product_id"})


def _query(x: VectorQuery) -> Any:
    if x.vector is not None:
        return x.vector
    return m.RecommendQuery(
        recommend=m.RecommendInput(positive=list(x.positives), negative=list(x.negatives), strategy=m.RecommendStrategy.BEST_SCORE)
    )


def _filter(filters: SearchFilters | None) -> m.Filter | None:
    """The store's filter rule (:func:`conditions`) in the Qdrant server's dialect."""
    if filters is None:
        return None
    must: list[Any] = [
        m.FieldCondition(key=c.field, match=m.MatchValue(value=c.value))
        if isinstance(c, Match)
        else m.FieldCondition(key=c.field, range=m.Range(gte=c.gte, lte=c.lte))
        for c in conditions(filters)
    ]
    must_not: list[m.Condition] | None = [m.HasIdCondition(has_id=[point_id(p) for p in filters.exclude])] if filters.exclude else None
    if not must and not must_not:
        return None
    return m.Filter(must=must or None, must_not=must_not)
