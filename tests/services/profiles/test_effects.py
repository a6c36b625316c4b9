"""What one write's events change, computed with no Redis: the effects are a pure function of
the events and the state read before them (snapshot.py), so each rule is checked here on
hand-made state (test_handler.py and test_parking.py check them again through the driver,
against a real redis-server)."""

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from schemas import ClickEvent, decode
from services.profiles.choices import ServedList
from services.profiles.effects import ChoiceLesson, Chunk, Effects, EventLesson, effects
from services.profiles.intake import take_in
from services.profiles.messages import RawMessage
from services.profiles.parking import ParkedClicks, read_parked
from services.profiles.profile import ClickParams
from services.profiles.snapshot import Snapshot, chosen_from
from services.profiles.state import Loaded
from services.profiles.writes import WriteBatch
from state.keys import Keys
from state.values import Item, Profile, decode_profile

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEYS = Keys("t:")
PARAMS = ClickParams(half_life_s=3600.0, recent_items=5, neighbours=3, trending=4, session_items=4, park_s=60.0, park_max=2)
WRITTEN = NOW.timestamp() + 1000  # when the write is computed (the snapshot's clock)
ITEMS = {f"p{i}": Item(np.eye(4, dtype=np.float32)[i % 4], f"cat{i % 2}", 10.0 + i, True) for i in range(8)}


def _message(
    offset: int,
    product: str = "p1",
    kind: str = "click",
    user: str = "u1",
    session: str = "s1",
    request_id: str | None = None,
    event_id: str | None = None,
    topic: str | None = "clicks",
) -> RawMessage:
    body: dict[str, Any] = {
        "event_id": event_id or f"e{offset}",
        "user_id": user,
        "product_id": product,
        "kind": kind,
        "occurred_at": (NOW + timedelta(seconds=offset)).isoformat(),
        "session_id": session,
    }
    if request_id is not None:
        body["context"] = {"widget": "recs", "position": 1, "request_id": request_id}
    return RawMessage(user.encode(), json.dumps(body).encode(), 0, offset, topic)


def _events(*messages: RawMessage) -> list[tuple[RawMessage, ClickEvent]]:
    return [(m, decode(ClickEvent, m.value)) for m in messages]


def _snapshot(events: list[tuple[RawMessage, ClickEvent]], items: dict[str, Item | None] | None = None, **state: Any) -> Snapshot:
    """The state ``ProfileState.load`` would return for ``events``: nothing seen before, every item known."""
    known = ITEMS if items is None else items
    loaded = Loaded(
        seen=state.get("seen", {}),
        items={e.product_id: known.get(e.product_id) for _, e in events},
        profiles=state.get("profiles", {}),
        sessions=state.get("sessions", {}),
        recent=state.get("recent", {}),
    )
    return Snapshot(loaded, state.get("served", {}), state.get("impressed", {}), epoch=NOW.timestamp(), now=state.get("now", WRITTEN))


def _run(fresh: list[tuple[RawMessage, ClickEvent]], snapshot: Snapshot, parked: ParkedClicks | None = None, seed: int = 0) -> Effects:
    return effects(Chunk(parked or ParkedClicks(), fresh, []), snapshot, KEYS, PARAMS, random.Random(seed))


def _commands(writes: WriteBatch) -> list[tuple[Any, ...]]:
    """The batch's commands, as they will run (guards and required members left out)."""
    args = writes.args()
    at = 1 + 4 * args[0]
    at += 1 + 2 * args[at]
    commands = []
    while at < len(args):
        count = args[at]
        commands.append(tuple(args[at + 1 : at + 1 + count]))
        at += count + 1
    return commands


def _named(commands: list[tuple[Any, ...]], name: str) -> list[tuple[Any, ...]]:
    return [c for c in commands if c[0] == name]


def _pairs(commands: list[tuple[Any, ...]]) -> dict[str, dict[str, float]]:
    """Each pair set the write grows (one ``_pairs`` per set): its members and their summed amounts."""
    grown: dict[str, dict[str, float]] = {}
    for _, key, ledger, _stamp, cap, *flat in _named(commands, "_pairs"):
        assert key not in grown and ledger == KEYS.pair_sets and cap == PARAMS.neighbours
        grown[key] = {member: float(amount) for member, amount in zip(flat[::2], flat[1::2], strict=True)}
    return grown


def test_a_click_moves_profile_counters_trending_sessions_and_announces_it():
    events = _events(_message(0, "p1"), _message(1, "p2", kind="purchase"))
    out = _run(events, _snapshot(events))
    commands = _commands(out.writes)
    assert (out.result.applied, out.result.duplicates, out.result.users, out.result.refused) == (2, 0, {"u1"}, [])
    assert out.learn == [EventLesson("u1", "p1", "click", 2.0), EventLesson("u1", "p2", "purchase", 8.0)]
    assert commands[0] == ("SET", KEYS.seen("e0"), 1, "EX", PARAMS.dedupe_ttl_s)
    assert _named(commands, "LPUSH")[:2] == [("LPUSH", KEYS.recent("u1"), "p1"), ("LPUSH", KEYS.session("s1"), "p1")]
    assert _pairs(commands)[KEYS.neighbours("p2")] == {"p1": 1.0} and _pairs(commands)[KEYS.neighbours("p1")] == {"p2": 1.0}
    assert ("ZADD", KEYS.purchased("u1"), repr(NOW.timestamp() + 1), "p2") in commands
    assert [c[1] for c in _named(commands, "ZINCRBY") if c[1].startswith("t:pop:")] == [
        KEYS.trending(),
        KEYS.trending("cat1"),
        KEYS.trending(),
        KEYS.trending("cat0"),
    ]
    # once per key and write: the profile, the trims, the shop's clock, then the announcement
    assert len(_named(commands, "HSET")) == 1 and _named(commands, "HSET")[0][1] == KEYS.user("u1")
    assert ("LTRIM", KEYS.recent("u1"), 0, PARAMS.recent_items - 1) in commands
    assert commands[-2:] == [("ZADD", KEYS.clock, "GT", repr(NOW.timestamp() + 1), "latest"), ("PUBLISH", KEYS.updates_channel, "u1")]


def test_events_seen_before_or_twice_in_the_write_are_duplicates_and_write_nothing():
    events = _events(_message(0, "p1", event_id="old"), _message(1, "p2", event_id="x"), _message(2, "p3", event_id="x"))
    out = _run(events, _snapshot(events, seen={"old": True}))
    assert (out.result.applied, out.result.duplicates) == (1, 2)
    assert [c for c in _commands(out.writes) if c[0] == "SET"] == [("SET", KEYS.seen("x"), 1, "EX", PARAMS.dedupe_ttl_s)]
    out = _run(events[:1], _snapshot(events[:1], seen={"old": True}))
    assert not out.writes and out.learn == []


def test_an_impression_marks_its_list_under_the_shoppers_own_keys_and_nothing_else():
    events = _events(_message(0, "p1", kind="impression", user="u2", request_id="req-1"))
    out = _run(events, _snapshot(events))
    commands = _commands(out.writes)
    assert ("SADD", KEYS.impressed("u2", "req-1"), "p1") in commands
    assert ("EXPIRE", KEYS.impressed("u2", "req-1"), PARAMS.served_ttl_s) in commands
    assert not _named(commands, "HSET") and not _named(commands, "LPUSH") and not _named(commands, "PUBLISH")
    assert commands[-1] == ("ZADD", KEYS.clock, "GT", repr(NOW.timestamp()), "latest")
    assert out.result.applied == 1 and out.result.users == set()


def test_a_dismissal_pushes_away_but_counts_for_no_trending_and_no_pairs():
    events = _events(_message(0, "p1", kind="dismiss"))
    out = _run(events, _snapshot(events, recent={"u1": ["p2"]}, sessions={"s1": ["p2"]}))
    commands = _commands(out.writes)
    assert ("ZADD", KEYS.dismissed("u1"), repr(NOW.timestamp()), "p1") in commands
    assert not [c for c in commands if c[0] == "ZINCRBY" and c[1] != KEYS.interactions] and not _pairs(commands)
    assert _named(commands, "HSET"), "the profile moves, away from p1"


def test_history_pairs_weigh_nearer_items_more_and_sessions_pair_within_the_window():
    events = _events(_message(0, "p3", session="new"))
    out = _run(events, _snapshot(events, recent={"u1": ["p2", "p1"]}, sessions={"new": []}))
    commands = _commands(out.writes)
    assert (
        "_pairs",
        KEYS.history("p3"),
        KEYS.pair_sets,
        repr(WRITTEN),
        PARAMS.neighbours,
        "p2",
        "1.0",
        "p1",
        repr(PARAMS.history_decay),
    ) in commands
    assert _pairs(commands)[KEYS.history("p1")] == {"p3": PARAMS.history_decay}
    assert not [key for key in _pairs(commands) if key.startswith("t:co:")], "a fresh session pairs nothing"
    # the bound comes once, after every set, stale after the profile TTL
    assert _named(commands, "_pairs_bound") == [
        ("_pairs_bound", KEYS.pair_count, KEYS.pair_sets, PARAMS.pair_members, repr(WRITTEN - PARAMS.profile_ttl_s))
    ]


def test_a_pair_seen_twice_in_a_write_grows_its_set_once_by_the_sum():
    events = _events(_message(0, "p1"), _message(1, "p2"), _message(2, "p1", session="s2"), _message(3, "p2", session="s2"))
    commands = _commands(_run(events, _snapshot(events)).writes)
    grown = _pairs(commands)
    assert grown[KEYS.neighbours("p2")] == {"p1": 2.0} and grown[KEYS.neighbours("p1")] == {"p2": 2.0}
    # p1, p2, p1, p2: the last three each pair with the other, the newest before them, both ways
    assert grown[KEYS.history("p1")] == {"p2": 3.0} and grown[KEYS.history("p2")] == {"p1": 3.0}


def test_a_choice_is_joined_with_its_list_and_skips_only_shown_items_reported_as_seen():
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    served = ServedList("req-1", NOW.timestamp(), 2, ["p1", "p2", "p3", "p4"], ("a", "b"), rows)
    events = _events(_message(1, "p2", kind="impression", request_id="req-1"), _message(2, "p3", request_id="req-1"))
    snapshot = _snapshot(events, served={"u1": [served]})
    assert chosen_from(events, snapshot.served, PARAMS) == {("u1", "req-1")}, "what the driver reads impressions for"
    out = _run(events, snapshot)
    assert out.result.choices_learned == 1
    lesson = out.learn[-1]
    assert isinstance(lesson, ChoiceLesson) and lesson.chosen == {"a": 4.0, "b": 5.0}
    # p2 was shown and reported seen in this very write; p1 was shown but never reported; p4 ranked lower
    assert sorted(row["a"] for row in lesson.skipped) == [2.0, 6.0]


def test_impressions_read_before_the_write_count_too():
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    served = ServedList("req-1", NOW.timestamp(), 2, ["p1", "p2", "p3", "p4"], ("a", "b"), rows)
    events = _events(_message(2, "p3", kind="purchase", request_id="req-1"))
    out = _run(events, _snapshot(events, served={"u1": [served]}, impressed={("u1", "req-1"): {"p1"}}))
    lesson = out.learn[-1]
    assert isinstance(lesson, ChoiceLesson) and sorted(row["a"] for row in lesson.skipped) == [0.0, 6.0]


def test_a_click_on_an_unknown_product_is_parked_up_to_the_bound():
    events = _events(*(_message(n, f"x{n}") for n in range(3)))
    snapshot = _snapshot(events, now=123.5)
    out = _run(events, snapshot)
    parked_key = KEYS.parked("clicks", 0)
    assert out.result.parked == 2 and out.result.applied == 0
    assert _commands(out.writes) == [("ZADD", parked_key, "123.5", m.value) for m, _ in events[:2]]
    assert out.result.refused == [(events[2][0], "unknown product x2: 2 clicks already wait for their products")]


def test_without_a_place_in_kafka_an_unknown_product_is_refused_at_once():
    events = _events(_message(0, "x9", topic=None))
    out = _run(events, _snapshot(events))
    assert out.result.refused == [(events[0][0], "unknown product x9: no products.indexed event for it yet")]
    assert not out.writes


def _parked(*rows: tuple[bytes, float], held: int | None = None) -> ParkedClicks:
    return read_parked({("clicks", 0): (len(rows) if held is None else held, list(rows))}, KEYS)


def test_a_parked_click_whose_product_arrived_is_taken_out_by_the_write_that_applies_it():
    waiting = _message(0, "p1")
    parked = _parked((waiting.value, NOW.timestamp()))
    out = _run([], _snapshot(parked.events), parked)
    assert (out.result.applied, out.result.unparked) == (1, 1)
    assert out.unparked_from == {("clicks", 0)}
    assert out.writes.args()[1:4] == [1, KEYS.parked("clicks", 0), waiting.value], "refused if another worker took it first"
    assert _commands(out.writes)[0] == ("ZREM", KEYS.parked("clicks", 0), waiting.value)


def test_a_parked_click_that_waited_too_long_is_dead_lettered_under_its_shoppers_key():
    waiting = _message(0, "x1")
    parked = _parked((waiting.value, 100.0))
    kept = _run([], _snapshot(parked.events, items={}, now=160.0), parked)
    assert not kept.writes and kept.result.refused == [], "still within its wait"
    out = _run([], _snapshot(parked.events, items={}, now=160.5), parked)
    ((message, reason),) = out.result.refused
    assert message.key == b"u1" and reason == "unknown product x1: not indexed within 60 s"
    assert _commands(out.writes) == [("ZREM", KEYS.parked("clicks", 0), waiting.value)]


def test_an_unreadable_parked_click_is_taken_out_before_anything_else():
    parked = _parked((b"{broken", 1.0), (_message(0, "p1").value, 2.0))
    out = _run([], _snapshot(parked.events), parked)
    assert _commands(out.writes)[:2] == [
        ("ZREM", KEYS.parked("clicks", 0), b"{broken"),
        ("ZREM", KEYS.parked("clicks", 0), _message(0, "p1").value),
    ]
    assert [m.value for m, _ in out.result.refused] == [b"{broken"] and out.result.unparked == 1


def test_messages_refused_on_sight_come_before_the_writes_refusals():
    messages = [RawMessage(b"u1", b"{nope", 0, 0, "clicks"), _message(1, "x1", topic=None), _message(2, "p1", topic=None)]
    fresh, invalid = take_in(messages, KEYS, {}, now=NOW.timestamp() - 1000)
    assert [m.offset for m, _ in fresh] == [] and len(invalid) == 3
    fresh, invalid = take_in(messages, KEYS, {}, now=NOW.timestamp())
    out = effects(Chunk(ParkedClicks(), fresh, invalid), _snapshot(fresh, items={}), KEYS, PARAMS, random.Random(0))
    assert [m.offset for m, _ in out.result.refused] == [0, 1, 2]
    assert "Invalid JSON" in out.result.refused[0][1] and "no products.indexed" in out.result.refused[1][1]


def test_the_same_state_gives_the_same_effects_and_is_left_as_it_was():
    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    served = ServedList("req-1", NOW.timestamp(), 2, [f"p{i}" for i in range(6)], ("a", "b"), rows)
    events = _events(
        *(
            _message(n, f"p{n % 6}", kind=("click", "view", "add_to_cart")[n % 3], request_id="req-1", session=f"s{n // 4}")
            for n in range(12)
        )
    )
    profile = Profile.empty(4)
    state = {"served": {"u1": [served]}, "recent": {"u1": ["p5", "p4"]}, "sessions": {"s0": ["p3"]}, "profiles": {"u1": profile}}
    snapshot = _snapshot(events, **state)
    first, second = _run(events, snapshot, seed=7), _run(events, snapshot, seed=7)
    assert first.writes.args() == second.writes.args() and first.learn == second.learn and first.result == second.result
    assert snapshot.loaded.recent == {"u1": ["p5", "p4"]} and snapshot.loaded.sessions == {"s0": ["p3"]}
    assert snapshot.loaded.profiles["u1"] is profile and profile.counts == {}


@pytest.mark.parametrize("kind", ["view", "click", "add_to_cart", "purchase", "dismiss", "impression"])
def test_every_applied_event_teaches_the_learners_once_with_its_weight(kind):
    events = _events(_message(0, "p1", kind=kind))
    out = _run(events, _snapshot(events))
    assert out.learn == [EventLesson("u1", "p1", kind, PARAMS.weights[kind])]


@pytest.mark.parametrize("item_version", ["m-1", "m-2"])
def test_a_taste_moves_to_the_space_of_the_product_clicked_when_the_model_changed(item_version):
    # the taste leans to dimension 2, in model m-1's space; the click is on p1 (dimension 1)
    before = Profile(np.array([0, 0, 5, 0], dtype=np.float32), {"cat0": 3.0}, NOW.timestamp(), {"click": 3}, model_version="m-1")
    events = _events(_message(0, "p1"))
    items = {"p1": replace(ITEMS["p1"], model_version=item_version)}
    (hset,) = _named(_commands(_run(events, _snapshot(events, items, profiles={"u1": before})).writes), "HSET")
    fields = dict(zip(hset[2::2], hset[3::2], strict=True))
    after = decode_profile({k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()})
    assert after is not None
    assert after.model_version == item_version
    assert after.vector[1] > 0
    # the same model: the taste adds up; another: it starts afresh, in the new space
    assert bool(after.vector[2] > 0) == (item_version == "m-1")
    assert after.categories["cat0"] > 0 and after.categories["cat1"] > 0 and after.counts["click"] == 4, "what is not a vector stays"
