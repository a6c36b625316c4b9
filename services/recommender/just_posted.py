"""Read your own writes: what this `serve` process accepted on `POST /v1/events` a moment ago.

A click goes to Kafka, then to the profiles worker, then into Redis: tens of milliseconds, more
when the worker is busy. A shopper who clicks and at once asks again (the widget refreshing, a
quick second click) would get an answer that has not heard of the click. So the API keeps each
shopper's last few posted events for ``keep_s`` seconds, long after the worker has applied them,
and the recommender reads them over what Redis says: the product is in the shopper's recent
items (with its co-visitation and history pairs), and never recommended back.

>>> clock = [0.0]
>>> posted = JustPosted(keep_s=30.0, clock=lambda: clock[0])
>>> posted.add([Posted("ann", "p1", "click"), Posted("ann", "p2", "view")])
>>> [p.product_id for p in posted.of("ann")], posted.of("bob")
(['p2', 'p1'], [])
>>> clock[0] = 31.0
>>> posted.of("ann")
[]
"""

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Posted:
    user_id: str
    product_id: str
    kind: str
    at: float = 0.0  # when this process accepted it (its own clock)


class JustPosted:
    """Per shopper, the last ``per_shopper`` events accepted, for ``keep_s`` seconds; bounded in shoppers."""

    def __init__(
        self, keep_s: float = 30.0, per_shopper: int = 10, shoppers: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keep_s, self._per_shopper, self._shoppers, self._clock = keep_s, per_shopper, shoppers, clock
        self._events: OrderedDict[str, deque[Posted]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, events: Iterable[Posted]) -> None:
        now = self._clock()
        with self._lock:
            for event in events:
                if event.kind == "impression":  # marks what was seen: nothing a recommendation reads
                    continue
                queue = self._events.pop(event.user_id, None) or deque(maxlen=self._per_shopper)
                queue.append(Posted(event.user_id, event.product_id, event.kind, now))
                self._events[event.user_id] = queue
            while len(self._events) > self._shoppers:
                self._events.popitem(last=False)

    def of(self, user_id: str) -> list[Posted]:
        """``user_id``'s events of the last ``keep_s`` seconds, newest first."""
        oldest = self._clock() - self._keep_s
        with self._lock:
            queue = self._events.get(user_id)
            return [p for p in reversed(queue) if p.at >= oldest] if queue else []
