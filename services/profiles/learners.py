"""The profiles worker's River learners: a factorisation of shopper × item, and the ranking.

- ``mf``: BiasedMF learns a bounded preference per event (purchases high, dismissals low), and
  one random known item as a 0 next to each positive, so it learns what a shopper picks
  *rather than* other things, not only that they pick things.
- ``ranker``: the pairwise ranker (``models.ranking.PairwiseRanker``) learns from served lists
  joined with the choices that followed them (``services.profiles.choices``). It is created
  from the first served list's feature names and started afresh when those names change.

A checkpoint is pickled — River models are plain Python objects — but it is signed with
HMAC-SHA256 and its signature is checked before anything is unpickled, so whoever can
write to Redis cannot make a worker run code. The format is versioned.
"""

import hashlib
import hmac
import math
import pickle
import random
import struct
from collections.abc import Mapping, Sequence

from river import optim, reco

from models.ranking import PairwiseRanker

FORMAT = b"SSLRN"
VERSION = 2  # 2: the pairwise ranker replaced the pointwise click model
CHOICE_KINDS = frozenset({"click", "add_to_cart", "purchase"})  # what a shopper picks out of a list


class CheckpointRejected(ValueError):
    pass


class Learners:
    def __init__(self, n_factors: int = 16, seed: int = 0, ranker_learning_rate: float = 0.02, ranker_warmup: int = 500) -> None:
        self.n_factors, self.seed = n_factors, seed
        self.ranker_learning_rate, self.ranker_warmup = ranker_learning_rate, ranker_warmup
        self.mf = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.02), latent_optimizer=optim.SGD(0.02), l2_latent=0.01, seed=seed)
        self.ranker: PairwiseRanker | None = None
        self.events = 0
        self._rng = random.Random(seed)
        self._items: list[str] = []
        self._known: set[str] = set()
        # Per shopper, the events learned here: with several workers, whose copy of a shopper
        # the recommender trusts (the one that has seen most of them).
        self.user_events: dict[str, int] = {}

    def learn_event(self, user: str, item: str, kind: str, weight: float) -> None:
        """One interaction. An impression says nothing of taste: it only marks what was seen."""
        self.events += 1
        if kind == "impression":
            return
        self.user_events[user] = self.user_events.get(user, 0) + 1
        self.mf.learn_one(user, item, math.tanh(weight / 4.0))
        if weight > 0 and self._items:
            other = self._items[self._rng.randrange(len(self._items))]
            if other != item:
                self.mf.learn_one(user, other, 0.0)
        if item not in self._known:
            self._known.add(item)
            self._items.append(item)

    def learn_choice(self, names: Sequence[str], chosen: Mapping[str, float], skipped: Sequence[Mapping[str, float]]) -> None:
        """A shopper picked ``chosen`` over ``skipped`` in a served list ranked by features ``names``."""
        if self.ranker is None or self.ranker.features != tuple(names):
            self.ranker = PairwiseRanker(names, learning_rate=self.ranker_learning_rate, warmup=self.ranker_warmup)
        self.ranker.learn_one(chosen, skipped)

    def affinity(self, user: str, item: str) -> float:
        return float(self.mf.predict_one(user, item))


def dump(learners: Learners, secret: bytes) -> bytes:
    body = pickle.dumps(learners, protocol=pickle.HIGHEST_PROTOCOL)
    header = FORMAT + struct.pack(">H", VERSION)
    signature = hmac.new(secret, header + body, hashlib.sha256).digest()
    return header + signature + body


def load(blob: bytes, secret: bytes) -> Learners:
    """The learners in ``blob``; :class:`CheckpointRejected` before unpickling anything untrusted."""
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
    learners = pickle.loads(body)  # noqa: S301 - authenticated above
    if not isinstance(learners, Learners):
        raise CheckpointRejected("checkpoint holds something else")
    return learners
