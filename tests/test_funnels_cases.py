"""The funnel cases issue 14 names, each a small story checked against the reference computation
(tests/test_funnels.py) and against the fact the story is about."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from test_funnels import check, event, store

UTC = timezone.utc
T0 = datetime(2025, 8, 4, 10, 0, tzinfo=UTC)
DAY = date(2025, 8, 4)
ABC = ["event_type:a", "event_type:b", "event_type:c"]


def users(rows: list[dict], step: int, group: str = "value") -> int:
    return next(r["users"] for r in rows if r["step"] == step and r["group"] == group)


def test_repeated_entries_count_a_user_once_and_repeats_do_not_advance(client, engine):
    sent = [event("u1", T0, "a"), event("u1", T0 + timedelta(minutes=5), "a"),
            event("u1", T0 + timedelta(minutes=9), "a"), event("u1", T0 + timedelta(minutes=10), "b"),
            event("u1", T0 + timedelta(minutes=11), "b")]
    store(engine, sent)
    for order in ("ordered", "strict", "any"):
        rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC, order=order)
        assert [users(rows, k) for k in (1, 2, 3)] == [1, 1, 0]


def test_a_later_entry_completes_where_an_earlier_did_not(client, engine):
    sent = [event("u1", T0, "a"), event("u1", T0 + timedelta(days=2), "a"),
            event("u1", T0 + timedelta(days=2, hours=1), "b")]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY + timedelta(days=3), tz=None, steps=ABC[:2])
    assert users(rows, 2) == 1
    assert rows[1]["median_seconds"] == 3600.0  # the times of the attempt that reached step 2


def test_steps_at_the_same_timestamp_and_one_event_matching_two_steps(client, engine):
    steps = ["event_type:a", "properties.plan=pro", "event_type:c"]
    sent = [event("u1", T0, "a", plan="pro"),  # matches steps 1 and 2: completes only one
            event("u2", T0, "a", plan="pro"), event("u2", T0, "b", plan="pro"), event("u2", T0, "c")]
    store(engine, sent)
    for order in ("ordered", "strict", "any"):
        rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=steps, order=order)
        assert [users(rows, k) for k in (1, 2, 3)] == [2, 1, 1]
        assert rows[2]["median_seconds"] == 0.0


def test_same_instant_events_are_assigned_so_the_most_steps_complete(client, engine):
    # The event matching steps 2 and 3 must go to step 3, the plain b to step 2.
    steps = ["event_type:a", "event_type:b", "properties.plan=pro"]
    sent = [event("u1", T0, "a"), event("u1", T0 + timedelta(minutes=1), "b", plan="pro"),
            event("u1", T0 + timedelta(minutes=1), "b")]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=steps)
    assert users(rows, 3) == 1


def test_exclusion_voids_only_inside_the_window_and_between_its_steps(client, engine):
    hour = timedelta(hours=1)
    sent = [event("inside", T0, "a"), event("inside", T0 + hour / 2, "x"),
            event("after-window", T0, "a"), event("after-window", T0 + 2 * hour, "x"),
            event("after-step-2", T0, "a"), event("after-step-2", T0 + hour / 4, "b"),
            event("after-step-2", T0 + hour / 2, "x"),
            # voided first attempt, a later one still counts
            event("second-try", T0, "a"), event("second-try", T0 + hour / 4, "x"),
            event("second-try", T0 + 3 * hour, "a"), event("second-try", T0 + 3.5 * hour, "b")]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC[:2], window=3600,
                 exclude=["event_type:x@1-2"])
    assert users(rows, 1) == 3 and users(rows, 2) == 2  # "inside" is gone; "second-try" converts


def test_windows_are_exact_seconds_across_a_dst_change(client, engine):
    kyiv = ZoneInfo("Europe/Kyiv")
    entry = datetime(2025, 10, 25, 12, 0, tzinfo=kyiv)  # the local day before the clocks go back
    sent = [event("early", entry, "a"), event("early", datetime(2025, 10, 26, 10, 30, tzinfo=kyiv), "b"),
            event("late", entry, "a"), event("late", datetime(2025, 10, 26, 11, 30, tzinfo=kyiv), "b")]
    store(engine, sent)
    rows = check(client, sent, first=date(2025, 10, 25), last=date(2025, 10, 25), tz="Europe/Kyiv",
                 steps=ABC[:2], window=86400)
    # 23.5 h elapsed converts; 24.5 h (although 11:30 is "before noon next day") does not.
    assert users(rows, 2) == 1 and rows[1]["median_seconds"] == 23.5 * 3600


def test_later_steps_may_fall_after_to_but_entries_may_not(client, engine):
    sent = [event("u1", T0 + timedelta(hours=13), "a"), event("u1", T0 + timedelta(hours=20), "b"),
            event("u2", T0 + timedelta(days=1), "a"), event("u2", T0 + timedelta(days=1, hours=1), "b")]
    store(engine, sent)
    for tz in ("UTC", "Asia/Kolkata", "America/New_York"):
        check(client, sent, first=DAY, last=DAY, tz=tz, steps=ABC[:2])
    rows = check(client, sent, first=DAY, last=DAY, tz="UTC", steps=ABC[:2])
    assert users(rows, 1) == 1 and users(rows, 2) == 1  # u1 crossed midnight; u2 entered after `to`


def test_late_events_change_the_next_answer(client, engine):
    sent = [event("u1", T0 + timedelta(hours=5), "b"), event("u2", T0, "a")]
    store(engine, sent)
    before = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC[:2])
    late = [event("u1", T0 + timedelta(hours=1), "a"), event("u2", T0 + timedelta(minutes=1), "b")]
    store(engine, late)
    after = check(client, sent + late, first=DAY, last=DAY, tz=None, steps=ABC[:2])
    assert users(before, 2) == 0 and users(after, 2) == 2


@pytest.mark.parametrize("order", ["ordered", "strict", "any"])
def test_the_three_orders_differ_as_defined(client, engine, order):
    minute = timedelta(minutes=1)
    sent = [event("u1", T0, "a"), event("u1", T0 + minute, "c"), event("u1", T0 + 2 * minute, "b"),
            event("u2", T0, "a"), event("u2", T0 + minute, "b"), event("u2", T0 + 2 * minute, "noise"),
            event("u2", T0 + 3 * minute, "c")]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC, order=order)
    reached_3 = {"ordered": 1, "strict": 0, "any": 2}[order]  # u2 in order; noise breaks strict; u1 any order
    assert users(rows, 3) == reached_3


def test_breakdown_ties_at_the_limit_are_broken_by_code_point(client, engine):
    sent = []
    for value, count in (("b", 2), ("a", 2), ("c", 2), ("Z", 1), ("$other", 1)):
        for i in range(count):
            sent.append(event(f"{value}-{i}", T0, "a", plan=value))
    sent += [event("none-1", T0, "a"), event("none-2", T0, "a", plan=""), event("none-3", T0, "a", plan=None)]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC[:2], breakdown="properties.plan",
                 limit=2)
    firsts = [(r["group"], r["breakdown"], r["users"]) for r in rows if r["step"] == 1]
    assert firsts == [("value", "a", 2), ("value", "b", 2), ("other", None, 4), ("none", None, 3)]


def test_breakdown_is_the_counted_attempts_entry_value(client, engine):
    sent = [event("u1", T0, "a", plan="free"), event("u1", T0 + timedelta(hours=2), "a", plan="pro"),
            event("u1", T0 + timedelta(hours=3), "b")]
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=ABC[:2], window=3600,
                 breakdown="properties.plan")
    assert [(r["breakdown"], r["users"]) for r in rows] == [("pro", 1), ("pro", 1)]


@pytest.mark.parametrize("order", ["ordered", "strict", "any"])
def test_ten_steps(client, engine, order):
    import random

    rng = random.Random(10)
    steps = [f"event_type:e{i}" for i in range(10)]
    sent = []
    for u in range(6):
        at = T0
        for _ in range(12):
            at += timedelta(minutes=rng.choice((0, 1, 7, 90)))
            sent.append(event(f"u{u}", at, f"e{rng.randrange(10) if rng.random() < 0.4 else len(sent) % 10}"))
    store(engine, sent)
    rows = check(client, sent, first=DAY, last=DAY, tz=None, steps=steps, order=order, window=6 * 3600)
    assert len(rows) == 10 and rows[0]["users"] > 0
