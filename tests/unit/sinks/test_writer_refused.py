"""Rows the warehouse refuses for their values: found by halving, dead-lettered, never a stall."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from touchpoint.exceptions import WarehouseError, WarehouseRejected, WarehouseUnavailable
from touchpoint.sinks.base import Batch, Sink
from touchpoint.sinks.writer import RefusedRow, RetryingWriter


class PickySink(Sink):
    """Refuses any insert holding a negative value, as ClickHouse refuses 40000 for Int16.

    ``outages`` inserts fail first with ``WarehouseUnavailable`` (or the given errors).
    """

    def __init__(self, errors: Sequence[Exception] = ()) -> None:
        self.errors = list(errors)
        self.stored: list[tuple[int, ...]] = []
        self.tokens: list[str] = []  # of every attempt, in order
        self.attempts = 0

    def write(self, batch: Batch) -> None:
        self.attempts += 1
        self.tokens.append(batch.token)
        if self.errors:
            raise self.errors.pop(0)
        bad = [row for row in batch.rows if row[1] < 0]
        if bad:
            raise WarehouseRejected(
                f"Code: 53. Type mismatch: value {bad[0][1]} of row {bad[0][0]} out of range",
                code=53)
        self.stored += [row[0] for row in batch.rows]

    def close(self) -> None:
        pass


class Hook:
    """The writer's ``refused`` hook: keeps what it is given, fails ``failures`` times first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[list[RefusedRow]] = []

    async def __call__(self, rows: Sequence[RefusedRow]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Kafka down")
        self.calls.append(list(rows))


def _batch(values: Sequence[int], token: str = "tok") -> Batch:
    return Batch("events", ("id", "value"), [(i, v) for i, v in enumerate(values)], token)


def _writer(sink: Sink, hook: Hook | None, **options: object) -> RetryingWriter:
    return RetryingWriter(sink, initial_backoff=0.001, max_backoff=0.004,
                          refused=hook, **options)  # type: ignore[arg-type]


VALUES = [1, 2, -3, 4, 5, 6, 7, -8, 9, 10, 11]  # rows 2 and 7 are refused


def test_halving_finds_exactly_the_refused_rows_and_stores_the_rest_once() -> None:
    sink, hook = PickySink(), Hook()
    writer = _writer(sink, hook)
    asyncio.run(writer.write(_batch(VALUES)))
    assert sorted(sink.stored) == [0, 1, 3, 4, 5, 6, 8, 9, 10]
    assert len(sink.stored) == len(set(sink.stored))  # each stored once
    assert len(hook.calls) == 1  # handed over together, before write returned
    refused = hook.calls[0]
    assert [(r.table, r.columns, r.row) for r in refused] == [
        ("events", ("id", "value"), (2, -3)), ("events", ("id", "value"), (7, -8))]
    assert [r.reason for r in refused] == [
        "Code: 53. Type mismatch: value -3 of row 2 out of range",
        "Code: 53. Type mismatch: value -8 of row 7 out of range"]
    assert refused[0].values() == {"id": 2, "value": -3}
    stats = writer.stats
    assert (dict(stats.rows), dict(stats.refused), stats.batches, stats.retries) == (
        {"events": 9}, {"events": 2}, 1, 0)
    assert stats.retrying_since is None


def test_parts_get_tokens_derived_from_the_batch_and_the_slice_the_same_every_time() -> None:
    first, second = PickySink(), PickySink()
    asyncio.run(_writer(first, Hook()).write(_batch(VALUES)))
    asyncio.run(_writer(second, Hook()).write(_batch(VALUES)))
    assert first.tokens == second.tokens  # a retried split deduplicates like a batch
    assert first.tokens[0] == "tok"
    batch = _batch(VALUES)
    left, right = batch.part(0, 5), batch.part(5, 11)
    assert first.tokens[1:3] == [left.token, left.part(0, 2).token]
    assert right.token in first.tokens
    assert len(set(first.tokens)) == len(first.tokens)  # no two parts share one
    assert _batch(VALUES, "other").part(0, 5).token != left.token
    with pytest.raises(ValueError, match="not within the batch"):
        batch.part(3, 12)


def test_an_unreachable_warehouse_is_still_retried_never_dead_lettered() -> None:
    sink, hook = PickySink([WarehouseUnavailable("down"), WarehouseUnavailable("down")]), Hook()
    writer = _writer(sink, hook)
    asyncio.run(writer.write(_batch([1, 2, 3])))
    assert (sink.stored, hook.calls, sink.tokens) == ([0, 1, 2], [], ["tok"] * 3)
    assert dict(writer.stats.failures) == {"WarehouseUnavailable": 2}


def test_an_outage_during_the_split_retries_that_part_with_its_own_token() -> None:
    sink, hook = PickySink(), Hook()
    errors = iter([None, WarehouseUnavailable("down"), None])  # the first part's insert fails

    original = sink.write

    def flaky(batch: Batch) -> None:
        error = next(errors, None)
        if error is not None:
            sink.tokens.append(batch.token)
            raise error
        original(batch)

    sink.write = flaky  # type: ignore[method-assign]
    asyncio.run(_writer(sink, hook).write(_batch([1, -2, 3, 4])))
    assert sorted(sink.stored) == [0, 2, 3]
    assert [r.row for r in hook.calls[0]] == [(1, -2)]
    left = _batch([1, -2, 3, 4]).part(0, 2)
    assert sink.tokens[1:3] == [left.token, left.token]  # the retry is the same insert


def test_a_statement_refused_for_other_reasons_is_retried_not_split() -> None:
    sink = PickySink([WarehouseError("Code: 60. Table tp.events doesn't exist")] * 3)
    hook = Hook()
    writer = _writer(sink, hook)
    asyncio.run(writer.write(_batch([1, -2, 3])))
    # retried whole, loudly, until the table is there; split only when its rows are refused
    assert sink.tokens[:4] == ["tok"] * 4 and "tok" not in sink.tokens[4:]
    assert sink.stored == [0, 2] and [r.row for r in hook.calls[0]] == [(1, -2)]
    assert dict(writer.stats.failures) == {"WarehouseError": 3}


def test_without_a_hook_refused_rows_are_retried_never_dropped() -> None:
    sink = PickySink()
    writer = _writer(sink, None)

    async def scenario() -> None:
        task = asyncio.create_task(writer.write(_batch([1, -2, 3])))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert sink.stored == [] and set(sink.tokens) == {"tok"} and sink.attempts > 3
    # (the last attempt may have ended after the cancellation)
    assert writer.stats.failures["WarehouseRejected"] in (sink.attempts - 1, sink.attempts)


def test_rows_of_a_table_never_dead_lettered_are_retried() -> None:
    sink, hook = PickySink(), Hook()
    writer = _writer(sink, hook, retry_refused=("events",))

    async def scenario() -> None:
        task = asyncio.create_task(writer.write(_batch([1, -2])))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())
    assert (sink.stored, hook.calls) == ([], [])


def test_write_returns_only_once_the_hook_took_the_refused_rows() -> None:
    sink, hook = PickySink(), Hook(failures=2)
    writer = _writer(sink, hook)
    asyncio.run(writer.write(_batch([-1, 2])))
    assert [[r.row for r in call] for call in hook.calls] == [[(0, -1)]]
    assert sink.stored == [1] and sink.attempts == 3  # the rows were not inserted again
    assert dict(writer.stats.failures) == {"ConnectionError": 2}
    assert writer.stats.retrying_since is None


def test_a_long_reason_is_cut() -> None:
    class Verbose(PickySink):
        def write(self, batch: Batch) -> None:
            raise WarehouseRejected("Code: 27. Cannot parse input: " + "x" * 50_000, code=27)

    hook = Hook()
    asyncio.run(_writer(Verbose(), hook).write(_batch([1])))
    reason = hook.calls[0][0].reason
    assert len(reason) == 1000 and reason.startswith("Code: 27. Cannot parse input: xx")
    assert reason.endswith("x…")
