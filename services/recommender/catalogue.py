"""The model version `serve` runs, and following ``shelfsight reembed`` to the next one without a restart.

`serve` reads products through a :class:`SwitchableStore`. When the catalogue alias
(``state.catalogue``) names another version, :meth:`LiveCatalogue.follow` opens that version's
collection (on the embedded shard, once ``shelfsight reembed`` has let go of it), stops the
old version's embedder and index upkeep (what they took from Kafka is committed to the old
version's group), swaps the store, and starts the new version's embedder in its own group,
where ``reembed`` left it. Requests are answered throughout: from the old collection until the
swap, from the new one after it.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import redis

from models.predictor import Predictor
from services.embedder.metrics import EmbedderMetrics
from services.embedder.service import Embedder, build_embedder, load_predictor
from services.embedder.versions import live_settings, settings_for
from services.errors import UserError
from services.recommender.engine import Recommender
from services.settings import Settings
from services.vectors.edge import EdgeProductStore, ShardLocked
from services.vectors.factory import cached_store, open_store
from services.vectors.store import ProductStore, StoreMismatch
from services.vectors.switchable import SwitchableStore
from services.vectors.upkeep import IndexUpkeep, UpkeepPolicy
from state.catalogue import read_alias
from state.keys import Keys

log = logging.getLogger(__name__)

Supervise = Callable[[str, Callable[[threading.Event], None], threading.Event], threading.Thread]


@dataclass
class Version:
    """One model version as `serve` runs it: its model, its collection, and what writes to it."""

    name: str
    revision: int  # of the alias that named it (0: never switched)
    settings: Settings  # the serve settings, running this version
    group: str
    predictor: Predictor
    store: ProductStore  # the collection itself; `reads` is it behind the vector cache
    reads: ProductStore
    embedder: Embedder | None = None
    upkeep: IndexUpkeep | None = None


def open_version(
    settings: Settings,
    revision: int,
    group: str,
    upkeep: UpkeepPolicy,
    metrics: EmbedderMetrics | None,
    stop: threading.Event | None = None,
    publish_indexed: bool = True,
    predictor: Predictor | None = None,
) -> Version | None:
    """``settings``' version, with an embedder when ``metrics`` is given; waits while another process
    holds its embedded shard (None if ``stop`` is set meanwhile). ``publish_indexed``: whether its
    embedder tells the profiles worker (the live version's does; a staged one's must not, or the
    copies would move to its space). ``predictor``: the version's model, if already loaded."""
    predictor = predictor or load_predictor(settings)
    while True:
        try:
            store = open_store(settings, predictor.dims)
            break
        except (ShardLocked, StoreMismatch) as exc:
            if stop is None:  # at start-up: one line, as for any other start-up problem
                raise UserError(str(exc)) from None
            if isinstance(exc, StoreMismatch) or stop.wait(settings.catalogue_poll_s):
                raise
    if stop is not None and stop.is_set():
        store.close()
        return None
    reads = cached_store(settings, store)
    version = Version(predictor.model_version, revision, settings, group, predictor, store, reads)
    try:
        if metrics is not None:
            # Its metrics join the API's /metrics instead of a port of their own.
            version.embedder = build_embedder(
                settings.model_copy(update={"embedder_metrics_port": 0}), predictor, reads, group, publish_indexed, metrics=metrics
            )
        if isinstance(store, EdgeProductStore):  # a Qdrant server indexes by itself
            version.upkeep = IndexUpkeep(store, upkeep)
    except BaseException:
        if version.embedder is not None:
            version.embedder.release()  # its model processes, never run
        store.close()  # an embedded shard left open would stay locked to this process
        raise
    return version


def first_version(settings: Settings, client: "redis.Redis", upkeep: UpkeepPolicy, with_embedder: bool) -> Version:
    run_settings, group, revision = live_settings(settings, client)
    version = open_version(run_settings, revision, group, upkeep, EmbedderMetrics() if with_embedder else None)
    assert version is not None  # no stop event: it waits or raises
    return version


@dataclass
class _Writers:
    threads: list[threading.Thread]
    stop: threading.Event


class LiveCatalogue:
    """The version being served, its writers' threads, and the switch to the next version."""

    def __init__(
        self,
        settings: Settings,
        client: "redis.Redis",
        version: Version,
        engine: Recommender,
        reads: SwitchableStore,
        upkeep: UpkeepPolicy,
        unversioned: str | None = None,
    ) -> None:
        self._settings = settings
        self._upkeep = upkeep
        self._client = client
        self._keys = Keys.of(settings)
        self.current = version
        self._engine = engine
        self._reads = reads
        self._writers = _Writers([], threading.Event())
        self.switches = 0
        self.unversioned = unversioned  # the version of tastes and product copies written without one
        self.problem: str | None = None  # why the last switch could not be followed
        self._given_up = -1

    @property
    def model_version(self) -> str:
        return self.current.name

    def start_writers(self, supervise: Supervise) -> None:
        stop = threading.Event()
        threads = []
        if self.current.embedder is not None:
            threads.append(supervise("embedder", self.current.embedder.run, stop))
        if self.current.upkeep is not None:
            threads.append(supervise("index-upkeep", self.current.upkeep.run, stop))
        self._writers = _Writers(threads, stop)
        for t in threads:
            t.start()

    def stop_writers(self, timeout_s: float | None = 60.0) -> None:
        """The index build is cancelled; the embedder finishes its batch, commits and stops."""
        self._writers.stop.set()
        for t in self._writers.threads:
            t.join(timeout_s)

    def follow(self, supervise: Supervise) -> Callable[[threading.Event], None]:
        """The loop a supervised thread runs: switch each time the alias names another version.
        Nothing read from the alias stops `serve`: a switch it cannot make is logged and shown on
        /healthz (``catalogue_problem``), and the current version goes on serving."""

        def run(stop: threading.Event) -> None:
            while not stop.wait(self._settings.catalogue_poll_s):
                try:
                    alias = read_alias(self._client, self._keys)
                except Exception as exc:  # Redis away, or a document this version cannot read
                    log.warning("could not read the catalogue alias; trying again", extra={"error": str(exc)[:300]})
                    continue
                if alias is None:
                    continue
                self.unversioned = alias.unversioned
                if alias.revision != self.current.revision and alias.revision != self._given_up:
                    self._switch(settings_for(self._settings, alias.live), alias.revision, alias.live.group, supervise, stop)

        return run

    def _switch(self, settings: Settings, revision: int, group: str, supervise: Supervise, stop: threading.Event) -> None:
        log.info("switching the catalogue", extra={"from": self.current.name, "collection": settings.qdrant_collection})
        metrics = self.current.embedder.worker.metrics if self.current.embedder is not None else None
        try:
            new = open_version(settings, revision, group, self._upkeep, metrics, stop)
        except ShardLocked:
            return  # stopping
        except Exception as exc:  # a checkpoint this process cannot load, a collection that does not fit it, …
            self.problem = f"staying on {self.current.name}: could not open {settings.qdrant_collection}: {exc}"[:300]
            log.exception("could not follow the catalogue switch; the current version goes on serving")
            self._given_up = revision  # not again at every poll; a later switch is tried afresh
            return
        if new is None or stop.is_set():  # stopping
            if new is not None:
                if new.embedder is not None:
                    new.embedder.release()
                new.store.close()
            return
        # The old version's writers end first (the embedder's batch in hand is written and committed
        # to the old group), however long that takes: its store must not close under them.
        self.stop_writers(timeout_s=None)
        old = self.current
        self._reads.point_at(new.reads)
        # Version and dimensions move with the store, so a request reads vectors of one space.
        self._engine.follow_model(new.predictor.dims["fused"])
        self.current, self.problem = new, None
        self.start_writers(supervise)
        self._reads.drain(old.reads)
        old.store.close()
        self.switches += 1
        log.info("catalogue switched", extra={"model": new.name, "collection": settings.qdrant_collection, "group": group})

    def close(self) -> None:
        self.current.store.close()
