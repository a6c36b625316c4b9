"""The River learners a profiles worker trains: a factorisation of shopper × item, the item
co-occurrence counts and the ranking.

- ``mf``: BiasedMF learns a bounded preference per event (purchases high, dismissals low), and
  one random known item as a 0 next to each positive, so it learns what a shopper picks
  *rather than* other things, not only that they pick things. It remembers at most
  ``max_shoppers`` shoppers and ``max_items`` items, forgetting the least recently active
  first, so its memory and its checkpoint stop growing (River's own model never forgets).
- ``co_occurrence``: which items shoppers' whole histories hold together (the Gram matrix of
  ``models.ranking.item_model``); the recommender fits the item-to-item model (EASE) from it.
  It counts at most ``max_model_items`` items and remembers the latest 200 items of the 20,000
  most recently active shoppers (and none of a shopper the learners forgot).
- ``ranker``: the pairwise ranker (``models.ranking.PairwiseRanker``) learns from served lists
  joined with the choices that followed them (``services.profiles.choices``). It is created
  from the first served list's feature names and started afresh when those names change.

How they are checkpointed to Redis (signed, versioned) is part of the Redis contract:
``state.checkpoints``.
"""

import copy
import math
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from river import optim, reco

from models.ranking.item_model import CoOccurrence
from models.ranking.pairwise import PairwiseRanker

_MF_TABLES = ("u_biases", "i_biases", "u_latents", "i_latents")
CHOICE_KINDS = frozenset({"click", "add_to_cart", "purchase"})  # what a shopper picks out of a list


class Learners:
    """
    >>> learners = Learners(max_shoppers=2, max_items=3)
    >>> for user, item in [("ann", "a"), ("bob", "b"), ("cyd", "c"), ("ann", "d")]:
    ...     learners.learn_event(user, item, "click", 2.0)
    >>> sorted(learners.mf.u_latents), sorted(learners.user_events)  # bob was the least recent
    (['ann', 'cyd'], ['ann', 'cyd'])
    >>> sorted(learners.mf.i_latents), sorted(learners.known_items())  # a, the least recent item
    (['b', 'c', 'd'], ['b', 'c', 'd'])
    """

    def __init__(
        self,
        n_factors: int = 16,
        seed: int = 0,
        ranker_learning_rate: float = 0.02,
        ranker_warmup: int = 500,
        max_shoppers: int = 100_000,
        max_items: int = 100_000,
        max_model_items: int = 2_000,
    ) -> None:
        self.n_factors, self.seed = n_factors, seed
        self.ranker_learning_rate, self.ranker_warmup = ranker_learning_rate, ranker_warmup
        self.max_shoppers, self.max_items = max_shoppers, max_items
        self.mf = reco.BiasedMF(
            n_factors=n_factors, bias_optimizer=optim.SGD(0.02), latent_optimizer=optim.SGD(0.02), l2_latent=0.01, seed=seed
        )
        self.ranker: PairwiseRanker | None = None
        self.co_occurrence = CoOccurrence(max_items=max_model_items)
        self.events = 0
        self._rng = random.Random(seed)
        # Least recently active first: who is forgotten when a bound is reached.
        self._users: OrderedDict[str, None] = OrderedDict()
        self._items: list[str] = []  # for sampling a negative in O(1) …
        self._item_slot: OrderedDict[str, int] = OrderedDict()  # … and each item's place in it
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
        if weight > 0:
            self.co_occurrence.learn_one(user, item)
        if weight > 0 and self._items:
            other = self._items[self._rng.randrange(len(self._items))]
            if other != item:
                self.mf.learn_one(user, other, 0.0)
        self._touch_user(user)
        self._touch_item(item)

    def __getstate__(self) -> dict[str, object]:
        # River keeps one small array per shopper and item; pickled one by one, 100,000 shoppers
        # took 1.6 s and 39 MB. Packed into one matrix per table they pickle in a fraction.
        state = self.__dict__.copy()
        mf = copy.copy(self.mf)
        packed = {}
        for name in _MF_TABLES:
            table = getattr(self.mf, name)
            keys = list(table)
            packed[name] = (keys, np.array([table[k] for k in keys], dtype=np.float64))
            setattr(mf, name, type(table)(table.default_factory))
        state["mf"], state["_mf_tables"] = mf, packed
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        packed = state.pop("_mf_tables")
        self.__dict__.update(state)
        for name, (keys, values) in packed.items():
            rows = list(values) if values.ndim == 2 else values.tolist()
            getattr(self.mf, name).update(zip(keys, rows, strict=True))

    def bound(self, max_shoppers: int, max_items: int, max_model_items: int | None = None) -> None:
        """New bounds (e.g. a restored checkpoint under changed settings); forgets at once what is over them."""
        self.max_shoppers, self.max_items = max_shoppers, max_items
        if max_model_items is not None:
            self.co_occurrence.resize(max_model_items)
        if self._users:
            self._touch_user(next(reversed(self._users)))
        if self._item_slot:
            self._touch_item(next(reversed(self._item_slot)))

    def known_items(self) -> list[str]:
        return list(self._item_slot)

    def _touch_user(self, user: str) -> None:
        self._users[user] = None
        self._users.move_to_end(user)
        while len(self._users) > self.max_shoppers:
            gone, _ = self._users.popitem(last=False)
            for table in (self.mf.u_biases, self.mf.u_latents, self.user_events):
                table.pop(gone, None)
            self.co_occurrence.forget_user(gone)

    def _touch_item(self, item: str) -> None:
        if item in self._item_slot:
            self._item_slot.move_to_end(item)
        else:
            self._item_slot[item] = len(self._items)
            self._items.append(item)
        while len(self._item_slot) > self.max_items:
            gone, slot = self._item_slot.popitem(last=False)
            last = self._items.pop()
            if last != gone:  # the last item takes the forgotten one's place
                self._items[slot] = last
                self._item_slot[last] = slot
            for table in (self.mf.i_biases, self.mf.i_latents):
                table.pop(gone, None)

    def learn_choice(self, names: Sequence[str], chosen: Mapping[str, float], skipped: Sequence[Mapping[str, float]]) -> None:
        """A shopper picked ``chosen`` over ``skipped`` in a served list ranked by features ``names``."""
        if self.ranker is None or self.ranker.features != tuple(names):
            self.ranker = PairwiseRanker(names, learning_rate=self.ranker_learning_rate, warmup=self.ranker_warmup)
        self.ranker.learn_one(chosen, skipped)

    def affinity(self, user: str, item: str) -> float:
        return float(self.mf.predict_one(user, item))
