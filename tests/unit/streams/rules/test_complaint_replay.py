"""Complaint signals in event time, whatever order the contacts arrive in."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from touchpoint.sim import offline, scenarios
from touchpoint.streams.rules import complaint_replay
from touchpoint.streams.rules.complaint_replay import WITHDRAWN, History
from touchpoint.streams.rules.complaints import Rules

T0 = 1_795_000_000_000
HOUR = 3_600_000
RULES = Rules.load()
BOUND = int(RULES.order.lateness_hours * HOUR)  # how late a contact may come and count exactly


def call(event_id: str, at: int, *, outcome: str = "unresolved",
         reason: str = "billing") -> dict[str, Any]:
    return {"event_id": event_id, "channel": "callcenter", "type": "call_ended",
            "occurred_at": at, "outcome": outcome, "reason": reason, "queue_wait_s": 30,
            "transfers": 0}


def feed(events: list[dict[str, Any]], *, rules: Rules = RULES,
         history: History | None = None,
         expire_at: list[int] | None = None) -> tuple[History, list[dict[str, Any]]]:
    """Events in the order given, then each ``expire_at`` watermark."""
    history = history or History.new("C1")
    records: list[dict[str, Any]] = []
    for event in events:
        history, out = complaint_replay.observe(history, event, rules=rules)
        records += out
    for now in expire_at or ():
        history, out = complaint_replay.expire(history, now, rules=rules)
        records += out
    return history, records


@pytest.fixture(scope="module")
def scenario_events() -> list[tuple[str, dict[str, Any]]]:
    scenario = scenarios.generate(seed=7, customers=400, start=datetime(2026, 11, 2, tzinfo=UTC),
                                  days=30)
    return offline.normalize(scenario, phone_region="CN")


def test_the_same_journeys_in_three_orders_give_the_same_signals(
        scenario_events: list[tuple[str, dict[str, Any]]]) -> None:
    events = scenario_events
    times = [int(e["occurred_at"]) for _, e in events]
    in_time = sorted(range(len(events)), key=lambda i: (times[i], i))
    bulk = offline.arrival_order([e["channel"] for _, e in events], times, seed=7,
                                 skew_hours=24)
    rng = random.Random(3)
    jittered = sorted(range(len(events)), key=lambda i: (times[i] + rng.uniform(0, 40 * HOUR), i))
    assert bulk != in_time and jittered != in_time

    def signals(order: list[int], rules: Rules = RULES) -> dict[str, tuple[Any, ...]]:
        return offline.concluded(offline.detect(events, order, rules=rules))

    live = signals(in_time)
    assert len(live) > 50  # the scenario raises signals of every kind to compare
    assert {state[1] for state in live.values()} == {"watch", "high", "critical"}
    assert signals(bulk) == live
    assert signals(jittered) == live
    # Without the replay (no lateness allowed) arrival order shows: the check can fail.
    no_bound = dataclasses.replace(RULES, order=dataclasses.replace(RULES.order,
                                                                     lateness_hours=0.0))
    assert signals(bulk, no_bound) != signals(in_time, no_bound)


def test_a_late_resolving_call_corrects_a_breach_already_published() -> None:
    bad = [call("e1", T0), call("e2", T0 + HOUR, outcome="escalated")]
    history, records = feed(bad, expire_at=[T0 + 40 * HOUR])
    assert [r["status"] for r in records][-1] == "breached"
    sid = records[-1]["signal_id"]
    # the call that resolved it, 10 h after the first, arrives after the breach
    history, corrected = feed([call("e3", T0 + 10 * HOUR, outcome="resolved")], history=history)
    assert corrected and corrected[-1]["signal_id"] == sid
    assert corrected[-1]["status"] == "resolved"
    _, expected = feed([*bad, call("e3", T0 + 10 * HOUR, outcome="resolved")],
                       expire_at=[T0 + 40 * HOUR])
    assert offline.concluded([*records, *corrected]) == offline.concluded(expected)


def test_a_late_contact_that_moves_a_signal_withdraws_the_one_published() -> None:
    history, records = feed([call("e2", T0 + 2 * HOUR), call("e3", T0 + 3 * HOUR)])
    [published] = {r["signal_id"] for r in records}
    history, corrected = feed([call("e1", T0 + HOUR)], history=history)
    withdrawn = [r for r in corrected if r["status"] == WITHDRAWN]
    assert [r["signal_id"] for r in withdrawn] == [published]
    _, expected = feed([call("e1", T0 + HOUR), call("e2", T0 + 2 * HOUR),
                        call("e3", T0 + 3 * HOUR)])
    assert offline.concluded([*records, *corrected]) == offline.concluded(expected)
    assert published not in offline.concluded(expected)


def test_a_redelivered_contact_changes_nothing_in_or_out_of_order() -> None:
    history, _ = feed([call("e1", T0), call("e2", T0 + 2 * HOUR)])
    before = history.to_dict()
    history, again = feed([call("e1", T0), call("e2", T0 + 2 * HOUR)], history=history)
    assert again == [] and history.to_dict() == before


def test_page_views_are_not_kept() -> None:
    page = {"event_id": "p1", "channel": "web", "type": "page_view", "occurred_at": T0,
            "url": "/shoes", "session_id": "s1"}
    history, records = feed([page])
    assert records == [] and history.journal == []


def test_the_journal_is_bounded_in_time_and_in_items() -> None:
    rules = dataclasses.replace(RULES, order=dataclasses.replace(RULES.order, journal_items=5))
    calls = [call(f"e{i}", T0 + i * HOUR, outcome="resolved") for i in range(20)]
    history, _ = feed(calls, rules=rules)
    assert [e["event_id"] for e in history.journal] == [f"e{i}" for i in range(15, 20)]
    late = [call("z", T0 + 20 * HOUR + BOUND, outcome="resolved")]
    history, _ = feed(late, history=history)
    assert [e["event_id"] for e in history.journal] == ["z"]  # beyond the bound: folded
    assert history.base.clock == T0 + 19 * HOUR


def test_a_contact_beyond_the_bound_still_counts_in_the_checkpoint() -> None:
    history, _ = feed([call("e1", T0 + BOUND + HOUR, outcome="resolved")])
    history, _ = feed([call("old", T0, outcome="escalated")], history=history)
    assert history.journal[0]["event_id"] == "e1"
    assert history.base.clock == T0 and history.base.score > 0
    # and the live state is the checkpoint with the journal replayed on it
    assert history.live.score > 0


def test_a_merge_gives_the_signals_of_one_customer_with_both_histories() -> None:
    # An anonymous caller (known by phone only) raised a signal of its own before the
    # phone was linked to the CRM customer, who had called too.
    anonymous, theirs = feed([call("a1", T0 + HOUR), call("a2", T0 + 3 * HOUR)],
                             history=History.new("u-1"))
    known, mine = feed([call("b1", T0 + 2 * HOUR)], history=History.new("C1"))
    assert {r["customer_id"] for r in theirs} == {"u-1"}
    merged, records = complaint_replay.combine(known, anonymous, rules=RULES)
    assert [e["event_id"] for e in merged.journal] == ["a1", "b1", "a2"]
    # as if C1 had made the three calls: u-1's signal withdrawn, C1's raised from them
    _, alone = feed([call("a1", T0 + HOUR), call("b1", T0 + 2 * HOUR),
                     call("a2", T0 + 3 * HOUR)], history=History.new("C1"))
    published = offline.concluded([*theirs, *mine, *records])
    assert published == offline.concluded(alone)
    assert {r["status"] for r in records if r["customer_id"] == "u-1"} == {WITHDRAWN}
    # and a late contact after the merge replays all of them
    merged, late = feed([call("b0", T0)], history=merged)
    _, alone = feed([call("b0", T0), call("a1", T0 + HOUR), call("b1", T0 + 2 * HOUR),
                     call("a2", T0 + 3 * HOUR)], history=History.new("C1"))
    assert offline.concluded([*theirs, *mine, *records, *late]) == offline.concluded(alone)


def test_the_stored_history_round_trips() -> None:
    history, _ = feed([call("e1", T0), call("e2", T0 + HOUR)], expire_at=[T0 + 2 * HOUR])
    again = History.from_dict(history.to_dict())
    assert again.to_dict() == history.to_dict()


def test_each_contact_is_counted_by_how_it_was_placed() -> None:
    counts: Counter[str] = Counter()
    history = History.new("C1")
    for event in (call("e2", T0 + BOUND + HOUR), call("e3", T0 + BOUND + 2 * HOUR),
                  call("e1", T0 + BOUND), call("e0", T0)):
        history, _ = complaint_replay.observe(history, event, rules=RULES, counts=counts)
    assert counts == {"in_order": 2, "replayed": 1, "beyond_bound": 1}
