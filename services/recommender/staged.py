"""Model versions an experiment's variants are served from, besides the live one (``VariantSpec.model``).

Every SHELFSIGHT_EXPERIMENTS_POLL_S, `serve` reads the experiments. A version that an experiment
not yet over names (staged with ``shelfsight reembed --stage``, or the one before the live one) is
opened: its collection, its model, an engine that makes lists from it, and an embedder in the
version's own consumer group that keeps it current with ``products.listed``. That embedder does not
publish ``products.indexed``: the profiles worker's product copies stay in the live version's space.
A version no experiment needs any more, or that has become live, is closed once the requests
holding it are done and its embedder has committed; its embedded shard is then free for
``shelfsight reembed`` again. A staged version's writer that fails closes that version (it is
opened afresh at the next poll): an experiment never stops the live shop.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from models.predictor import Predictor
from schemas.experiments import MAX_VARIANTS
from services.embedder.metrics import EmbedderMetrics
from services.embedder.service import load_predictor
from services.embedder.versions import settings_for
from services.recommender.catalogue import Version, open_version
from services.recommender.engine import Recommender
from services.settings import Settings
from services.vectors.store import ProductStore
from services.vectors.upkeep import UpkeepPolicy
from state.catalogue import CatalogueVersion, read_alias, servable_under, staged
from state.experiments import load_all
from state.keys import Keys

log = logging.getLogger(__name__)

MAX_OPEN = MAX_VARIANTS - 1  # every variant of one experiment but its control on a version of its own

MakeEngine = Callable[[Version, ProductStore], Recommender]


@dataclass
class _Opened:
    version: Version
    engine: Recommender
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    users: int = 0  # requests running on it
    failed: str | None = None  # a writer that died: the version is closed at the next poll


class StagedVersions:
    def __init__(
        self,
        settings: Settings,
        client: "redis.Redis",
        base: CatalogueVersion,
        make_engine: MakeEngine,
        upkeep: UpkeepPolicy,
        metrics: EmbedderMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``base``: the version the settings name, live until the first switch; ``make_engine``: an
        engine for an opened version."""
        self._settings, self._client, self._keys = settings, client, Keys.of(settings)
        self._base, self._make_engine = base, make_engine
        self._upkeep, self._metrics, self._clock = upkeep, metrics, clock
        self._open: dict[str, _Opened] = {}
        # Models loaded for versions not open yet (their shard held by a `reembed`): not loaded
        # again at every poll while it is.
        self._models: dict[str, Predictor] = {}
        self._changed = threading.Condition()
        self.problem: str | None = None  # why a version an experiment names is not served

    @contextmanager
    def lease(self, name: str) -> Iterator[Recommender | None]:
        """The version's engine, kept open until the request that holds it is done (None: not open)."""
        with self._changed:
            opened = self._open.get(name)
            if opened is not None:
                opened.users += 1
        try:
            yield opened.engine if opened is not None else None
        finally:
            if opened is not None:
                with self._changed:
                    opened.users -= 1
                    self._changed.notify_all()

    @property
    def names(self) -> list[str]:
        with self._changed:
            return sorted(self._open)

    def follow(self, stop: threading.Event) -> None:
        """The loop `serve` runs on a thread of its own; it closes what it opened when stopped."""
        try:
            while True:
                try:
                    self.update()
                except Exception:  # whatever an experiment's version does, the live shop goes on
                    log.exception("experiments' model versions not followed this poll")
                if stop.wait(self._settings.experiments_poll_s):
                    return
        finally:
            for name in self.names:
                self._close(name)

    def update(self) -> None:
        """Open the versions the experiments name, close those they no longer do (or whose writer failed)."""
        try:
            wanted = self._wanted()
        except (redis.RedisError, ValueError) as error:  # Redis away, a document this process cannot read
            log.warning("experiments' model versions not read; those open stay", extra={"error": str(error)[:200]})
            return
        closed = set()
        for name in self.names:
            failed = self._open[name].failed
            if name not in wanted or failed:
                self._close(name)
                closed.add(name)
                if failed:
                    self.problem = f"{name} was closed: {failed}; opened again at the next poll"[:300]
        for name in set(self._models) - set(wanted):
            del self._models[name]
        for name, version in wanted.items():
            if name not in self._open and name not in closed:
                self._start(version)

    def _wanted(self) -> dict[str, CatalogueVersion]:
        at = datetime.fromtimestamp(self._clock(), UTC)
        named = {v.model for e in load_all(self._client, self._keys) if not e.over(at) for v in e.variants if v.model is not None}
        alias = read_alias(self._client, self._keys)
        named.discard(alias.live.name if alias is not None else self._base.name)  # the live engine serves it
        if not named:
            self.problem = None
            return {}
        known = servable_under(alias, staged(self._client, self._keys), self._base)  # the alias read once
        chosen = sorted(named & known.keys())[:MAX_OPEN]
        left = sorted(named - set(chosen))
        self.problem = (
            f"experiments name model versions not served: {', '.join(left)} (stage them, or stop those experiments)" if left else None
        )
        return {name: known[name] for name in chosen}

    def _start(self, version: CatalogueVersion) -> None:
        settings = settings_for(self._settings, version)
        try:
            if version.name not in self._models:
                self._models[version.name] = load_predictor(settings)
            # Never waits for a shard another process holds (a `reembed`): tried again at the next poll.
            opened = open_version(
                settings, 0, version.group, self._upkeep, self._metrics, publish_indexed=False, predictor=self._models[version.name]
            )
            del self._models[version.name]
        except Exception as error:
            self.problem = f"could not open {version.name} for an experiment: {error}"[:300]
            log.warning("could not open an experiment's model version; tried again at the next poll", extra={"error": self.problem})
            return
        assert opened is not None and opened.embedder is not None  # no stop event; metrics given
        entry = _Opened(opened, self._make_engine(opened, opened.reads))
        writers = [("embedder", opened.embedder.run)] + ([("index-upkeep", opened.upkeep.run)] if opened.upkeep is not None else [])
        entry.threads = [self._guarded(entry, f"{part}-{version.name}", run) for part, run in writers]
        with self._changed:
            self._open[version.name] = entry
        for thread in entry.threads:
            thread.start()
        log.info("serving an experiment's model version", extra={"model": version.name, "collection": version.collection})

    def _guarded(self, entry: _Opened, name: str, run: Callable[[threading.Event], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                run(entry.stop)
            except BaseException as error:
                log.exception("a writer of an experiment's model version failed; closing that version", extra={"part": name})
                entry.failed = f"{name} failed: {error!r}"[:200]

        return threading.Thread(target=guarded, name=name, daemon=True)

    def _close(self, name: str) -> None:
        with self._changed:
            entry = self._open.pop(name)
        entry.stop.set()
        for thread in entry.threads:
            thread.join()  # the embedder's batch in hand is written and committed to the version's group
        with self._changed:
            self._changed.wait_for(lambda: entry.users == 0, timeout=60.0)
        entry.version.store.close()
        log.info("closed an experiment's model version", extra={"model": name})
