"""`serve`'s staged model versions, on a real embedded shard: a version is closed only once the
requests holding it are done, and a writer that fails closes its version instead of `serve`."""

import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from services.embedder.metrics import EmbedderMetrics
from services.recommender.catalogue import Version
from services.recommender.staged import StagedVersions, _Opened
from services.vectors.edge import EdgeProductStore
from services.vectors.upkeep import UpkeepPolicy
from state.catalogue import CatalogueVersion

pytestmark = pytest.mark.redis

# Opens an embedded shard, says so, and holds it until its input closes.
_HOLD = "import sys; from pathlib import Path; from services.vectors.edge import EdgeProductStore; s = EdgeProductStore(Path(sys.argv[1])); s.ensure_collection({'fused': 8}); print('held', flush=True); sys.stdin.read(); s.close()"


def _versions(settings, redis_client) -> StagedVersions:  # type: ignore[no-untyped-def]
    base = CatalogueVersion("m-1", "products", "/ckpt", False, "shelfsight-embedder")
    return StagedVersions(settings, redis_client, base, lambda _v, _reads: None, UpkeepPolicy(1000, 1.0, 10.0), EmbedderMetrics())  # type: ignore[arg-type,return-value]


def _opened(tmp_path, settings) -> tuple[_Opened, EdgeProductStore]:  # type: ignore[no-untyped-def]
    store = EdgeProductStore(tmp_path / "staged")
    store.ensure_collection({"fused": 8})
    version = Version("m-2", 0, settings, "shelfsight-embedder-m-2", None, store, store)  # type: ignore[arg-type]
    return _Opened(version, engine=object()), store  # type: ignore[arg-type]


def _closed(store: EdgeProductStore) -> bool:
    try:
        store.count()
    except Exception:
        return True
    return False


def test_a_version_closes_only_once_the_requests_holding_it_are_done(settings, redis_client, tmp_path):
    staged = _versions(settings, redis_client)
    entry, store = _opened(tmp_path, settings)
    staged._open["m-2"] = entry
    closing = threading.Thread(target=staged._close, args=("m-2",))
    with staged.lease("m-2") as engine:
        assert engine is entry.engine
        closing.start()
        deadline = time.monotonic() + 5
        while "m-2" in staged.names and time.monotonic() < deadline:  # poll: the close has begun
            time.sleep(0.01)
        assert "m-2" not in staged.names
        with staged.lease("m-2") as later:
            assert later is None, "a request that starts now does not get it"
        assert store.count() == 0, "still open for the request that holds it"
    closing.join(10)
    assert not closing.is_alive() and _closed(store)


def test_a_failed_writer_closes_its_version_and_not_serve(settings, redis_client, tmp_path):
    staged = _versions(settings, redis_client)
    entry, store = _opened(tmp_path, settings)

    def fail(_stop: threading.Event) -> None:
        raise RuntimeError("disk full")

    entry.threads = [staged._guarded(entry, "embedder-m-2", fail)]
    staged._open["m-2"] = entry
    entry.threads[0].start()
    entry.threads[0].join(10)
    assert entry.failed and "disk full" in entry.failed
    staged.update()  # no experiment names m-2 here either: closed, whatever the reason
    assert staged.names == [] and _closed(store)


def test_a_version_whose_shard_is_held_is_tried_again_without_loading_its_model_again(settings, redis_client, tmp_path, monkeypatch):
    settings = settings.model_copy(update={"qdrant_path": tmp_path / "products", "qdrant_url": None})
    staged = _versions(settings, redis_client)
    version = CatalogueVersion("m-2", "products-m-2", "/ckpt-2", False, "shelfsight-embedder-m-2")
    loads: list[str] = []

    def load(run: object) -> SimpleNamespace:
        loads.append(str(getattr(run, "model_dir", "")))
        return SimpleNamespace(dims={"fused": 8}, model_version="m-2")

    monkeypatch.setattr("services.recommender.staged.load_predictor", load)
    # another process (a `reembed`) holding the version's shard
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "products-m-2")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for _ in range(3):
            staged._start(version)
            assert staged.names == [] and staged.problem and "m-2" in staged.problem
    finally:
        holder.communicate("", timeout=30)
    assert loads == ["/ckpt-2"], "the model is loaded once, not at every poll"
    staged.update()  # no experiment names m-2 any more: the model loaded for it is let go
    assert staged._models == {}
