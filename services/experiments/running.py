"""The experiment every `serve` assigns by, read from Redis at most every few seconds.

Reading on the request path but only when the last read is older than ``poll_s`` keeps a
new or stopped experiment visible to every process within that time, without a thread of its
own. Redis away: the last experiments read stay in force, and the error is logged once a poll.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import redis

from schemas.experiments import Experiment
from services.experiments.assignment import Assignment, assignment_of
from state.experiments import load_all
from state.keys import Keys

log = logging.getLogger(__name__)


class RunningExperiments:
    def __init__(self, client: redis.Redis, keys: Keys, poll_s: float, clock: Callable[[], float] = time.time) -> None:
        self._client, self._keys, self._poll_s, self._clock = client, keys, poll_s, clock
        self._experiments: list[Experiment] = []
        self._read_at = -float("inf")
        self._lock = threading.Lock()

    def assign(self, user_id: str) -> Assignment | None:
        """The shopper's place in the experiment running now; None outside one."""
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        for experiment in self._current(now):
            if experiment.running(at):
                return assignment_of(experiment, user_id)
        return None

    def _current(self, now: float) -> list[Experiment]:
        if now - self._read_at < self._poll_s:
            return self._experiments
        with self._lock:
            if now - self._read_at >= self._poll_s:
                self._read_at = now
                try:
                    self._experiments = load_all(self._client, self._keys)
                except redis.RedisError as error:
                    log.warning("experiments not read; the last ones stay in force", extra={"error": str(error)[:200]})
        return self._experiments
