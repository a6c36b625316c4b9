"""One contract test over the store backends: Qdrant Edge (embedded) and qdrant-client.

The server backend runs through qdrant-client's in-process local mode (`:memory:`), which
answers the same client API a Qdrant server does, and against a real Qdrant server when
``SHELFSIGHT_TEST_QDRANT_URL`` names one (skipped otherwise: no server is packaged for this
machine; docs/benchmarks.md says how one was built from source to run these by hand).
"""

import math
import os
import threading
import uuid

import pytest

from services.vectors.edge import EdgeProductStore, ShardLocked
from services.vectors.server import ServerProductStore
from services.vectors.store import SearchFilters, StoredProduct, StoreMismatch, VectorQuery

DIMS = {"image": 3, "text": 3, "fused": 4}


def _unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def _product(pid: str, fused: list[float], category: str = "Bag", price: float = 10.0, in_stock: bool = True) -> StoredProduct:
    return StoredProduct(
        pid, {"fused": fused, "image": _unit(1, 0, 0)}, {"title": pid, "category": category, "price": price, "in_stock": in_stock}
    )


def _edge(tmp_path):
    return EdgeProductStore(tmp_path / "edge")


def _server(tmp_path):
    from qdrant_client import QdrantClient

    return ServerProductStore(QdrantClient(location=":memory:"))


def _real_server(tmp_path):
    url = os.environ.get("SHELFSIGHT_TEST_QDRANT_URL")
    if not url:
        pytest.skip("no Qdrant server: set SHELFSIGHT_TEST_QDRANT_URL to run the contract against one")
    from qdrant_client import QdrantClient

    return ServerProductStore(QdrantClient(url=url), f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(params=[_edge, _server, _real_server], ids=["edge", "server", "qdrant-server"])
def store(request, tmp_path):
    s = request.param(tmp_path)
    s.ensure_collection(DIMS)
    yield s
    s.close()
    if request.param is _real_server:
        from qdrant_client import QdrantClient

        QdrantClient(url=os.environ["SHELFSIGHT_TEST_QDRANT_URL"]).delete_collection(s._collection)


def test_upsert_is_idempotent_and_overwrites(store):
    store.upsert([_product("a", _unit(1, 0, 0, 0)), _product("b", _unit(0, 1, 0, 0))])
    store.upsert([_product("a", _unit(1, 0, 0, 0), price=99.0)])
    assert store.count() == 2
    (a,) = store.get(["a"])
    assert a.payload["price"] == 99.0 and a.payload["product_id"] == "a"


def test_nearest_search_with_filters_and_exclusions(store):
    store.upsert(
        [
            _product("near-bag", _unit(1, 0.1, 0, 0)),
            _product("far-bag", _unit(0, 0, 1, 0)),
            _product("near-dress", _unit(1, 0.2, 0, 0), category="Dress", price=50.0),
            _product("sold-out", _unit(1, 0, 0, 0), in_stock=False),
        ]
    )
    hits = store.search(_unit(1, 0, 0, 0), limit=4)
    assert [h.product_id for h in hits][:3] == ["sold-out", "near-bag", "near-dress"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    in_stock_bags = store.search(_unit(1, 0, 0, 0), filters=SearchFilters(category="Bag", in_stock=True))
    assert [h.product_id for h in in_stock_bags] == ["near-bag", "far-bag"]
    cheap = store.search(_unit(1, 0, 0, 0), filters=SearchFilters(max_price=20.0, exclude=frozenset({"sold-out"})))
    assert {h.product_id for h in cheap} == {"near-bag", "far-bag"}
    by_image = store.search(_unit(1, 0, 0), using="image", limit=10)
    assert len(by_image) == 4


def test_recommend_by_examples(store):
    """The "recent items" query: near the positives, away from the negatives."""
    store.upsert(
        [
            _product("liked", _unit(1, 0, 0, 0)),
            _product("twin", _unit(1, 0.05, 0, 0)),
            _product("disliked", _unit(0, 1, 0, 0)),
            _product("like-disliked", _unit(0.1, 1, 0, 0)),
            _product("other", _unit(0, 0, 1, 0)),
        ]
    )
    (hits,) = store.query_many(
        [
            VectorQuery(
                positives=(_unit(1, 0, 0, 0),),
                negatives=(_unit(0, 1, 0, 0),),
                limit=3,
                filters=SearchFilters(exclude=frozenset({"liked"})),
                with_vector=True,
            )
        ]
    )
    assert hits[0].product_id == "twin"
    assert "like-disliked" not in [h.product_id for h in hits][:2]
    assert hits[0].vector == pytest.approx(_unit(1, 0.05, 0, 0), abs=1e-5)


def test_labelled_products_are_read_back_page_by_page(store):
    hinted = [
        StoredProduct(f"h{i}", {"fused": _unit(1, i, 0, 0)}, {"title": "x", "category": "Bag", "category_hint": "Bags"})
        for i in range(2_300)
    ]
    silent = [
        StoredProduct(f"s{i}", {"fused": _unit(0, 1, i, 0)}, {"title": "x", "category": "Bag", "category_hint": None}) for i in range(50)
    ]
    unset = [StoredProduct("u", {"fused": _unit(0, 0, 0, 1)}, {"title": "x", "category": "Bag"})]
    store.upsert(hinted + silent + unset)
    found = store.labelled(limit=10_000)
    assert sorted(p.product_id for p in found) == sorted(p.product_id for p in hinted)  # more than one page of 1,000
    assert all(p.payload["category_hint"] == "Bags" and len(p.vectors["fused"]) == 4 for p in found)
    assert len(store.labelled(limit=1_500)) == 1_500


def test_payload_update_without_vectors(store):
    store.upsert([_product("a", _unit(1, 0, 0, 0))])
    assert store.update_payload("a", {"in_stock": False, "price": 5.0})
    assert not store.update_payload("missing", {"in_stock": False})
    (a,) = store.get(["a"], with_vectors=True)
    assert a.payload["in_stock"] is False and a.payload["price"] == 5.0
    assert a.vectors["fused"] == pytest.approx(_unit(1, 0, 0, 0), abs=1e-5)
    assert store.search(_unit(1, 0, 0, 0), filters=SearchFilters(in_stock=True)) == []


def test_dimension_mismatch_is_a_clear_error(store, tmp_path, request):
    store.upsert([_product("a", _unit(1, 0, 0, 0))])
    if isinstance(store, EdgeProductStore):
        store.close()
        other = EdgeProductStore(tmp_path / "edge")
    else:
        other = store
    with pytest.raises(StoreMismatch, match="shelfsight reindex"):
        other.ensure_collection({**DIMS, "fused": 8})


def test_edge_survives_a_reopen_and_refuses_a_second_owner(tmp_path):
    first = EdgeProductStore(tmp_path / "edge")
    first.ensure_collection(DIMS)
    first.upsert([_product("a", _unit(1, 0, 0, 0))])
    with pytest.raises(ShardLocked, match="one `shelfsight serve` process owns it"):
        EdgeProductStore(tmp_path / "edge").ensure_collection(DIMS)
    first.close()
    again = EdgeProductStore(tmp_path / "edge")
    again.ensure_collection(DIMS)
    assert again.count() == 1
    again.close()


def test_server_store_creation_races_are_harmless():
    """Two embedders starting together on one Qdrant: the second finds the collection created
    between its check and its create, and goes on (same dims) or stops clearly (other dims).
    The race window is made certain by answering the second one's first existence check with
    "not yet"; the create and everything after run on the real (in-process) engine."""
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    first, second = ServerProductStore(client), ServerProductStore(client)
    first.ensure_collection(DIMS)
    exists = client.collection_exists
    calls = []

    def checked_too_early(name: str) -> bool:
        calls.append(name)
        return False if len(calls) == 1 else exists(name)

    client.collection_exists = checked_too_early  # type: ignore[method-assign]
    second.ensure_collection(DIMS)  # its create fails (it exists now), then it is checked and accepted
    assert len(calls) >= 2
    second.upsert([_product("p1", _unit(1, 0, 0, 0))])
    assert first.count() == 1
    calls.clear()
    with pytest.raises(StoreMismatch):
        second.ensure_collection({"image": 5, "fused": 5})


def test_edge_search_threads_follow_the_settings_each_time_the_shard_is_opened(tmp_path):
    import json

    from services.settings import load_settings
    from services.vectors.factory import open_store

    def opened_with(threads: int) -> int:
        store = open_store(load_settings(qdrant_path=tmp_path / "edge", qdrant_search_threads=threads), DIMS)
        store.upsert([_product(f"p{threads}", _unit(1, threads, 0, 0))])
        assert store.search(_unit(1, 0, 0, 0), limit=1)
        store.close()
        (config,) = (tmp_path / "edge").glob("*/edge_config.json")
        return json.loads(config.read_text())["max_search_threads"]

    assert opened_with(1) == 1
    assert opened_with(0) == os.cpu_count()  # 0: one per core, written over what the last start set
    assert opened_with(1) == 1


def test_embedders_starting_together_on_a_real_server():
    """Four embedders create the same collection at once on a real Qdrant server: one creates it,
    the others find it and accept it, and all can write."""
    url = os.environ.get("SHELFSIGHT_TEST_QDRANT_URL")
    if not url:
        pytest.skip("no Qdrant server: set SHELFSIGHT_TEST_QDRANT_URL to run the creation race against one")
    from concurrent.futures import ThreadPoolExecutor

    from qdrant_client import QdrantClient

    name = f"test-race-{uuid.uuid4().hex[:8]}"
    stores = [ServerProductStore(QdrantClient(url=url), name) for _ in range(4)]
    start = threading.Barrier(len(stores))

    def starting(store: ServerProductStore) -> None:
        start.wait()
        store.ensure_collection(DIMS)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(starting, stores))  # raises if any start failed
        for n, store in enumerate(stores):
            store.upsert([_product(f"p{n}", _unit(1, n, 0, 0))])
        assert stores[0].count() == len(stores)
    finally:
        QdrantClient(url=url).delete_collection(name)
        for store in stores:
            store.close()
