"""Minute rows: batches in, complete rows out, exact across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from touchpoint.sim.campaign_scenario import generate
from touchpoint.streams.rules.aggregates import LATE_COLUMNS, MINUTE_COLUMNS
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.minute_rows import MinuteStage

from ...campaign_helpers import minute_report, normalize

GRACE = timedelta(minutes=2)


@pytest.fixture(scope="module")
def scenario_events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    made = generate(seed=5, customers=80, start=datetime(2026, 11, 2, tzinfo=UTC))
    return [event for _, event in normalize(made.events)], made.expected["minutes"]


def _run(stage: MinuteStage, events: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(events), size):
        minute_rows, late_rows = stage.add(events[start:start + size])
        rows += [dict(zip(MINUTE_COLUMNS, r, strict=True)) for r in minute_rows]
        rows += [dict(zip(LATE_COLUMNS, r, strict=True)) for r in late_rows]
    return rows


def test_rows_of_a_batch_are_complete_and_give_the_expected_minutes(scenario_events) -> None:
    events, expected = scenario_events
    stage = MinuteStage(Rules.load(), grace=GRACE)
    rows = _run(stage, events, 37)
    # open minutes were written as provisional rows: nothing waits for a minute to close
    assert minute_report(rows) == expected
    assert stage.stats == {"counted": len(events)}
    assert not any("batch" in row for row in rows)  # within the grace: nothing late


def test_one_row_per_key_per_batch_and_only_what_changed(scenario_events) -> None:
    events, _ = scenario_events
    stage = MinuteStage(Rules.load(), grace=GRACE)
    first, _ = stage.add(events[:50])
    keys = [r[:6] for r in first]
    assert len(keys) == len(set(keys))
    again, late = stage.add(events[:50])  # a redelivered batch
    assert (again, late) == ([], [])
    assert stage.stats["duplicate"] == 50


def test_a_restart_from_the_stored_state_rewrites_the_same_rows(scenario_events) -> None:
    events, expected = scenario_events
    undisturbed = _run(MinuteStage(Rules.load(), grace=GRACE), events, 40)
    before = MinuteStage(Rules.load(), grace=GRACE)
    rows = _run(before, events[:200], 40)
    stored = before.state()
    rows += _run(before, events[200:260], 40)  # counted and written, then the worker dies
    after = MinuteStage(Rules.load(), grace=GRACE)
    after.load(stored)  # the changelog had the state of the first 200
    rows += _run(after, events[200:], 40)  # read again from the committed offset
    assert minute_report(rows) == minute_report(undisturbed) == expected
    assert "late" not in after.stats


def test_an_event_of_a_closed_minute_is_late_not_lost(scenario_events) -> None:
    events, _ = scenario_events
    stage = MinuteStage(Rules.load(), grace=GRACE)
    early, rest = events[0], events[1:400]
    rows = _run(stage, rest, 50)
    late_rows = _run(stage, [early], 1)
    assert [r["events"] for r in late_rows] == [1] and "batch" in late_rows[0]
    assert stage.stats["late"] == 1
    everything = minute_report(rows + late_rows)
    assert sum(m["events"] for m in everything) == 400
