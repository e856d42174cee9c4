from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest

from touchpoint.exceptions import ConfigError
from touchpoint.streams.rules.aggregates import (
    LATE_COLUMNS,
    MINUTE_COLUMNS,
    MinuteCell,
    MinuteKey,
    MinuteWindows,
    is_negative,
    minute_key,
    negative_reasons,
    row_values,
)
from touchpoint.streams.rules.complaints import Rules

T0 = 1_795_000_040_000  # 20 s into a minute
M0 = T0 - 20_000
MIN = 60_000
SEC = 1_000


@pytest.fixture(scope="module")
def rules() -> Rules:
    return Rules.load()


def ev(event_id: str, channel: str, kind: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "channel": channel, "type": kind, "occurred_at": at,
            **fields}


def test_minute_key_floors_event_time_and_fills_blanks() -> None:
    assert minute_key(ev("e", "store", "visit", T0, store_id="S1")) == \
        MinuteKey(M0, "store", "visit", "S1", "")
    assert minute_key(ev("e", "web", "page_view", M0 + MIN - 1, campaign_id="C1",
                         store_id=None)) == MinuteKey(M0, "web", "page_view", "", "C1")


def test_a_cell_counts_once_and_sums_exactly() -> None:
    cell = MinuteCell(MinuteKey(M0, "web", "purchase", "", ""))
    for n, amount in enumerate([0.1, 0.2, 19.99]):
        assert cell.add(ev(f"p{n}", "web", "purchase", T0, amount=amount, customer_id="C1",
                           category="channel", stage="shopping"), negative=n == 2)
    assert not cell.add(ev("p0", "web", "purchase", T0, amount=0.1), negative=True)
    assert cell.add(ev("p3", "web", "purchase", T0, amount=5.0), False, customer_id="C2")
    assert cell.row() == {
        "minute": M0, "channel": "web", "type": "purchase", "store_id": "", "campaign_id": "",
        "part": 0, "category": "channel", "stage": "shopping", "events": 4, "customers": 2,
        "revenue": 25.29, "wait_s_sum": 0, "wait_count": 0, "negative": 1, "version": 4,
    }
    assert tuple(cell.row()) == MINUTE_COLUMNS
    # row() is built from values(): check the tuple itself
    assert cell.values(part=3) == (M0, "web", "purchase", "", "", 3, "channel", "shopping",
                                   4, 2, 25.29, 0, 0, 1, 4)
    assert cell.seen("p1") and not cell.seen("p9")


def test_an_added_event_names_its_minute_key_when_counted() -> None:
    windows = MinuteWindows(grace=timedelta(0))
    event = ev("w1", "web", "page_view", T0, campaign_id="C1")
    assert windows.add(event, negative=False).key == minute_key(event)
    assert windows.add(event, negative=False).key is None  # a duplicate
    windows.add(ev("w2", "web", "page_view", T0 + 2 * MIN), negative=False)
    added = windows.add(ev("w3", "web", "page_view", T0), negative=False)
    assert (added.status, added.key) == ("late", None)


def test_waits_are_summed_and_category_comes_from_the_contract() -> None:
    cell = MinuteCell(MinuteKey(M0, "store", "queue_joined", "S1", ""))
    cell.add(ev("q1", "store", "queue_joined", T0, store_id="S1", queue_wait_s=120), False)
    cell.add(ev("q2", "store", "queue_joined", T0, store_id="S1", queue_wait_s=0), False)
    cell.add(ev("q3", "store", "queue_joined", T0, store_id="S1"), False)
    row = cell.row()
    assert (row["wait_s_sum"], row["wait_count"], row["events"]) == (120, 2, 3)
    assert (row["category"], row["stage"], row["revenue"]) == ("channel", "site", 0.0)


@pytest.mark.parametrize(("event", "reasons"), [
    (ev("a", "callcenter", "call_ended", T0, queue_wait_s=300, outcome="resolved"),
     ("long_wait",)),
    (ev("b", "callcenter", "call_ended", T0, queue_wait_s=299, outcome="resolved"), ()),
    (ev("c", "callcenter", "call_ended", T0, transfers=2, outcome="escalated"),
     ("transfers", "escalated")),
    (ev("d", "callcenter", "call_ended", T0, outcome="abandoned"), ("abandoned",)),
    (ev("e", "callcenter", "callback_requested", T0), ("long_wait",)),
    (ev("f", "store", "queue_joined", T0, queue_wait_s=900), ("long_wait",)),
    (ev("g", "store", "served", T0, queue_wait_s=899), ()),
    (ev("h", "feedback", "csat", T0, score=2), ("low_rating",)),
    (ev("i", "feedback", "csat", T0, score=3), ()),
    (ev("j", "feedback", "nps", T0, score=6), ("low_rating",)),
    (ev("k", "feedback", "review", T0, score=5, sentiment=-0.8),
     ("negative_text",)),
    (ev("l", "feedback", "complaint", T0), ("formal_complaint",)),
    (ev("m", "web", "error", T0, error_code="HTTP_500"), ("web_errors",)),
    (ev("n", "web", "page_view", T0, sentiment=None), ()),
    (ev("o", "callcenter", "call_ended", T0, outcome="unresolved", sentiment=-0.4),
     ("unresolved", "negative_text")),
    (ev("p", "campaign", "opened", T0, campaign_id="C1"), ()),
])
def test_negative_experiences_follow_the_complaint_rules(
        rules: Rules, event: dict[str, Any], reasons: tuple[str, ...]) -> None:
    assert negative_reasons(event, rules) == reasons
    assert is_negative(event, rules) == bool(reasons)


def minute_of(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["minute"], r["type"]): r for r in rows}


def test_a_minute_closes_when_the_watermark_passes_its_end() -> None:
    windows = MinuteWindows()
    assert windows.add(ev("a", "web", "page_view", T0), negative=False).status == "counted"
    # 2 min grace: the first minute [M0, M0+60s) closes once events reach M0 + 3 min
    assert windows.add(ev("b", "web", "page_view", M0 + 3 * MIN - 1), negative=False).closed == []
    added = windows.add(ev("c", "web", "page_view", M0 + 3 * MIN), negative=True)
    assert [(r["minute"], r["events"], r["version"]) for r in added.closed] == [(M0, 1, 1)]
    assert windows.watermark == M0 + MIN
    assert windows.is_closed(M0) and not windows.is_closed(M0 + MIN)
    assert [r["events"] for r in windows.snapshot()] == [1, 1]


def test_events_within_grace_land_in_their_minute() -> None:
    windows = MinuteWindows()
    windows.add(ev("a", "store", "visit", T0, store_id="S1"), negative=False)
    windows.add(ev("b", "store", "visit", T0 + 110 * SEC, store_id="S1"), negative=False)
    late_but_in_grace = windows.add(ev("c", "store", "visit", T0 + SEC, store_id="S1"),
                                    negative=False)
    assert late_but_in_grace.status == "counted"
    rows = windows.advance(M0 + 10 * MIN)
    assert [(r["minute"], r["events"]) for r in rows] == [(M0, 2), (M0 + 2 * MIN, 1)]
    assert windows.stats == {"counted": 3, "late": 0, "duplicate": 0}


def test_events_after_their_minute_closed_are_late_not_lost() -> None:
    windows = MinuteWindows(part=3)
    windows.add(ev("a", "web", "purchase", T0, amount=10.0, customer_id="C1"), negative=False)
    closed = windows.add(ev("b", "web", "page_view", T0 + 5 * MIN), negative=False).closed
    assert [r["events"] for r in closed] == [1]
    late = windows.add(ev("c", "web", "purchase", T0 + SEC, amount=2.5, customer_id="C2"),
                       negative=True)
    assert late.status == "late" and late.closed == []
    batch = (T0 + 3 * MIN) - (T0 + 3 * MIN) % MIN
    assert late.late == [{
        "minute": M0, "channel": "web", "type": "purchase", "store_id": "", "campaign_id": "",
        "part": 3, "category": "channel", "stage": "shopping", "events": 1, "customers": 1,
        "revenue": 2.5, "wait_s_sum": 0, "wait_count": 0, "negative": 1, "batch": batch,
        "version": 1,
    }]
    assert tuple(late.late[0]) == LATE_COLUMNS
    again = windows.add(ev("d", "web", "purchase", T0 + 2 * SEC, amount=1.0), negative=False)
    assert (again.late[0]["events"], again.late[0]["version"], again.late[0]["revenue"]) == \
        (2, 2, 3.5)
    assert row_values(again.late[0], LATE_COLUMNS)[-2:] == (batch, 2)
    # repeats of counted events are recognized, in the closed minute and in the late cell
    assert windows.add(ev("a", "web", "purchase", T0), negative=False).status == "duplicate"
    assert windows.add(ev("c", "web", "purchase", T0), negative=False).status == "duplicate"
    assert windows.stats == {"counted": 2, "late": 2, "duplicate": 2}


def test_closed_minutes_are_forgotten_after_retain_and_late_cells_after_late_retain() -> None:
    windows = MinuteWindows(grace=timedelta(0), retain=timedelta(minutes=5), retain_events=0,
                            late_retain=timedelta(minutes=30))
    windows.add(ev("a", "web", "page_view", T0), negative=False)
    windows.add(ev("b", "web", "page_view", T0 + 2 * MIN), negative=False)
    assert MinuteKey(M0, "web", "page_view", "", "") in windows.closed
    windows.add(ev("c", "web", "page_view", T0 + 7 * MIN), negative=False)
    assert MinuteKey(M0, "web", "page_view", "", "") not in windows.closed
    first = windows.add(ev("d", "web", "page_view", T0 + SEC), negative=False)
    windows.add(ev("e", "web", "page_view", T0 + 40 * MIN), negative=False)
    second = windows.add(ev("f", "web", "page_view", T0 + 2 * SEC), negative=False)
    assert first.late[0]["batch"] < second.late[0]["batch"]  # a new row, not a replacement
    assert second.late[0]["events"] == 1


def test_a_late_cell_that_stopped_collecting_still_knows_its_events_for_retain_events() -> None:
    # A crash after the windows were stored, before the offsets were committed: the
    # events read again include those of a late cell that stopped collecting meanwhile.
    windows = MinuteWindows(grace=timedelta(0), retain_events=3,
                            late_retain=timedelta(minutes=30))
    windows.add(ev("a", "web", "page_view", T0 + 5 * MIN), negative=False)
    assert windows.add(ev("late", "web", "page_view", T0), negative=False).status == "late"
    windows.add(ev("b", "web", "page_view", T0 + 40 * MIN), negative=False)
    key = MinuteKey(M0, "web", "page_view", "", "")
    assert key not in windows.late and key in windows.retired
    again = MinuteWindows.from_dict(json.loads(json.dumps(windows.to_dict())), grace=timedelta(0),
                                    retain_events=3, late_retain=timedelta(minutes=30))
    for restored in (windows, again):
        assert restored.add(ev("late", "web", "page_view", T0),
                            negative=False).status == "duplicate"
    for n in range(4):  # more than retain_events events later: forgotten
        windows.add(ev(f"c{n}", "web", "page_view", T0 + (41 + n) * MIN), negative=False)
    assert key not in windows.retired
    assert windows.add(ev("late", "web", "page_view", T0), negative=False).status == "late"


def test_shuffled_within_grace_and_repeated_gives_the_same_rows() -> None:
    rng = random.Random(7)
    events = [ev(f"e{n}", rng.choice(("web", "store")), rng.choice(("visit", "purchase")),
                 T0 + n * 997, amount=round(rng.uniform(1, 99), 2), customer_id=f"C{n % 13}",
                 store_id="S1") for n in range(600)]

    def closed_rows(order: list[dict[str, Any]]) -> list[dict[str, Any]]:
        windows = MinuteWindows()
        rows = []
        for event in order:
            added = windows.add(event, negative=event["amount"] > 90)
            assert added.status != "late"
            rows.extend(added.closed)
        return sorted(rows + windows.advance(T0 + 10**8), key=lambda r: tuple(r.values()))

    expected = closed_rows(events)
    assert sum(r["events"] for r in expected) == 600
    for trial in range(5):
        # every event arrives up to 110 s late, a tenth of them twice (redelivered)
        arrivals = events + rng.sample(events, 60)
        delayed = sorted(arrivals, key=lambda e: e["occurred_at"] + rng.randint(0, 110 * SEC))
        assert closed_rows(delayed) == expected, trial


def test_windows_survive_json_and_continue_the_same() -> None:
    events = [ev(f"e{n}", "callcenter", "call_ended", T0 + n * 7 * SEC, queue_wait_s=n,
                 customer_id=f"C{n % 3}") for n in range(60)]
    whole = MinuteWindows(part=2)
    rows_whole = [r for e in events for r in whole.add(e, negative=False).closed]
    part = MinuteWindows(part=2)
    rows_part = [r for e in events[:30] for r in part.add(e, negative=False).closed]
    restored = MinuteWindows.from_dict(json.loads(json.dumps(part.to_dict())), part=2)
    rows_part += [r for e in events[30:] for r in restored.add(e, negative=False).closed]
    assert rows_part == rows_whole
    assert restored.snapshot() == whole.snapshot()
    assert {r["part"] for r in rows_part} == {2}
    assert restored.stats == whole.stats


def test_closed_minutes_store_the_same_ids_every_time_and_after_a_restore() -> None:
    # a closed minute's ids are packed once and reused by every later to_dict
    events = [ev(f"e{n}", "web", "page_view", T0 + n * 20 * SEC) for n in range(30)]
    windows = MinuteWindows()
    for e in events[:20]:
        windows.add(e, negative=False)
    first = json.loads(json.dumps(windows.to_dict()))
    assert first["closed"], "some minutes closed"
    restored = MinuteWindows.from_dict(first)
    for w in (windows, restored):
        for e in events[20:]:
            w.add(e, negative=False)
    def digests(packed: str) -> list[str]:  # a set's order varies from process to process
        return sorted(packed[i:i + 16] for i in range(0, len(packed), 16))

    again = windows.to_dict()
    assert [(key, at, digests(packed)) for key, at, packed in again["closed"]] == \
        [(key, at, digests(packed)) for key, at, packed in restored.to_dict()["closed"]]
    for key, _, packed in again["closed"]:
        assert digests(packed) == sorted(windows.closed[MinuteKey(*key)][1])
    assert again["closed"][0] == first["closed"][0]  # packed once: the same string
    assert {restored.add(e, negative=False).status for e in events} == {"duplicate"}


def test_closed_minutes_of_a_quiet_stream_are_remembered_for_retain_events() -> None:
    # Hours between events: a redelivery after a restart is far behind in event time.
    windows = MinuteWindows(retain_events=2)
    for n in range(4):
        windows.add(ev(f"e{n}", "web", "page_view", T0 + n * 3_600_000), negative=False)
    assert windows.add(ev("e0", "web", "page_view", T0), negative=False).status == "duplicate"
    windows.add(ev("e4", "web", "page_view", T0 + 4 * 3_600_000), negative=False)
    assert windows.add(ev("e0", "web", "page_view", T0), negative=False).status == "late"


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="grace must be 0 or more"):
        MinuteWindows(grace=timedelta(seconds=-1))
    with pytest.raises(ConfigError, match="retain_events must be 0 or more"):
        MinuteWindows(retain_events=-1)


class _ScanEveryTime(MinuteWindows):
    """The windows with the scan shortcut off: ``_close`` looks at every open and late cell."""

    def _close(self) -> list[dict[str, Any]]:
        self._first_open = self._first_late = -(1 << 62)
        return super()._close()


@pytest.mark.python_source
def test_closing_only_when_due_gives_what_scanning_every_event_gives() -> None:
    # Events mostly in order with some far behind (late cells), watermark pushes from
    # outside and a restore midway: the shortcut must close, forget and expire the same.
    rng = random.Random(11)
    settings = {"grace": timedelta(seconds=30), "retain": timedelta(minutes=3),
                "retain_events": 5, "late_retain": timedelta(minutes=4)}
    fast, slow = MinuteWindows(**settings), _ScanEveryTime(**settings)
    at = T0
    for n in range(3000):
        if n == 1500:
            fast = MinuteWindows.from_dict(json.loads(json.dumps(fast.to_dict())), **settings)
        at += rng.randint(0, 4 * SEC)
        when = at - rng.choice((0, 0, 0, rng.randint(0, 20 * MIN)))
        event = ev(f"e{rng.randint(0, 2500)}", rng.choice(("web", "store")), "visit", when)
        if rng.random() < 0.01:
            assert fast.advance(at + MIN) == slow.advance(at + MIN)
        got, want = fast.add(event, negative=False), slow.add(event, negative=False)
        assert got == want, n
        assert (fast.open.keys(), fast.closed.keys(), fast.late.keys()) == \
            (slow.open.keys(), slow.closed.keys(), slow.late.keys()), n
    assert fast.stats == slow.stats
    assert fast.stats["late"] > 100 and fast.stats["duplicate"] > 0
