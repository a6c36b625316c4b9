"""The embedded shard's life: where it lives on disk, who is using it, and keeping its index up.

One process owns a shard: a second open fails on the WAL lock, reported as a
:class:`ShardLocked` with what to do instead.

The index is kept up while the process serves: :meth:`ShardKeeper.rebuild_index` copies
the shard, has a child process build the copy's HNSW index (``index_build.py``: the binding
holds the GIL while it builds), brings the copy up to date with what was written meanwhile and
swaps it in. Queries never wait for it; writes wait only for the copy and the final catch-up.
The collection's metadata file names the current shard folder, so a restart opens the
newest one, and a build that died half-way leaves nothing but a folder removed at the next open.
"""

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import qdrant_edge as q

from services.vectors.edge_config import Quantization, new_vector_params, quantised, stored_vectors, vector_params
from services.vectors.index_build import IndexBuildFailed, build_offline
from services.vectors.store import INDEXED_FIELDS, VECTOR_NAMES, StoreMismatch

log = logging.getLogger(__name__)

_SCHEMA = {"keyword": q.PayloadSchemaType.Keyword, "float": q.PayloadSchemaType.Float}
_META = "shelfsight-collection.json"
_FIRST_SHARD = "shard"
_CATCH_UP_UNDER_LOCK = 500  # changed points copied while writes wait; more are copied first, writes going on
_CATCH_UP_CHUNK = 256

IndexBuilder = Callable[[Path, threading.Event | None], bool]


class ShardLocked(RuntimeError):
    pass


@dataclass
class _Open:
    """A shard and how many calls are using it: a retired one is closed when the last returns."""

    shard: q.EdgeShard
    name: str
    users: int = 0


@dataclass(frozen=True)
class PendingWrites:
    """Points written since the index was last built (or a build was last tried)."""

    count: int
    first_at: float | None  # time.monotonic() of the first and the latest of them
    last_at: float | None


class ShardKeeper:
    """The current shard of one collection folder: opened or created, lent to calls, rebuilt and swapped."""

    def __init__(
        self, path: Path, indexing_threshold_kb: int | None = None, search_threads: int | None = None, quantization: Quantization = "int8"
    ) -> None:
        self._path = path
        self._quantization = quantization  # for a shard created here; one that exists keeps its own
        self.quantised = False  # whether the current shard searches quantised vectors
        # Qdrant's own rule for when a segment outgrows plain search (None: Qdrant's default);
        # set when the shard is created and kept with it. Tests lower it to index small shards.
        self._indexing_threshold_kb = indexing_threshold_kb
        # Set every time a shard is opened (None: Qdrant's default, a thread per core).
        self._search_threads = search_threads
        self._current: _Open | None = None
        self._dims: dict[str, int] = {}  # the collection's vectors, as its metadata file records them
        self._users = threading.Condition()
        self._writing = threading.Lock()  # one writer at a time; a rebuild holds it to copy and to swap
        self._rebuilding = threading.Lock()
        self._changed: set[str] | None = None  # point ids written while a rebuild runs
        self._pending = PendingWrites(0, None, None)

    def open(self, dims: dict[str, int]) -> None:
        """Open the collection's current shard, or create the first one, for vectors of ``dims``."""
        wanted = {name: size for name, size in dims.items() if name in VECTOR_NAMES}
        meta = self._path / _META
        if meta.exists():
            stored = json.loads(meta.read_text())
            if stored["dims"] != wanted:
                raise StoreMismatch(
                    f"the product collection in {self._path} has vectors {stored['dims']}, the model gives {wanted}; "
                    "run `shelfsight reindex` to rebuild it for this model"
                )
            self._dims = wanted
            name = stored.get("shard", _FIRST_SHARD)
            self._current = _Open(self._load(self._path / name), name)
            self._remove_other_shards(name)
            self.optimize()
            return
        optimizers = None if self._indexing_threshold_kb is None else q.EdgeOptimizersConfig(indexing_threshold=self._indexing_threshold_kb)
        config = q.EdgeConfig(
            vectors=new_vector_params(wanted, self._quantization), max_search_threads=self._search_threads, optimizers=optimizers
        )
        self._path.mkdir(parents=True, exist_ok=True)
        shard = self._open(lambda: q.EdgeShard.create(str(self._path / _FIRST_SHARD), config))
        for name, kind in INDEXED_FIELDS.items():
            shard.update(q.UpdateOperation.create_field_index(name, _SCHEMA[kind]))
        shard.flush()
        self._current = _Open(shard, _FIRST_SHARD)
        self._dims = wanted
        self.quantised = quantised(stored_vectors(self._path / _FIRST_SHARD))  # as a later load will read it
        self._write_meta(_FIRST_SHARD)

    def _load(self, folder: Path) -> q.EdgeShard:
        """The shard in ``folder``, with this process's search threads. A load writes the config it
        is given over the stored one: the vectors, quantisation included, are handed back as stored."""
        stored = stored_vectors(folder)
        config = None
        if self._search_threads is not None:
            config = q.EdgeConfig(vectors=vector_params(stored), max_search_threads=self._search_threads)
        shard = self._open(lambda: q.EdgeShard.load(str(folder), config))
        self.quantised = quantised(stored)
        return shard

    def _open(self, opener: Callable[[], q.EdgeShard]) -> q.EdgeShard:
        try:
            return opener()
        except Exception as exc:  # qdrant-edge raises plain Exception
            if "WAL" in str(exc) or "WouldBlock" in str(exc):
                raise ShardLocked(
                    f"the embedded Qdrant shard in {self._path} is open in another process; in embedded mode "
                    "one `shelfsight serve` process owns it (or set SHELFSIGHT_QDRANT_URL to use a Qdrant server)"
                ) from None
            raise

    def _write_meta(self, shard: str) -> None:
        meta = self._path / _META
        staged = meta.with_suffix(".tmp")
        staged.write_text(json.dumps({"dims": self._dims, "shard": shard}) + "\n")
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        os.replace(staged, meta)  # atomic: a restart sees the old shard or the new one, never neither

    def _remove_other_shards(self, keep: str) -> None:
        for folder in self._path.iterdir():
            if folder.is_dir() and folder.name != keep and (folder.name == _FIRST_SHARD or folder.name.startswith(f"{_FIRST_SHARD}-")):
                log.warning("removing a shard folder left by an interrupted index build", extra={"folder": str(folder)})
                shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def shard(self) -> Iterator[q.EdgeShard]:
        """The current shard, kept open until the caller is done with it even if a rebuild swaps it out."""
        with self._users:
            if self._current is None:
                raise RuntimeError("call ensure_collection() first")
            held = self._current
            held.users += 1
        try:
            yield held.shard
        finally:
            with self._users:
                held.users -= 1
                self._users.notify_all()

    @contextmanager
    def write(self, ids: list[str]) -> Iterator[q.EdgeShard]:
        with self._writing, self.shard() as shard:
            yield shard
            if self._changed is not None:
                self._changed.update(ids)
            now, p = time.monotonic(), self._pending
            self._pending = PendingWrites(p.count + len(ids), p.first_at or now, now)

    def optimize(self) -> bool:
        """Build the HNSW index of segments that outgrew plain search, in this process, blocking
        everything else in it (the binding holds the GIL). Called when an existing shard is
        opened, before anything queries it, so `serve` starts with an index however the shard
        was written; :meth:`rebuild_index` keeps it up afterwards."""
        started = time.perf_counter()
        with self._writing, self.shard() as shard:
            changed = bool(shard.optimize())
        if changed:
            log.info("shard index built", extra={"path": str(self._path), "seconds": round(time.perf_counter() - started, 1)})
        return changed

    def pending_writes(self) -> PendingWrites:
        return self._pending

    def indexed(self) -> tuple[int, int]:
        """(points, vectors in an HNSW index) of the current shard, as Qdrant counts them."""
        with self.shard() as shard:
            info = shard.info()
        return info.points_count, info.indexed_vectors_count

    def rebuild_index(self, build: IndexBuilder = build_offline, cancel: threading.Event | None = None) -> bool:
        """Build the index of a copy of the shard off-process and swap the copy in; queries and
        writes go on meanwhile. False when there was nothing to build (the copy is dropped).
        Raises :class:`IndexBuildFailed` when the build failed or was cancelled; the current
        shard is then untouched."""
        if not self._rebuilding.acquire(blocking=False):
            raise IndexBuildFailed("an index build is already running")
        try:
            return self._rebuild(build, cancel)
        finally:
            self._rebuilding.release()

    def _rebuild(self, build: IndexBuilder, cancel: threading.Event | None) -> bool:
        started = time.perf_counter()
        assert self._current is not None, "call ensure_collection() first"
        name = _next_name(self._current.name)
        target = self._path / name
        shutil.rmtree(target, ignore_errors=True)
        with self._writing:  # writes wait for the copy (bench/index_upkeep.py measures it); queries do not
            with self.shard() as shard:
                shard.flush()
                shutil.copytree(self._path / self._current.name, target)
            self._changed = set()
            before, self._pending = self._pending, PendingWrites(0, None, None)
        fresh: q.EdgeShard | None = None
        try:
            if not build(target, cancel):
                log.info("index build: nothing to build", extra={"path": str(self._path)})
                return False
            fresh = self._load(target)
            self._catch_up(fresh, name)
            swapped = time.perf_counter()
            log.info(
                "shard index rebuilt and swapped in", extra={"path": str(self._path), "shard": name, "seconds": round(swapped - started, 1)}
            )
            fresh = None  # it is the current shard now
            return True
        except BaseException:
            with self._writing:  # not built: what was pending still is
                p = self._pending
                self._pending = PendingWrites(before.count + p.count, before.first_at or p.first_at, p.last_at or before.last_at)
            raise
        finally:
            if fresh is not None:
                fresh.close()
            with self._writing:
                self._changed = None
            if self._current is None or self._current.name != name:
                shutil.rmtree(target, ignore_errors=True)

    def _catch_up(self, fresh: q.EdgeShard, name: str) -> None:
        """Copy into ``fresh`` (the folder ``name``) what was written to the current shard since it was copied, then swap."""
        while True:
            with self._writing:
                assert self._changed is not None
                changed, self._changed = self._changed, set()
                if len(changed) <= _CATCH_UP_UNDER_LOCK:
                    self._copy_points(changed, fresh)
                    fresh.flush()
                    self._swap(fresh, name)
                    return
            self._copy_points(changed, fresh)  # writes go on; what they change is caught up next round

    def _copy_points(self, ids: set[str], fresh: q.EdgeShard) -> None:
        ordered = sorted(ids)
        for at in range(0, len(ordered), _CATCH_UP_CHUNK):
            chunk: list[q.PointId] = [*ordered[at : at + _CATCH_UP_CHUNK]]
            with self.shard() as shard:
                records = shard.retrieve(chunk, with_payload=True, with_vector=True)
            found = {str(r.id): r for r in records}
            if found:
                fresh.update(q.UpdateOperation.upsert_points([q.Point(r.id, r.vector or {}, r.payload) for r in found.values()]))
            gone = [i for i in chunk if i not in found]
            if gone:
                fresh.update(q.UpdateOperation.delete_points(gone))

    def _swap(self, fresh: q.EdgeShard, name: str) -> None:
        """With writes held: make ``fresh`` the shard a restart opens, then the one calls use; close the old one."""
        old = self._current
        assert old is not None
        self._write_meta(name)
        with self._users:
            self._current = _Open(fresh, name)
            while old.users:
                self._users.wait()
        old.shard.close()
        shutil.rmtree(self._path / old.name, ignore_errors=True)

    def close(self) -> None:
        with self._writing, self._users:
            if self._current is not None:
                while self._current.users:
                    self._users.wait()
                self._current.shard.flush()
                self._current.shard.close()
                self._current = None


def _next_name(name: str) -> str:
    """shard → shard-1 → shard-2 …: each rebuild writes a new folder beside the current one."""
    generation = int(name.rsplit("-", 1)[1]) if "-" in name else 0
    return f"{_FIRST_SHARD}-{generation + 1}"
