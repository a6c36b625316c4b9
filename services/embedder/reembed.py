"""`shelfsight reembed`: fill a new model version's collection from the source of truth, check
it, and switch the catalogue alias to it; or switch back (``--rollback``).

A switch to any version, new or old, is the same four steps:

1. **Catch up.** An embedder of that version, in a consumer group of its own, follows
   ``products.listed`` from where that group stopped (from the start, for a new version) into
   the version's collection until it has committed everything. Listings, stock, price and
   delistings are applied in the order the shop sent them, so nothing is lost and nothing
   delisted comes back. A crash loses nothing: the group's committed offsets are the resume
   position. Meanwhile the live version's embedders go on as before: every listing is written
   to both (the two groups are the dual write).
2. **Check.** The collection holds every product listed, once; a sample of products finds
   itself first among its neighbours and neighbours of its own category at least as often as
   chance would give.
3. **Publish.** Every live product's ``products.indexed`` event is sent again with the
   version's vectors, so the profiles worker's copy of each product moves to the new space.
4. **Switch.** The alias (``state.catalogue``) names the version live, and the one it replaces
   as ``previous``. `serve` and `shelfsight embedder` follow within
   SHELFSIGHT_CATALOGUE_POLL_S, without a restart; each picks up the version's consumer group
   where step 1 left it.

The collection being replaced is kept, with its group's position, for ``--rollback``.
"""

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import redis
from confluent_kafka import Consumer, TopicPartition

from models.predictor import Predictor
from schemas import ContractError, ProductListed, ProductUpdated, decode, encode
from schemas.topics import PRODUCTS_INDEXED, PRODUCTS_LISTED
from services.bus.config import consumer_config, producer_config
from services.bus.consume import committed_offsets
from services.bus.messages import position
from services.bus.producer import Producer
from services.embedder.indexing import indexed_event
from services.embedder.service import build_embedder
from services.embedder.versions import settings_for
from services.errors import UserError
from services.settings import Settings
from services.vectors.edge import ShardLocked
from services.vectors.factory import open_store
from services.vectors.store import ProductStore, SearchFilters, StoreMismatch
from state.catalogue import AliasChanged, CatalogueAlias, CatalogueVersion, read_alias, room_to_stage, stage, unstage, write_alias
from state.keys import Keys

log = logging.getLogger(__name__)

_SAMPLE = 50  # products whose neighbours are checked
_SELF_FOUND = 0.95  # … of which at least this share must find themselves first
_PUBLISH_BATCH = 256
_SCAN_QUIET_S = 30.0
_OPEN_WAIT_S = 60.0

Progress = Callable[[int, int], None]  # (messages done, messages in all)


@dataclass(frozen=True)
class Listing:
    """What ``products.listed`` says of the catalogue, up to where it was read."""

    listed: frozenset[str]  # every product with a valid listing
    live: frozenset[str]  # … of which not delisted since


@dataclass(frozen=True)
class CheckReport:
    stored: int
    listed: int
    self_found: float
    same_category: float
    chance: float

    @property
    def problems(self) -> list[str]:
        out = []
        if self.stored != self.listed:
            out.append(f"the collection holds {self.stored} products, products.listed lists {self.listed}")
        if self.self_found < _SELF_FOUND:
            out.append(f"only {self.self_found:.0%} of sampled products find themselves first (at least {_SELF_FOUND:.0%} expected)")
        if self.same_category < self.chance:
            out.append(f"neighbours share a category {self.same_category:.0%} of the time, less than chance ({self.chance:.0%})")
        return out


def catch_up(settings: Settings, version: CatalogueVersion, predictor: Predictor, store: ProductStore, progress: Progress) -> None:
    """Run an embedder of ``version`` until its group has committed all of products.listed."""
    run_settings = settings_for(settings, version).model_copy(update={"embedder_metrics_port": 0})
    embedder = build_embedder(run_settings, predictor, store, group=version.group, publish_indexed=False)
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            embedder.run(stop)
        except BaseException as exc:  # reported on the calling thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="reembed", daemon=True)
    thread.start()
    topic = settings.topic(PRODUCTS_LISTED.name)
    group = settings.group(version.group)
    # Up to the end as it is now: in a busy shop the end moves on, and the version's group picks up
    # the rest after the switch, where this run leaves it.
    ends = {p: high for p, (_done, high) in committed_offsets(settings, topic, group).items()}
    try:
        while True:
            done = {p: position for p, (position, _high) in committed_offsets(settings, topic, group).items()}
            progress(sum(min(done.get(p, 0), end) for p, end in ends.items()), sum(ends.values()))
            if failed:
                raise failed[0]
            if all(done.get(p, 0) >= end for p, end in ends.items()):
                return
            if not thread.is_alive():
                raise RuntimeError("the re-embedding worker stopped before it caught up")
            stop.wait(settings.catalogue_poll_s / 5)
    finally:
        stop.set()
        thread.join(120)


def read_listing(settings: Settings, group: str) -> Listing:
    """Fold products.listed up to where consumer group ``group`` has committed: which products
    were listed there, and which of them are still live."""
    topic = settings.topic(PRODUCTS_LISTED.name)
    ends = {p: done for p, (done, _high) in committed_offsets(settings, topic, group).items()}
    consumer = Consumer(consumer_config(settings, settings.group("shelfsight-reembed-scan"), **{"enable.partition.eof": False}))
    listed: set[str] = set()
    delisted: set[str] = set()
    try:
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, -2) for p in remaining])  # -2: from the beginning
        quiet_since = time.monotonic()
        while remaining:
            messages = consumer.consume(1000, timeout=1.0)
            if messages:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > _SCAN_QUIET_S:
                raise RuntimeError(f"products.listed stopped answering before its end was read (partitions {sorted(remaining)})")
            for m in messages:
                if m.error():
                    continue
                _topic, partition, offset = position(m)
                if partition not in remaining or offset >= ends[partition]:
                    continue
                _fold(m.value(), listed, delisted)
                if offset >= ends[partition] - 1:
                    remaining.discard(partition)
    finally:
        consumer.close()
    return Listing(frozenset(listed), frozenset(listed - delisted))


def _fold(value: bytes | None, listed: set[str], delisted: set[str]) -> None:
    try:
        event = decode(PRODUCTS_LISTED.reader, value or b"")
    except ContractError:
        return  # dead-lettered by the embedder: never in any collection
    if isinstance(event, ProductListed):
        listed.add(event.product_id)
        delisted.discard(event.product_id)
    elif isinstance(event, ProductUpdated) and event.delisted:
        delisted.add(event.product_id)


def check(store: ProductStore, listing: Listing, seed: int = 0) -> CheckReport:
    """Counts and a sample of neighbours (see the module's step 2)."""
    sample = random.Random(seed).sample(sorted(listing.live), min(_SAMPLE, len(listing.live)))
    products = store.get(sample, with_vectors=("fused",), fields=("category",))
    categories = [str(p.payload.get("category")) for p in products]
    shares = np.array([categories.count(c) for c in set(categories)], dtype=float) / max(1, len(categories))
    found, same, seen = 0, 0, 0
    for p in products:
        hits = store.search(p.vectors["fused"], limit=6, filters=SearchFilters())
        found += bool(hits) and hits[0].product_id == p.product_id
        for hit in hits[1:]:
            seen += 1
            same += hit.payload.get("category") == p.payload.get("category")
    return CheckReport(
        stored=store.count(),
        listed=len(listing.listed),
        self_found=found / max(1, len(products)),
        same_category=same / max(1, seen),
        chance=float((shares**2).sum()) if len(products) else 0.0,
    )


def publish(settings: Settings, store: ProductStore, product_ids: Iterable[str]) -> int:
    """Send the products.indexed event of each stored product, as the store holds it now."""
    producer = Producer(producer_config(settings))
    topic = settings.topic(PRODUCTS_INDEXED.name)
    ids = sorted(product_ids)
    sent = 0
    for start in range(0, len(ids), _PUBLISH_BATCH):
        now = datetime.now(UTC)
        for stored in store.get(ids[start : start + _PUBLISH_BATCH], with_vectors=True):
            producer.send(topic, encode(indexed_event(stored, now)))
            sent += 1
        if producer.flush(settings.embedder_delivery_timeout_s):
            raise RuntimeError("Kafka did not take the products.indexed events in time; run the command again")
    return sent


def switch(
    client: "redis.Redis", keys: Keys, before: CatalogueAlias | None, base: CatalogueVersion, to: CatalogueVersion
) -> CatalogueAlias:
    """Make ``to`` live, keeping the version it replaces as ``previous``. At the first switch,
    vectors written before versions were recorded are of the base version: the alias says so."""
    current = before.live if before else base
    unversioned = before.unversioned if before else base.name
    alias = CatalogueAlias(live=to, previous=current, revision=(before.revision if before else 0) + 1, unversioned=unversioned)
    write_alias(client, keys, alias)
    return alias


def _unchanged(client: "redis.Redis", keys: Keys, before: CatalogueAlias | None) -> None:
    """AliasChanged if someone switched the catalogue since ``before`` was read."""
    now = read_alias(client, keys)
    if (now.revision if now else 0) != (before.revision if before else 0):
        raise AliasChanged("the catalogue was switched by someone else meanwhile; look with `shelfsight reembed --status` and try again")


def _open_when_free(settings: Settings, predictor: Predictor, say: Callable[[str], None]) -> ProductStore:
    """The version's store; on the embedded shard, once the process that held it (a `serve` that
    just switched away from it) has let go."""
    deadline = time.monotonic() + _OPEN_WAIT_S + 2 * settings.catalogue_poll_s
    told = False
    while True:
        try:
            return open_store(settings, predictor.dims)
        except ShardLocked:
            if time.monotonic() > deadline:
                raise UserError(
                    f"{settings.qdrant_collection}'s embedded shard is still open in another process: "
                    "is a `serve` or `shelfsight embedder` running it? Run this again once it has switched"
                ) from None
            if not told:
                say(f"waiting for the process that holds {settings.qdrant_collection}'s shard to let go of it")
                told = True
            time.sleep(0.5)
        except StoreMismatch as exc:
            raise UserError(str(exc)) from None


def bring_live(
    settings: Settings,
    client: "redis.Redis",
    version: CatalogueVersion,
    predictor: Predictor,
    base: CatalogueVersion,
    progress: Progress,
    say: Callable[[str], None],
) -> CatalogueAlias:
    """The four steps, for ``version``: catch up, check, publish, switch."""
    keys = Keys.of(settings)
    before = read_alias(client, keys)
    store = _open_when_free(settings_for(settings, version), predictor, say)
    try:
        listing = _caught_up_and_checked(settings, version, predictor, store, progress, say, "switched to")
        _unchanged(client, keys, before)  # publishing for a switch that cannot happen would move the copies for nothing
        sent = publish(settings, store, listing.live)
        say(f"published {sent} products.indexed events with {version.name}'s vectors")
    finally:
        store.close()  # before the switch: the embedded shard opens in one process at a time
    alias = switch(client, keys, before, base, version)
    unstage(client, keys, version.name)  # live now: no longer waiting
    return alias


def bring_staged(
    settings: Settings,
    client: "redis.Redis",
    version: CatalogueVersion,
    predictor: Predictor,
    progress: Progress,
    say: Callable[[str], None],
) -> None:
    """Steps 1 and 2 for ``version``, then record it as staged (``state.catalogue.stage``): an
    experiment's variant may be served from it; the live version, the profiles worker's copies and
    the alias stay as they are."""
    try:
        room_to_stage(client, Keys.of(settings), version.name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    store = _open_when_free(settings_for(settings, version), predictor, say)
    try:
        _caught_up_and_checked(settings, version, predictor, store, progress, say, "staged")
    finally:
        store.close()  # `serve` opens it when an experiment names it
    try:
        stage(client, Keys.of(settings), version)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _caught_up_and_checked(
    settings: Settings,
    version: CatalogueVersion,
    predictor: Predictor,
    store: ProductStore,
    progress: Progress,
    say: Callable[[str], None],
    outcome: str,
) -> Listing:
    started = time.monotonic()
    catch_up(settings, version, predictor, store, progress)
    say(f"{version.collection} is up to date with products.listed ({time.monotonic() - started:.1f} s)")
    listing = read_listing(settings, settings.group(version.group))
    report = check(store, listing)
    say(
        f"checked: {report.stored} products stored of {report.listed} listed; {report.self_found:.0%} of a sample find "
        f"themselves first; neighbours share a category {report.same_category:.0%} of the time (chance {report.chance:.0%})"
    )
    if report.problems:
        raise UserError(f"{version.name} was not {outcome}: {'; '.join(report.problems)}")
    return listing
