"""River learners updated per click: matrix factorisation and a click model, checkpointed safely.

A checkpoint is pickled — River models are plain Python objects — but it is signed with
HMAC-SHA256 and its signature is checked before anything is unpickled, so whoever can
write to Redis cannot make a worker run code. The format is versioned.
"""

import hashlib
import hmac
import math
import pickle
import struct

from river import linear_model, optim, preprocessing, reco

FORMAT = b"SSLRN"
VERSION = 1
POSITIVE = {"click", "add_to_cart", "purchase"}


class CheckpointRejected(ValueError):
    pass


class Learners:
    """``mf``: shopper × item affinity (BiasedMF); ``click``: P(click | features) (LogisticRegression)."""

    def __init__(self, n_factors: int = 16, seed: int = 0) -> None:
        self.n_factors, self.seed = n_factors, seed
        self.mf = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.02), latent_optimizer=optim.SGD(0.02), l2_latent=0.01, seed=seed)
        self.click = preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
        self.events = 0

    def learn_one(self, user: str, item: str, kind: str, weight: float, features: dict[str, float]) -> None:
        # MF learns a bounded preference: purchases high, dismissals low. An impression says
        # nothing of taste, only that the item was shown: it is the click model's negative.
        if kind != "impression":
            self.mf.learn_one(user, item, math.tanh(weight / 4.0))
        self.click.learn_one(features, kind in POSITIVE)
        self.events += 1

    def click_probability(self, features: dict[str, float]) -> float:
        return float(self.click.predict_proba_one(features).get(True, 0.0))

    def affinity(self, user: str, item: str) -> float:
        return float(self.mf.predict_one(user, item))


FEATURE_NAMES = ("similarity", "category_share", "log_popularity", "log_price", "log_recency")


def features(similarity: float, category_share: float, popularity: float, price: float, seconds_since_last: float) -> dict[str, float]:
    """The click model's inputs; the recommender builds them the same way."""
    return {
        "similarity": similarity,
        "category_share": category_share,
        "log_popularity": math.log1p(max(0.0, popularity)),
        "log_price": math.log1p(max(0.0, price)),
        "log_recency": math.log1p(max(0.0, seconds_since_last)),
    }


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
