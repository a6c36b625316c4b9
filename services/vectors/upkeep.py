"""Keeping the embedded shard's vector index built while `serve` runs.

Products indexed while `serve` runs land in a segment searched plainly (every query reads
every vector of it) until its index is built. :class:`IndexUpkeep` watches the writes and,
once enough have piled up and the embedder has paused (or they have waited long enough),
has the store rebuild its index off-process (``EdgeProductStore.rebuild_index``). A failed
build costs speed, never answers: it is logged and tried again later.

>>> policy = UpkeepPolicy(min_writes=1_000, quiet_s=5.0, max_wait_s=60.0)
>>> policy.due(PendingWrites(999, first_at=0.0, last_at=0.0), now=100.0)  # too few to be worth it
False
>>> policy.due(PendingWrites(1_000, first_at=10.0, last_at=12.0), now=14.0)  # a burst still arriving
False
>>> policy.due(PendingWrites(1_000, first_at=10.0, last_at=12.0), now=17.0)  # quiet for 5 s
True
>>> policy.due(PendingWrites(5_000, first_at=10.0, last_at=69.9), now=70.0)  # never quiet: built anyway
True
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from services.vectors.edge import EdgeProductStore, PendingWrites
from services.vectors.index_build import IndexBuildFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpkeepPolicy:
    min_writes: int  # points written since the last build before another is worth its cost; 0: never
    quiet_s: float  # build once writes have paused this long …
    max_wait_s: float  # … or once the oldest unindexed write is this old, paused or not

    def due(self, pending: PendingWrites, now: float) -> bool:
        if self.min_writes <= 0 or pending.count < self.min_writes or pending.first_at is None or pending.last_at is None:
            return False
        return now - pending.last_at >= self.quiet_s or now - pending.first_at >= self.max_wait_s


@dataclass
class UpkeepStats:
    builds: int = 0  # index builds swapped in
    nothing_to_build: int = 0  # builds that found the index already covered every segment
    failures: int = 0
    last_seconds: float | None = None  # how long the last swapped-in build took, copy to swap
    building: bool = False


class IndexUpkeep:
    def __init__(
        self,
        store: EdgeProductStore,
        policy: UpkeepPolicy,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        retry_after_s: float = 60.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._poll_s = poll_s
        self._clock = clock
        self._retry_after_s = retry_after_s
        self.stats = UpkeepStats()

    def report(self) -> dict[str, object]:
        """What `/healthz` shows: the stats, and how many writes the index does not cover yet."""
        return asdict(self.stats) | {"unindexed_writes": self._store.pending_writes().count}

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: build when due. ``stop`` also cancels a build under way."""
        not_before = 0.0
        while not stop.wait(self._poll_s):
            now = self._clock()
            if now < not_before or not self._policy.due(self._store.pending_writes(), now):
                continue
            started = time.perf_counter()
            self.stats.building = True
            try:
                if self._store.rebuild_index(cancel=stop):
                    self.stats.builds += 1
                    self.stats.last_seconds = round(time.perf_counter() - started, 2)
                else:
                    self.stats.nothing_to_build += 1
            except IndexBuildFailed as exc:
                if stop.is_set():
                    return
                self.stats.failures += 1
                not_before = self._clock() + self._retry_after_s
                log.warning(
                    "index build failed; queries stay correct, new products are searched plainly until it succeeds",
                    extra={"error": str(exc)[:300], "retry_in_s": self._retry_after_s},
                )
            finally:
                self.stats.building = False
