"""The profiles worker's River learners, as the recommender scores with them.

The worker checkpoints its learners to Redis (signed); the recommender reloads them in the
background and turns them into numpy arrays, so ranking a hundred candidates is a few
vector operations instead of a hundred River calls.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import redis

from models.ranking import LinearScorer
from services.profiles.learners import CheckpointRejected, Learners, load
from services.profiles.state import Keys
from services.recommender.features import FEATURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Affinity:
    """BiasedMF: global mean + user bias + item bias + user·item, for every known item at once."""

    items: list[str]
    index: dict[str, int]
    latents: np.ndarray  # (items, factors)
    biases: np.ndarray
    users: dict[str, tuple[np.ndarray, float]]
    mean: float

    @classmethod
    def from_learners(cls, learners: Learners) -> "Affinity":
        mf = learners.mf
        items = list(mf.i_latents)
        factors = learners.n_factors
        latents = np.array([np.asarray(mf.i_latents[i], dtype=np.float32) for i in items]).reshape(len(items), factors)
        biases = np.array([float(mf.i_biases.get(i, 0.0)) for i in items], dtype=np.float32)
        users = {u: (np.asarray(v, dtype=np.float32), float(mf.u_biases.get(u, 0.0))) for u, v in mf.u_latents.items()}
        mean = float(mf.global_mean.get()) if mf.global_mean.n else 0.0
        return cls(items, {i: n for n, i in enumerate(items)}, latents, biases, users, mean)

    def knows(self, user: str) -> bool:
        return user in self.users

    def scores(self, user: str, product_ids: list[str]) -> np.ndarray:
        """Predicted preference (about -1…1) of ``user`` for each product: the mean and the shopper's
        bias for a product the factorisation does not know yet (not an arbitrary 0), 0 for an unknown shopper."""
        out = np.zeros(len(product_ids), dtype=np.float32)
        if user not in self.users:
            return out
        vector, bias = self.users[user]
        for n, product in enumerate(product_ids):
            i = self.index.get(product)
            out[n] = self.mean + bias + (self.biases[i] + float(self.latents[i] @ vector) if i is not None else 0.0)
        return out

    def top(self, user: str, limit: int) -> list[tuple[str, float]]:
        if user not in self.users or not self.items:
            return []
        vector, bias = self.users[user]
        scores = self.latents @ vector + self.biases + bias + self.mean
        best = np.argsort(-scores)[:limit]
        return [(self.items[i], float(scores[i])) for i in best]


@dataclass(frozen=True)
class Learned:
    ranker: LinearScorer | None  # over FEATURES; None until the worker has seen a served list chosen from
    affinity: Affinity
    events: int
    choices: int = 0

    @classmethod
    def from_learners(cls, learners: Learners) -> "Learned":
        ranker = learners.ranker.scorer(FEATURES) if learners.ranker is not None else None
        choices = learners.ranker.choices if learners.ranker is not None else 0
        return cls(ranker, Affinity.from_learners(learners), learners.events, choices)


class LearnedCache:
    """The newest learners checkpoint, reloaded every ``refresh_s`` on a daemon thread."""

    def __init__(self, client: redis.Redis, keys: Keys, secret: bytes, refresh_s: float = 10.0) -> None:
        self._redis, self._keys, self._secret, self._refresh_s = client, keys, secret, refresh_s
        self._current = Learned.from_learners(Learners())
        self._blob: bytes | None = None
        self._digest: bytes | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Learned:
        return self._current

    def refresh(self) -> bool:
        """Load the checkpoint if it changed; True when a new one was taken. The small digest the
        worker writes with it is read first, so an unchanged checkpoint is not downloaded again."""
        digest = self._redis.get(self._keys.learners_digest("main"))
        if digest is not None and digest == self._digest:
            return False
        self._digest = digest
        blob = self._redis.get(self._keys.learners("main"))
        if blob is None or blob == self._blob:
            return False
        try:
            self._current = Learned.from_learners(load(blob, self._secret))
        except CheckpointRejected as exc:
            log.warning("learners checkpoint ignored", extra={"reason": str(exc)})
            return False
        finally:
            self._blob = blob
        return True

    def start(self) -> "LearnedCache":
        self._thread = threading.Thread(target=self._loop, name="learners-refresh", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self.refresh():
                    log.info("learners reloaded", extra={"events_seen": self._current.events})
            except redis.RedisError as exc:
                log.warning("learners refresh failed", extra={"error": str(exc)})
            self._stop.wait(max(0.0, self._refresh_s - (time.monotonic() - started)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))
