"""Minute rows: batches in, complete rows out, exact across restarts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from touchpoint.sim.campaign_scenario import generate
from touchpoint.streams.rules.aggregates import LATE_COLUMNS, MINUTE_COLUMNS
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.minute_rows import LATE_PREFIX, Changes, MinuteStage

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


def _writes(changes: Changes) -> list[tuple[str, Any]]:
    """A store's writes to the table, in order: (name, value), value None for a deletion."""
    return [("head" if name is None else name, value) for name, value in changes.writes()]


def _write(table: dict[str, Any], writes: Sequence[tuple[str, Any]]) -> None:
    for name, value in writes:
        if value is None:
            table.pop(name, None)
        else:
            table[name] = json.loads(json.dumps(value))  # as the changelog gives it back


def _loaded(table: dict[str, Any]) -> MinuteStage:
    stage = MinuteStage(Rules.load(), grace=GRACE)
    stage.load(table.get("head"),
               sorted((k, v) for k, v in table.items() if k.startswith(LATE_PREFIX)))
    return stage


def test_a_restart_from_the_stored_state_rewrites_the_same_rows(scenario_events) -> None:
    events, expected = scenario_events
    undisturbed = _run(MinuteStage(Rules.load(), grace=GRACE), events, 40)
    before = MinuteStage(Rules.load(), grace=GRACE)
    rows = _run(before, events[:200], 40)
    table: dict[str, Any] = {}
    _write(table, _writes(before.changes()))
    rows += _run(before, events[200:260], 40)  # counted and written, then the worker dies
    after = _loaded(table)  # the changelog had the state of the first 200
    rows += _run(after, events[200:], 40)  # read again from the committed offset
    assert minute_report(rows) == minute_report(undisturbed) == expected
    assert "late" not in after.stats


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    """A stored state with its sets as sets (their order in the data is arbitrary)."""
    def ids(packed: str) -> set[str]:
        return {packed[i:i + 16] for i in range(0, len(packed), 16)}

    def cell(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "ids": ids(data["ids"]), "customers": set(data["customers"])}

    return {**{k: v for k, v in state.items() if k != "stats"},  # counts duplicates too
            "open": [cell(c) for c in state["open"]],
            "late": [[batch, cell(c)] for batch, c in state["late"]],
            "closed": [[key, at, ids(packed)] for key, at, packed in state["closed"]],
            # cells retired by one event, in whatever order
            "retired": {tuple(key): (at, ids(packed)) for key, at, packed in state["retired"]}}


def _stored_cells(table: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {tuple(value[2]["key"]) for name, value in table.items()
            if name.startswith(LATE_PREFIX)}


def _skewed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events two days at a time, channel after channel: most of them late.

    The watermark moves on two days a block, so late cells of a block stop collecting
    in the next one (``late_retain`` is a day), and a new cell opens for their key.
    """
    day = 86_400_000
    first = min(e["occurred_at"] for e in events)
    ordered = sorted(events, key=lambda e: ((e["occurred_at"] - first) // (2 * day),
                                            e["channel"], e["occurred_at"]))
    return ordered[:130] + ordered[100:]  # with a redelivery


class _Worker:
    """Counts events in batches and stores the windows every few batches, as the stage does.

    Rows go to ``rows`` as they are written. ``crash`` = (store, writes): the worker dies
    after that many writes of that store (counted from 0), as a crash cuts a changelog.
    Returns the position read again from: the first event the last complete store lacks.
    """

    def __init__(self, table: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.table, self.rows, self.stores = table, rows, 0
        self.writes: list[tuple[int, int]] = []  # each store's writes, and where its head is

    def run(self, events: list[dict[str, Any]], start: int,
            crash: tuple[int, int] | None = None, size: int = 25, every: int = 3,
            fail: tuple[int, int] | None = None) -> int:
        """``fail`` = (store, writes): that store's write after so many raises; the
        worker goes on, and its records stay unacknowledged until a store succeeds."""
        stage = _loaded(self.table)
        committed = position = start
        failed = False
        while position < len(events):
            self.rows += _run(stage, events[position:position + size], size)
            position += size
            if (position - start) // size % every == 0 or position >= len(events):
                writes = _writes(stage.changes())
                head = [n for n, _ in writes].index("head")
                self.writes.append((len(writes), head))
                if crash is not None and crash[0] == self.stores:
                    _write(self.table, writes[:crash[1]])
                    self.stores += 1
                    return committed
                self.stores += 1
                failed = fail is not None and fail[0] == self.stores - 1 and fail[1] < len(writes)
                if failed:
                    assert fail is not None
                    _write(self.table, writes[:fail[1]])
                    stage.not_stored(head=fail[1] > head)
                    continue
                _write(self.table, writes)
                committed = position
        if failed:  # the last store failed: the next one comes when it is due, no new events
            _write(self.table, _writes(stage.changes()))
        return committed


def test_late_cells_are_stored_apart_and_only_when_they_change(scenario_events) -> None:
    events, _ = scenario_events
    stage = MinuteStage(Rules.load(), grace=GRACE)
    _run(stage, _skewed(events)[:200], 25)
    first = stage.changes()
    assert stage.stats["late"] > 50 and len(first.late) == len(stage.windows.late)
    assert not first.head["late"]  # the head holds no late cell
    again = stage.changes()
    assert (again.stale, again.late, again.gone) == ([], {}, [])  # nothing changed since
    assert again.head["generation"] == first.head["generation"] + 1


def test_a_late_cell_that_stops_collecting_is_deleted(scenario_events) -> None:
    events, _ = scenario_events
    table: dict[str, Any] = {}
    worker = _Worker(table, [])
    worker.run(_skewed(events), 0)
    stage = _loaded(table)
    # the table holds the live cells (one or both slots each) and nothing else
    assert _stored_cells(table) == set(stage.windows.late)
    assert len(stage.windows.retired) > 100  # where many more came and went


def _undisturbed(skewed: list[dict[str, Any]]) -> tuple[_Worker, Any, dict[str, Any]]:
    """A worker that counted ``skewed`` without a fault; its minute report and windows."""
    table: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    undisturbed = _Worker(table, rows)
    undisturbed.run(skewed, 0)
    return undisturbed, minute_report(rows), _comparable(_loaded(table).windows.to_dict())


def test_a_store_cut_anywhere_by_a_crash_loses_and_doubles_nothing(scenario_events) -> None:
    events, _ = scenario_events
    skewed = _skewed(events)
    undisturbed, report, final = _undisturbed(skewed)
    assert sum(m["events"] for m in report) == len(events)
    assert len(undisturbed.writes) > 4 and max(n for n, _ in undisturbed.writes) > 100
    for store, (count, head) in enumerate(undisturbed.writes):
        # around the head, a dozen other points, and all written but not committed
        for cut in sorted({*range(0, count, max(1, count // 12)), head - 1, head, head + 1,
                           count - 1, count} - {-1}):
            table, rows = {}, []
            worker = _Worker(table, rows)
            start = worker.run(skewed, 0, crash=(store, cut))
            start = worker.run(skewed, start, crash=(store + 2, count // 2))  # and again
            worker.run(skewed, start)
            assert minute_report(rows) == report, (store, cut)
            assert _comparable(_loaded(table).windows.to_dict()) == final, (store, cut)
            assert _stored_cells(table) == {tuple(c["key"]) for _, c in final["late"]}


def test_a_batch_writes_each_late_cell_it_changed_once_as_the_batch_left_it(
        scenario_events) -> None:
    # One row per late cell and batch, made after the batch: the same rows as the last
    # each cell got when the events came one at a time, also for cells that stopped
    # collecting within the batch (the skew moves the watermark on by days).
    events = _skewed(scenario_events[0])
    one_by_one, batched = (MinuteStage(Rules.load(), grace=GRACE) for _ in range(2))
    expected: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for start in range(0, len(events), 60):
        for event in events[start:start + 60]:
            for row in one_by_one.add([event])[1]:
                expected[row[:6] + row[-2:-1]] = row  # key, part and batch: the latest row
        late = batched.add(events[start:start + 60])[1]
        assert sorted(late) == sorted(expected.values())
        expected.clear()
    assert batched.stats["late"] > 100 and batched.windows.retired  # cells stopped in batches


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


def test_a_store_whose_writes_fail_part_way_is_written_whole_by_the_next(
        scenario_events) -> None:
    events, _ = scenario_events
    skewed = _skewed(events)
    undisturbed, report, final = _undisturbed(skewed)
    for store, (count, head) in enumerate(undisturbed.writes):
        for cut in sorted({0, head // 2, head, head + 1, count - 1} - {-1}):
            if store + 1 < len(undisturbed.writes):
                # the worker goes on after the failed store; then it dies after the next
                # one was cut short, and is read again from the last store that succeeded
                table, rows = {}, []
                worker = _Worker(table, rows)
                start = worker.run(skewed, 0, fail=(store, cut), crash=(store + 1, 3))
                worker.run(skewed, start)
                assert minute_report(rows) == report, (store, cut)
                assert _comparable(_loaded(table).windows.to_dict()) == final, (store, cut)
                assert _stored_cells(table) == {tuple(c["key"]) for _, c in final["late"]}
            # and without a crash: the next store writes what the failed one did not
            table, rows = {}, []
            _Worker(table, rows).run(skewed, 0, fail=(store, cut))
            assert _comparable(_loaded(table).windows.to_dict()) == final, (store, cut)


def test_what_a_failed_store_did_not_write_is_in_the_next(scenario_events) -> None:
    events, _ = scenario_events
    skewed = _skewed(events)
    stage = MinuteStage(Rules.load(), grace=GRACE)
    _run(stage, skewed[:150], 25)
    stage.changes()  # stored
    _run(stage, skewed[150:300], 25)
    failed = stage.changes()
    assert failed.late and failed.gone  # cells changed and cells gone since the last store
    stage.not_stored(head=False)  # nothing of it reached the table
    again = stage.changes()
    assert again.late.keys() == failed.late.keys()  # the same slots: the failed writes'
    assert [value[1:] for value in again.late.values()] == \
        [value[1:] for value in failed.late.values()]
    assert again.gone == failed.gone and again.head["generation"] > failed.head["generation"]
    stage.not_stored(head=True)  # the cells and the head reached it, the deletions did not
    last = stage.changes()
    assert (last.late, last.gone) == ({}, again.gone)
