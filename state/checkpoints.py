"""Learner checkpoints in Redis: the format, the names, and how long they are kept.

Each profiles worker writes its learners (``models.ranking.learners.Learners``) under its own
name (``Keys.learners``) with a digest beside it, and registers the name; the recommender
reads every registered worker's checkpoint and merges them.

A checkpoint is pickled — River models are plain Python objects — but it is signed with
HMAC-SHA256 over a versioned header and the body, and the signature is checked before
anything is unpickled, so whoever can write to Redis cannot make a worker run code. Whatever
goes wrong when reading one — a foreign blob, another format version, a bad signature, or a
signed body that no longer unpickles (classes renamed since) — is :class:`CheckpointRejected`:
the reader starts from fresh learners instead of failing.

>>> from models.ranking.learners import Learners
>>> blob = dump(Learners(), b"0123456789abcdef")
>>> load(blob, b"0123456789abcdef").events
0
>>> load(blob, b"another secret!!")
Traceback (most recent call last):
...
state.checkpoints.CheckpointRejected: checkpoint signature does not match: refusing to unpickle it
"""

import hashlib
import hmac
import io
import json
import pickle
import struct

import redis

from models.ranking.learners import Learners
from state.keys import Keys

FORMAT = b"SSLRN"
VERSION = 4  # 2: the pairwise ranker replaced the pointwise click model; 3: bounded factorisation; 4: co-occurrence

# A checkpoint (and its worker's registration) is kept this long after its last write.
CHECKPOINT_KEEP_S = 7 * 24 * 3600.0

# Where the learners' class lived when older checkpoints were written: the same format, read as is.
_MOVED = {"services.profiles.learners": "models.ranking.learners"}


class CheckpointRejected(ValueError):
    """A learners checkpoint that is not to be used; the reason is one line."""


def dump(learners: Learners, secret: bytes) -> bytes:
    body = pickle.dumps(learners, protocol=pickle.HIGHEST_PROTOCOL)
    header = FORMAT + struct.pack(">H", VERSION)
    signature = hmac.new(secret, header + body, hashlib.sha256).digest()
    return header + signature + body


def load(blob: bytes, secret: bytes) -> Learners:
    """The learners in ``blob``; :class:`CheckpointRejected` before unpickling anything untrusted,
    and for anything else that keeps a signed checkpoint from being read."""
    head = len(FORMAT) + 2
    if len(blob) < head + 32 or not blob.startswith(FORMAT):
        raise CheckpointRejected("not a Shelfsight learners checkpoint")
    (version,) = struct.unpack(">H", blob[len(FORMAT) : head])
    if version != VERSION:
        raise CheckpointRejected(f"checkpoint format {version}; this version reads {VERSION}")
    signature, body = blob[head : head + 32], blob[head + 32 :]
    expected = hmac.new(secret, blob[:head] + body, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise CheckpointRejected("checkpoint signature does not match: refusing to unpickle it")
    try:
        learners = _Unpickler(io.BytesIO(body)).load()
    except Exception as exc:  # signed by us, but unreadable by this version (a class moved, a library changed)
        raise CheckpointRejected(f"checkpoint does not unpickle with this version: {type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(learners, Learners):
        raise CheckpointRejected("checkpoint holds something else")
    return learners


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        return super().find_class(_MOVED.get(module, module), name)


def checkpoint_names(client: redis.Redis, keys: Keys, now: float, keep_s: float = CHECKPOINT_KEEP_S) -> list[str]:
    """The workers whose learners checkpoints are current, then ``main`` (a single-process replay's)."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in client.zrangebyscore(keys.learners_workers, now - keep_s, "+inf")]
    return list(dict.fromkeys([*names, "main"]))


# Saved learners: every worker's checkpoint copied, as it is, under a name an experiment's variant
# can rank with (``VariantSpec.learners``). The copies stay signed; they are kept until deleted.
MAX_SAVED = 20  # names at a time: each holds a copy of every worker's checkpoint


class SavedLearnersError(ValueError):
    """A saved-learners name that cannot be used as asked; the message is one line."""


def save_learners(client: redis.Redis, keys: Keys, name: str, now: float, keep_s: float = CHECKPOINT_KEEP_S) -> list[str]:
    """Copy every current worker checkpoint under ``name`` (the checkpoints `serve` merges now);
    the workers copied. The name is checked and taken in one transaction: two saves at once
    cannot both have it."""
    names = checkpoint_names(client, keys, now, keep_s)
    found = zip(names, client.mget([keys.learners(n) for n in names]), strict=True)
    blobs: dict[str, bytes] = {worker: blob for worker, blob in found if isinstance(blob, bytes)}
    if not blobs:
        raise SavedLearnersError("no profiles worker has checkpointed learners yet: run `shelfsight profiles` first")
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.learners_saved_index)
            if pipe.hexists(keys.learners_saved_index, name):
                raise SavedLearnersError(f"learners are already saved as {name!r}: choose another name, or delete it first")
            if pipe.hlen(keys.learners_saved_index) >= MAX_SAVED:
                raise SavedLearnersError(f"{MAX_SAVED} learners are saved already: delete one (`shelfsight learners delete NAME`) first")
            pipe.multi()
            pipe.delete(keys.learners_saved(name))
            pipe.hset(keys.learners_saved(name), mapping=blobs)  # type: ignore[arg-type]  # redis-py types the mapping invariantly
            pipe.hset(keys.learners_saved_index, name, json.dumps({"saved_at": now, "workers": sorted(blobs)}))
            pipe.execute()
        except redis.WatchError:
            raise SavedLearnersError("the saved learners changed meanwhile (another save or delete): run the command again") from None
    return sorted(blobs)


def saved_learners(client: redis.Redis, keys: Keys) -> dict[str, dict[str, object]]:
    """Every saved name, with when it was saved and its workers."""
    found = client.hgetall(keys.learners_saved_index)
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in sorted(found.items())}


def load_saved(client: redis.Redis, keys: Keys, name: str, secret: bytes) -> list[Learners] | None:
    """The learners saved under ``name`` (one per worker); None when there is no such name.
    A copy that does not load is :class:`CheckpointRejected`, as a live checkpoint would be."""
    blobs = client.hgetall(keys.learners_saved(name))
    if not blobs:
        return None
    return [load(blob, secret) for _worker, blob in sorted(blobs.items()) if isinstance(blob, bytes)]


def delete_saved(client: redis.Redis, keys: Keys, name: str) -> bool:
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.learners_saved(name))
        pipe.hdel(keys.learners_saved_index, name)
        deleted = pipe.execute()
    return bool(deleted[1])
