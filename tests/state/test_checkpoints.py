"""Learner checkpoints: whatever keeps one from being read is a CheckpointRejected (the reader
starts afresh), and the recommender's reloading thread outlives any failure."""

import hashlib
import hmac
import pickle
import struct
import time
import uuid

import pytest

from models.ranking.learners import Learners
from services.recommender import learned as learned_module
from services.recommender.learned import LearnedCache
from state.checkpoints import FORMAT, VERSION, CheckpointRejected, dump, load
from state.keys import Keys

SECRET = b"0123456789abcdef0123"


def _signed(body: bytes) -> bytes:
    header = FORMAT + struct.pack(">H", VERSION)
    return header + hmac.new(SECRET, header + body, hashlib.sha256).digest() + body


def _trained() -> Learners:
    learners = Learners()
    for n in range(20):
        learners.learn_event(f"u{n % 3}", f"p{n % 7}", "click", 2.0)
    return learners


def test_a_signed_checkpoint_that_no_longer_unpickles_is_rejected_not_raised():
    body = pickle.dumps(_trained(), protocol=2).replace(
        b"cmodels.ranking.learners\nLearners\n", b"cmodels.ranking.learners\nRenamedSince\n"
    )
    with pytest.raises(CheckpointRejected, match="does not unpickle"):
        load(_signed(body), SECRET)


def test_a_signed_checkpoint_holding_something_else_is_rejected():
    with pytest.raises(CheckpointRejected, match="something else"):
        load(_signed(pickle.dumps({"not": "learners"})), SECRET)


def test_checkpoints_written_before_the_learners_moved_still_load():
    original = _trained()
    body = pickle.dumps(original, protocol=2)
    assert b"cmodels.ranking.learners\nLearners\n" in body
    old = body.replace(b"cmodels.ranking.learners\nLearners\n", b"cservices.profiles.learners\nLearners\n")
    restored = load(_signed(old), SECRET)
    assert restored.events == original.events == 20 and sorted(restored.known_items()) == sorted(original.known_items())


def test_round_trip_keeps_what_was_learned():
    original = _trained()
    restored = load(dump(original, SECRET), SECRET)
    assert restored.events == 20 and restored.affinity("u1", "p1") == pytest.approx(original.affinity("u1", "p1"))


@pytest.mark.redis
def test_the_reloading_thread_survives_a_failure_and_reloads_later(redis_client, monkeypatch):
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:")
    real = learned_module.Learned.from_learners
    failures = []

    def broken_once(learners, *shape):  # type: ignore[no-untyped-def]
        if learners.events and not failures:
            failures.append(1)
            raise RuntimeError("a bug while turning learners into arrays")
        return real(learners, *shape)

    monkeypatch.setattr(learned_module.Learned, "from_learners", staticmethod(broken_once))
    cache = LearnedCache(redis_client, keys, SECRET, refresh_s=0.05).start()
    try:
        redis_client.set(keys.learners("main"), dump(_trained(), SECRET))
        deadline = time.monotonic() + 10
        while cache.current.events != 20 and time.monotonic() < deadline:
            redis_client.set(keys.learners_digest("main"), uuid.uuid4().hex)  # a new digest: read it again
            time.sleep(0.05)
        assert failures == [1]
        assert cache.current.events == 20
        assert cache._thread is not None and cache._thread.is_alive()
    finally:
        cache.stop()
