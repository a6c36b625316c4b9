"""Redis key names: every key the profiles worker writes and the recommender reads is made here.

docs/profiles.md lists the layout.

**Ids are escaped.** Shoppers', products', sessions' and requests' ids may contain ``:``, the
separator of key names; unescaped, shopper ``alice:recent`` would own shopper ``alice``'s
recent list. Every id is written into a key with ``%`` as ``%25`` and ``:`` as ``%3A``
(:func:`escape`), so each key names exactly one thing. Ids without either character — nearly
all of them — keep the key they always had.

**One Redis** (``shards=1``, the default): keys are untagged, ``{prefix}u:alice``.

**Redis Cluster** (``shards=N``, or ``tagged``): the state is split into N groups by hash tag,
``{prefix}{3}u:alice``. Redis Cluster places keys by the text inside the first ``{…}``, so
all keys of one group share a hash slot, and a script may touch any of them at once. A
shopper's keys (profile, history, sessions, served lists, dedupe markers, impressions) live
in the shopper's group; a product's hash in the product's group. The counters many shoppers
add to (co-visitation, trending, interactions) are kept *per group*, each holding what that
group's shoppers did, and the recommender adds the groups up. The partition positions that
fence the worker's writes are per group too, so one batch is one atomic script per group.
Learner checkpoints share one tag, so a checkpoint and its digest are written together.

>>> keys = Keys("s:")
>>> keys.user("alice"), keys.neighbours("p1"), keys.positions("clicks")
('s:u:alice', 's:co:p1', 's:positions:clicks')
>>> keys.recent("alice") == keys.user("alice:recent")
False
>>> keys.user("alice:recent")
's:u:alice%3Arecent'
>>> cluster = Keys("s:", shards=4)
>>> cluster.user("alice"), cluster.home("alice").session("x"), cluster.item("p2")
('s:{3}u:alice', 's:{3}s:x', 's:{1}i:p2')
>>> [k.trending() for k in cluster.groups()]
['s:{0}pop:all', 's:{1}pop:all', 's:{2}pop:all', 's:{3}pop:all']
>>> cluster.learners("w1"), cluster.learners_digest("w1")
('s:{learners}learners:w1', 's:{learners}learners:w1:digest')
"""

import zlib
from dataclasses import dataclass, replace
from typing import Protocol


class _LayoutSettings(Protocol):
    redis_prefix: str
    redis_shards: int
    redis_cluster: bool


def escape(entity: str) -> str:
    """An id as it is written into a key name: ``%`` and ``:`` escaped, nothing else changed.

    >>> escape("u-7"), escape("alice:recent"), escape("50%:off")
    ('u-7', 'alice%3Arecent', '50%25%3Aoff')
    """
    if "%" not in entity and ":" not in entity:
        return entity
    return entity.replace("%", "%25").replace(":", "%3A")


@dataclass(frozen=True)
class Keys:
    """Key names in one group (``group``) of a layout of ``shards`` groups.

    Keys of a shopper or a product name their own group, whichever group they are asked
    from; the rest (sessions, counters, positions, parked clicks) belong to ``group``.
    """

    prefix: str
    shards: int = 1
    tagged: bool = False  # forced on by shards > 1; on with 1 shard for a one-slot Redis Cluster
    group: int = 0

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("shards must be at least 1")
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix must not contain { or }: Redis Cluster reads them as a hash tag")
        if self.shards > 1 and not self.tagged:
            object.__setattr__(self, "tagged", True)

    @classmethod
    def of(cls, settings: _LayoutSettings) -> "Keys":
        """The layout the settings name (``SHELFSIGHT_REDIS_PREFIX``, ``_SHARDS``, ``_CLUSTER``)."""
        return cls(settings.redis_prefix, settings.redis_shards, settings.redis_cluster)

    # -- groups ---------------------------------------------------------------------------

    def group_of(self, entity: str) -> int:
        """The group a shopper's or a product's keys live in (stable across processes and versions)."""
        return zlib.crc32(entity.encode()) % self.shards if self.shards > 1 else 0

    def at(self, group: int) -> "Keys":
        return self if group == self.group else replace(self, group=group)

    def home(self, user: str) -> "Keys":
        """The group that holds ``user``'s keys: where events of that shopper are written."""
        return self.at(self.group_of(user))

    def groups(self) -> list["Keys"]:
        return [self.at(g) for g in range(self.shards)]

    @property
    def routing(self) -> str:
        """A key of this group: names the slot of a script that touches this group's keys."""
        return f"{self._tag()}route"

    def _tag(self, group: int | None = None) -> str:
        if not self.tagged:
            return self.prefix
        return f"{self.prefix}{{{self.group if group is None else group}}}"

    def _of(self, entity: str) -> str:
        return self._tag(self.group_of(entity))

    # -- a shopper's keys (in the shopper's group) ------------------------------------------

    def user(self, u: str) -> str:
        return f"{self._of(u)}u:{escape(u)}"

    def recent(self, u: str) -> str:
        return f"{self._of(u)}u:{escape(u)}:recent"

    def purchased(self, u: str) -> str:
        return f"{self._of(u)}u:{escape(u)}:purchased"

    def dismissed(self, u: str) -> str:
        return f"{self._of(u)}u:{escape(u)}:dismissed"

    def seen_items(self, u: str) -> str:
        """Everything the shopper interacted with, newest scored highest: never recommended again."""
        return f"{self._of(u)}u:{escape(u)}:seen"

    def served(self, u: str) -> str:
        """The shopper's latest served lists (``RecommendationServed`` JSON), for joining with choices."""
        return f"{self._of(u)}u:{escape(u)}:served"

    def impressed(self, u: str, request_id: str) -> str:
        """Products of one of the shopper's served lists the widget reported as seen. Under the
        shopper's own keys: an impression posted in another shopper's name never touches this list."""
        return f"{self._of(u)}u:{escape(u)}:req:{escape(request_id)}:imp"

    def counted(self, u: str, request_id: str) -> str:
        """Set when one of the shopper's served lists was counted for its experiment: once, whichever
        writer keeps it first and however often Kafka redelivers it."""
        return f"{self._of(u)}u:{escape(u)}:req:{escape(request_id)}:counted"

    def credited(self, u: str, request_id: str) -> str:
        """Which (product, kind) of one of the shopper's experiment lists earned credit already: each once,
        however often the shopper clicks it again."""
        return f"{self._of(u)}u:{escape(u)}:req:{escape(request_id)}:credited"

    def drafted(self, u: str, request_id: str) -> str:
        """Choices per team on one of the shopper's interleaved lists: which ranking won it."""
        return f"{self._of(u)}u:{escape(u)}:req:{escape(request_id)}:teams"

    def in_experiment(self, u: str, experiment_id: str) -> str:
        """The shopper's own totals in one experiment (lists, clicks, carts, purchases, revenue):
        the readout's unit is the shopper, whose variant never changes."""
        return f"{self._of(u)}u:{escape(u)}:x:{escape(experiment_id)}"

    # -- a product's hash (in the product's group) ----------------------------------------

    def item(self, i: str) -> str:
        return f"{self._of(i)}i:{escape(i)}"

    # -- this group's keys -----------------------------------------------------------------

    def session(self, s: str) -> str:
        """A session's latest items (in its shopper's group: ask ``home(user)``)."""
        return f"{self._tag()}s:{escape(s)}"

    def seen(self, event_id: str) -> str:
        """Dedupe marker of one event (in its shopper's group)."""
        return f"{self._tag()}seen:{escape(event_id)}"

    def neighbours(self, i: str) -> str:
        """Items seen in the same sessions (co-visitation), as this group's shoppers saw them."""
        return f"{self._tag()}co:{escape(i)}"

    def history(self, i: str) -> str:
        """Items close to it in this group's shoppers' histories, closer ones weighing more."""
        return f"{self._tag()}ch:{escape(i)}"

    @property
    def pair_sets(self) -> str:
        """This group's co-visitation and history sets, each scored by when it last grew (``state.pairs``)."""
        return f"{self._tag()}pairs:sets"

    @property
    def pair_count(self) -> str:
        """How many members this group's pair sets hold in all (``state.pairs``)."""
        return f"{self._tag()}pairs:count"

    @property
    def interactions(self) -> str:
        """Interactions per item (not decayed): how much evidence there is about it."""
        return f"{self._tag()}stats:interactions"

    @property
    def choices(self) -> str:
        """Clicks, carts and purchases per item (not decayed)."""
        return f"{self._tag()}stats:choices"

    @property
    def impressions(self) -> str:
        """Times a widget reported each item seen (not decayed): with ``choices``, its click-through."""
        return f"{self._tag()}stats:impressions"

    def trending(self, category: str | None = None) -> str:
        return f"{self._tag()}pop:all" if category is None else f"{self._tag()}pop:cat:{escape(category)}"

    @property
    def clock(self) -> str:
        """The latest event time this group applied (one member, raised with ``ZADD GT``): the shop's
        clock, which the recommender measures popularity, age and served lists by. Behind the wall
        clock when the worker lags or a store loads old events, and then it is the right one."""
        return f"{self._tag()}clock"

    @property
    def trending_epoch(self) -> str:
        return f"{self._tag()}pop:epoch"

    @property
    def trending_sets(self) -> str:
        """The names of this group's trending sets (written with them): rescaling reads it instead of SCAN."""
        return f"{self._tag()}pop:sets"

    @property
    def trending_sets_complete(self) -> str:
        """Set once the sets written before the registry existed have been registered."""
        return f"{self._tag()}pop:sets:complete"

    def experiment_totals(self, experiment_id: str) -> str:
        """Per variant, this group's shoppers' sums and sums of squares (``state.experiments``)."""
        return f"{self._tag()}x:{escape(experiment_id)}"

    def parked(self, topic: str, partition: int) -> str:
        """Clicks of one partition waiting for their product (member: the event's JSON, score: parked at)."""
        return f"{self._tag()}parked:{escape(topic)}:{partition}"

    def positions(self, topic: str) -> str:
        """Per partition of ``topic``, the next offset this group has applied: written with each batch's effects."""
        return f"{self._tag()}positions:{escape(topic)}"

    # -- shared by the whole layout ------------------------------------------------------------

    @property
    def layout(self) -> str:
        """How many groups the state was written with: a worker started with another count refuses to run."""
        return f"{self.prefix}layout"

    @property
    def catalogue_since(self) -> str:
        """The earliest listing time seen: before the shop is older than "new", nothing is new."""
        return f"{self.prefix}catalogue:since"

    @property
    def catalogue(self) -> str:
        """Which model version's collection is live, and the one before it (``state.catalogue``)."""
        return f"{self.prefix}catalogue:alias"

    @property
    def catalogue_staged(self) -> str:
        """Model versions filled and checked but not switched to, by name (``state.catalogue``): what experiments may serve from."""
        return f"{self.prefix}catalogue:staged"

    @property
    def experiments(self) -> str:
        """Every experiment, by id (``schemas.experiments.Experiment`` JSON): what each ``serve`` assigns by."""
        return f"{self.prefix}experiments"

    @property
    def experiments_retired(self) -> str:
        """Ids of deleted experiments, scored by when: not reused while shoppers' totals may still hold them."""
        return f"{self.prefix}experiments:retired"

    def experiment_readings(self, experiment_id: str) -> str:
        """The smallest always-valid p-value each comparison has reached at any reading so far."""
        return f"{self.prefix}experiments:{escape(experiment_id)}:readings"

    def experiment_history(self, experiment_id: str) -> str:
        """The report's headline at most every 30 s of readings (JSON, newest first): the dashboard's curves."""
        return f"{self.prefix}experiments:{escape(experiment_id)}:history"

    @property
    def updates_channel(self) -> str:
        return f"{self.prefix}profile-updated"

    def _learners_tag(self) -> str:
        return f"{self.prefix}{{learners}}" if self.tagged else self.prefix

    def learners(self, worker: str) -> str:
        return f"{self._learners_tag()}learners:{escape(worker)}"

    @property
    def learners_workers(self) -> str:
        """Which workers checkpoint learners, scored by when they last did: the recommender merges them."""
        return f"{self._learners_tag()}learners:workers"

    def learners_digest(self, worker: str) -> str:
        """A digest of the checkpoint, written with it: readers skip downloading an unchanged one."""
        return f"{self._learners_tag()}learners:{escape(worker)}:digest"

    def learners_staging(self, worker: str) -> str:
        """A checkpoint being written, piece by piece, before it is renamed into place."""
        return f"{self._learners_tag()}learners:{escape(worker)}:staging"

    def learners_saved(self, name: str) -> str:
        """Learners saved under a name (`shelfsight learners save`): every worker's checkpoint as it
        was then (hash: worker → signed blob), for an experiment's variant to rank with."""
        return f"{self._learners_tag()}learners-saved:{escape(name)}"

    @property
    def learners_saved_index(self) -> str:
        """The saved learners' names, each with when it was saved and its workers (hash: name → JSON)."""
        return f"{self._learners_tag()}learners-saved"
