"""Rate limits: token buckets (per client address, per publishable key, and one for the served
log) and caps on what is held open at once (live streams per address and per shopper). In
memory, per `serve` process: with several processes behind a balancer each enforces its own share.

>>> clock = [0.0]
>>> buckets = Buckets(rate_per_s=2, burst=4, clock=lambda: clock[0])
>>> [buckets.take("a", 3), buckets.take("a", 2), buckets.take("b", 4)]
[0.0, 0.5, 0.0]
>>> clock[0] = 0.5
>>> buckets.take("a", 2)
0.0

More than the burst at once is never allowed, however long the caller waits:

>>> buckets.take("c", 5)
inf
"""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class Buckets:
    """Token buckets by key; ``take`` answers 0 when allowed, else seconds until it would be
    (``inf`` for an amount over the burst: no bucket ever holds that much)."""

    def __init__(self, rate_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._rate, self.burst, self._clock, self._max_keys = rate_per_s, burst, clock, max_keys
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key → (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, amount: float = 1.0) -> float:
        if amount > self.burst:  # checked first: a full bucket must not let it through free
            return math.inf
        now = self._clock()
        with self._lock:
            tokens, at = self._levels.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self._rate)
            if amount > tokens:
                self._keep(key, tokens, now)
                return (amount - tokens) / self._rate if self._rate > 0 else math.inf
            self._keep(key, tokens - amount, now)
            return 0.0

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._levels[key] = (tokens, now)
        while len(self._levels) > self._max_keys:  # the longest idle go first: they are full again anyway
            self._levels.popitem(last=False)


class Concurrent:
    """How many of something each key holds at once, up to ``limit``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        with self._lock:
            if self._held.get(key, 0) >= self._limit:
                return False
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)
