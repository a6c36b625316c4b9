"""The profiles workers' River learners, as the recommender scores with them.

Each worker checkpoints its learners to Redis (signed, registered under its name); the
recommender reloads them in the background, turns them into numpy arrays — so ranking a
hundred candidates is a few vector operations instead of a hundred River calls — and merges
the workers' checkpoints: each worker learns from its own partitions, so no single one knows
every shopper or every choice.

- The factorisation: a shopper is scored by the checkpoint that learned most of their events
  (shoppers are partitioned by Kafka key, so usually exactly one), with that checkpoint's own
  item factors — factor spaces trained apart are not comparable, so they are never averaged.
- The ranker: linear, so the workers' rankers are averaged in raw feature space, weighted by
  the choices each learned from.
- The item-to-item model: the workers' co-occurrence counts are summed (their shoppers are
  disjoint) and the model is fitted here, once per change, on the reloading thread.
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import redis

from models.ranking import ItemModel, LinearScorer, fit_item_model, merge_counts
from models.ranking.learners import Learners
from schemas.experiments import MAX_VARIANTS
from services.recommender.features import FEATURES
from state.checkpoints import (
    CHECKPOINT_KEEP_S,
    CheckpointRejected,
    checkpoint_names,
    load,
    load_saved,
)
from state.keys import Keys

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
    user_events: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_learners(cls, learners: Learners) -> "Affinity":
        mf = learners.mf
        items = [str(i) for i in mf.i_latents]  # River keys them by whatever id it was given: ours are strings
        factors = learners.n_factors
        latents = np.array([np.asarray(mf.i_latents[i], dtype=np.float32) for i in items]).reshape(len(items), factors)
        biases = np.array([float(mf.i_biases.get(i, 0.0)) for i in items], dtype=np.float32)
        users = {str(u): (np.asarray(v, dtype=np.float32), float(mf.u_biases.get(u, 0.0))) for u, v in mf.u_latents.items()}
        mean = float(mf.global_mean.get()) if mf.global_mean.n else 0.0
        return cls(items, {i: n for n, i in enumerate(items)}, latents, biases, users, mean, dict(getattr(learners, "user_events", {})))

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


class Affinities:
    """Several workers' factorisations, each shopper answered by the one that knows them best."""

    def __init__(self, parts: list[Affinity]) -> None:
        self.parts = parts
        self._owner: dict[str, Affinity] = {}
        for part in parts:
            for user in part.users:
                best = self._owner.get(user)
                if best is None or part.user_events.get(user, 0) > best.user_events.get(user, 0):
                    self._owner[user] = part

    def knows(self, user: str) -> bool:
        return user in self._owner

    def scores(self, user: str, product_ids: list[str]) -> np.ndarray:
        part = self._owner.get(user)
        return part.scores(user, product_ids) if part is not None else np.zeros(len(product_ids), dtype=np.float32)

    def top(self, user: str, limit: int) -> list[tuple[str, float]]:
        part = self._owner.get(user)
        return part.top(user, limit) if part is not None else []


def merge_rankers(parts: list[tuple[LinearScorer, int]]) -> LinearScorer | None:
    """Linear rankers over the same features, averaged in raw feature space by the choices each
    learned from; the unlearned ones (still on the prior) only count when none has learned."""
    learned = [(scorer, choices) for scorer, choices in parts if scorer.learned and choices > 0]
    if not learned:
        return max(parts, key=lambda p: p[1])[0] if parts else None
    if len(learned) == 1:
        return learned[0][0]
    total = float(sum(c for _, c in learned))
    raw = sum((s.scales * s.weights) * (c / total) for s, c in learned)
    offsets = sum(s.offsets * (c / total) for s, c in learned)
    names = learned[0][0].names
    return LinearScorer(names, np.asarray(offsets), np.ones(len(names)), np.asarray(raw), learned=True)


Counts = tuple[list[str], np.ndarray]  # items, and their co-occurrence counts (models.ranking.item_model)


@dataclass(frozen=True)
class ItemModelShape:
    """How the item-to-item model is fitted: exact EASE up to ``exact_items`` products, beyond them
    a rank-``rank`` view (``SHELFSIGHT_ITEM_MODEL_ITEMS``, ``SHELFSIGHT_ITEM_MODEL_RANK``)."""

    exact_items: int = 2_000
    rank: int = 64


@dataclass(frozen=True)
class Learned:
    ranker: LinearScorer | None  # over FEATURES; None until the worker has seen a served list chosen from
    affinity: Affinity | Affinities
    events: int
    choices: int = 0
    counts: tuple[Counts, ...] = ()  # each worker's item co-occurrence counts
    item_weights: ItemModel | None = None  # fitted from ``counts`` and ``histories``; None: fitted on first use
    histories: tuple[list[list[str]], ...] = ()  # each worker's remembered shopper histories
    shape: ItemModelShape = field(default_factory=ItemModelShape)

    @cached_property
    def co_occurrence(self) -> Counts:
        """The workers' counts added up, when first asked for: a reload that keeps the fitted
        model (``LearnedCache``'s refit throttle) never needs them."""
        return merge_counts(self.counts) if self.counts else ([], np.zeros((0, 0), dtype=np.float32))

    @cached_property
    def item_model(self) -> ItemModel:
        """The item-to-item model (``LearnedCache`` fits it on its own thread, before serving)."""
        if self.item_weights is not None:
            return self.item_weights
        shoppers = [history for part in self.histories for history in part]  # the workers' shoppers are disjoint
        return fit_item_model(self.co_occurrence, shoppers, self.shape.exact_items, self.shape.rank)

    @classmethod
    def merge(cls, parts: list["Learned"]) -> "Learned":
        """The workers' learners as one (see the module's docstring)."""
        if len(parts) == 1:
            return parts[0]
        ranker = merge_rankers([(p.ranker, p.choices) for p in parts if p.ranker is not None])
        affinities = [a for p in parts for a in (p.affinity.parts if isinstance(p.affinity, Affinities) else [p.affinity])]
        return cls(
            ranker,
            Affinities(affinities),
            sum(p.events for p in parts),
            sum(p.choices for p in parts),
            tuple(c for p in parts for c in p.counts),
            histories=tuple(h for p in parts for h in p.histories),
            shape=parts[0].shape,
        )

    @classmethod
    def from_learners(cls, learners: Learners, shape: ItemModelShape | None = None) -> "Learned":
        ranker = learners.ranker.scorer(FEATURES) if learners.ranker is not None else None
        choices = learners.ranker.choices if learners.ranker is not None else 0
        co = learners.co_occurrence
        return cls(
            ranker,
            Affinity.from_learners(learners),
            learners.events,
            choices,
            (co.counts(),),
            histories=(co.histories(),),
            shape=shape or ItemModelShape(),
        )


class LearnedCache:
    """The workers' newest learners checkpoints, merged, reloaded every ``refresh_s`` on a daemon thread;
    the item-to-item model is fitted again at most every ``refit_s`` (a fit costs seconds at thousands of items)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        secret: bytes,
        refresh_s: float = 10.0,
        keep_s: float = CHECKPOINT_KEEP_S,
        refit_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        shape: ItemModelShape | None = None,
        saved_check_s: float = 5.0,
    ) -> None:
        """``saved_check_s``: how often the copy saved under a name is looked up again (a request
        naming saved learners reads nothing from Redis in between)."""
        self._redis, self._keys, self._secret, self._refresh_s, self._keep_s = client, keys, secret, refresh_s, keep_s
        self._shape = shape or ItemModelShape()
        self._refit_s = refit_s
        self._clock = clock  # the refit throttle's (a replay runs it on the stream's own clock)
        self._fitted_at: float | None = None
        self._current = Learned.from_learners(Learners())
        self._parts: dict[str, tuple[bytes | None, Learned]] = {}  # worker → (digest, its learners)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # name → (its index entry, its learners or None if unusable, until when that holds)
        self._saved: dict[str, tuple[bytes | str, Learned | None, float]] = {}
        self._saved_locks: dict[str, threading.Lock] = {}
        self._saved_check_s = saved_check_s
        self._saved_index: dict[str, tuple[float, bytes | str | None]] = {}  # name → (looked up at, its index entry)
        self._saved_index_lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()  # bounded: by the names experiments give and a few messages

    @property
    def current(self) -> Learned:
        return self._current

    def saved(self, name: str) -> Learned | None:
        """The learners saved under ``name`` (`shelfsight learners save`), merged and fitted on first
        use and kept while the name holds the same copy; None when nothing usable is saved under it
        (the variant then ranks with the live learners, and the warning says so, once). The first
        request that names them pays for the load (their variant's guardrails show it); requests
        for other names and for the live learners do not wait for it."""
        try:
            about = self._index_entry(name)
        except redis.RedisError as exc:
            self._warn_once(name, "saved learners not read; the live ones rank instead", str(exc))
            return None
        if about is None:
            self._warn_once(name, "no learners saved under this name; the live ones rank instead", "")
            return None
        known = self._saved.get(name)
        if known is not None and known[0] == about and time.monotonic() < known[2]:
            return known[1]
        with self._saved_locks.setdefault(name, threading.Lock()):  # one load per name at a time
            known = self._saved.get(name)
            if known is not None and known[0] == about and time.monotonic() < known[2]:
                return known[1]
            learned, retry_at = self._load_saved(name)
            self._saved[name] = (about, learned, retry_at)
            while len(self._saved) > MAX_VARIANTS:
                self._saved.pop(next(iter(self._saved)))
            return learned

    def _index_entry(self, name: str) -> bytes | str | None:
        """Which copy ``name`` holds, looked up at most every ``saved_check_s``: a new copy or a
        deletion is followed within that, and requests in between read nothing from Redis."""
        now = time.monotonic()
        checked = self._saved_index.get(name)
        if checked is not None and now - checked[0] < self._saved_check_s:
            return checked[1]
        about = self._redis.hget(self._keys.learners_saved_index, name)
        with self._saved_index_lock:  # request threads share it
            self._saved_index[name] = (now, about)
            while len(self._saved_index) > MAX_VARIANTS:
                self._saved_index.pop(next(iter(self._saved_index)))
        return about

    def _load_saved(self, name: str) -> tuple[Learned | None, float]:
        """(the learners, or None; until when this answer holds). Learners, and a copy that does not
        verify, hold while the name holds the same copy; any other failure is tried again in 30 s."""
        try:
            found = load_saved(self._redis, self._keys, name, self._secret)
            learned = Learned.merge([Learned.from_learners(part, self._shape) for part in found]) if found else None
            if learned is not None:
                learned.item_model  # noqa: B018 - fitted once, here, for every request that follows
            return learned, math.inf
        except CheckpointRejected as exc:
            self._warn_once(name, "saved learners rejected; the live ones rank instead", str(exc))
            return None, math.inf
        except Exception as exc:  # Redis away, a fit that failed: the request goes on with the live learners
            self._warn_once(name, "saved learners not loaded; the live ones rank instead", f"{type(exc).__name__}: {exc}")
            return None, time.monotonic() + 30.0

    def _warn_once(self, name: str, message: str, reason: str) -> None:
        if (name, message) not in self._warned:
            self._warned.add((name, message))
            log.warning(message, extra={"saved": name, "reason": reason[:200]})

    def refresh(self) -> bool:
        """Reload the checkpoints that changed; True when the merged learners changed. Each
        worker's small digest is read first, so an unchanged checkpoint is not downloaded again."""
        keys = self._keys
        names = checkpoint_names(self._redis, keys, time.time(), self._keep_s)
        changed = False
        for name, digest in zip(names, self._redis.mget([keys.learners_digest(n) for n in names]), strict=True):
            known = self._parts.get(name)
            if known is not None and digest is not None and digest == known[0]:
                continue
            blob = self._redis.get(keys.learners(name))
            digest = digest.encode() if isinstance(digest, str) else digest
            if not isinstance(blob, bytes):
                changed |= self._parts.pop(name, None) is not None
                continue
            try:
                self._parts[name] = (digest, Learned.from_learners(load(blob, self._secret), self._shape))
                changed = True
            except CheckpointRejected as exc:
                log.warning("learners checkpoint ignored", extra={"reason": str(exc), "worker": name})
                self._parts[name] = (digest, Learned.from_learners(Learners()))
        for gone in set(self._parts) - set(names):
            del self._parts[gone]
            changed = True
        if changed and self._parts:
            merged = Learned.merge([learned for _, learned in self._parts.values()])
            now = self._clock()
            if self._fitted_at is not None and now - self._fitted_at < self._refit_s:
                merged = replace(merged, item_weights=self._current.item_model)
            else:
                merged.item_model  # noqa: B018 - fitted here, on this thread, not inside a request
                self._fitted_at = now
            self._current = merged
        return changed

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
            except Exception:  # a bug or a bad checkpoint must not end reloading for good: serving would go stale silently
                log.exception("learners refresh failed")
            self._stop.wait(max(0.0, self._refresh_s - (time.monotonic() - started)))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))
