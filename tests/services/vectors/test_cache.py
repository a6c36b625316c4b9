"""The vector cache in front of a real Qdrant Edge shard: the same answers as the store, fewer
vector reads, and nothing stale after a write through it."""

import numpy as np
import pytest

from services.vectors.cache import VectorCache
from services.vectors.edge import EdgeProductStore
from services.vectors.store import SearchFilters, StoredProduct, VectorQuery

DIMS = {"image": 3, "fused": 4}


def _unit(*values: float) -> list[float]:
    v = np.array(values, dtype=float)
    return (v / np.linalg.norm(v)).tolist()


def _product(pid: str, fused: list[float], image: bool = True) -> StoredProduct:
    vectors = {"fused": fused, **({"image": _unit(1, 0, 0)} if image else {})}
    return StoredProduct(pid, vectors, {"title": pid, "category": "Bag", "price": 10.0, "in_stock": True})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    s = EdgeProductStore(tmp_path / "edge")
    s.ensure_collection(DIMS)
    s.upsert([_product(f"p{n}", _unit(1, n / 10, 0, 0)) for n in range(20)] + [_product("text-only", _unit(0, 0, 1, 0), image=False)])
    yield s
    s.close()


def _queries() -> list[VectorQuery]:
    return [
        VectorQuery(vector=_unit(1, 0, 0, 0), limit=5, with_vector=True, fields=("title",)),
        VectorQuery(positives=(_unit(1, 1, 0, 0),), limit=5, with_vector=True, filters=SearchFilters(exclude=frozenset({"p3"}))),
        VectorQuery(vector=_unit(0, 0, 1, 0), limit=3),
    ]  # no vectors asked for


def test_answers_are_the_stores_and_vectors_are_read_once(store):
    cache = VectorCache(store, ttl_s=60.0, clock=Clock())
    expected = store.query_many(_queries())
    for _ in range(2):
        answer = cache.query_many(_queries())
        assert [[(h.product_id, round(h.score, 6), h.payload) for h in hits] for hits in answer] == [
            [(h.product_id, round(h.score, 6), h.payload) for h in hits] for hits in expected
        ]
        for got, want in zip(answer[:2], expected[:2], strict=True):
            for g, w in zip(got, want, strict=True):
                assert np.allclose(g.vector, w.vector, atol=1e-6)
        assert all(h.vector is None for h in answer[2])
    distinct = len({h.product_id for hits in expected[:2] for h in hits})
    assert (cache.misses, cache.hits) == (distinct, sum(len(hits) for hits in expected[:2]) * 2 - distinct)

    (p1,) = cache.get(["p1"], with_vectors=("fused",), fields=("title",))
    assert p1.payload["title"] == "p1" and np.allclose(p1.vectors["fused"], _unit(1, 0.1, 0, 0), atol=1e-6)
    (text_only,) = cache.get(["text-only"], with_vectors=True)  # all of its vectors: the store says which
    assert set(text_only.vectors) == {"fused"}
    assert cache.get(["text-only"], with_vectors=("image",))[0].vectors == {}


def test_a_write_through_the_cache_is_seen_at_once_and_one_past_it_after_the_ttl(store):
    clock = Clock()
    cache = VectorCache(store, ttl_s=60.0, clock=clock)
    assert np.allclose(cache.get(["p1"], with_vectors=("fused",))[0].vectors["fused"], _unit(1, 0.1, 0, 0), atol=1e-6)

    cache.upsert([_product("p1", _unit(0, 1, 0, 0))])  # re-embedded by serve's own embedder
    assert np.allclose(cache.get(["p1"], with_vectors=("fused",))[0].vectors["fused"], _unit(0, 1, 0, 0), atol=1e-6)

    store.upsert([_product("p1", _unit(0, 0, 0, 1))])  # by an embedder in another process
    assert np.allclose(cache.get(["p1"], with_vectors=("fused",))[0].vectors["fused"], _unit(0, 1, 0, 0), atol=1e-6)
    clock.now += 61
    assert np.allclose(cache.get(["p1"], with_vectors=("fused",))[0].vectors["fused"], _unit(0, 0, 0, 1), atol=1e-6)


def test_the_cache_holds_at_most_max_items_products(store):
    cache = VectorCache(store, ttl_s=60.0, max_items=5, clock=Clock())
    for n in range(10):
        cache.get([f"p{n}"], with_vectors=("fused",))
    cache.get(["p9"], with_vectors=("fused",))
    assert (cache.misses, cache.hits) == (10, 1)  # the five latest are kept
    cache.get(["p0"], with_vectors=("fused",))
    assert cache.misses == 11  # the oldest went first
