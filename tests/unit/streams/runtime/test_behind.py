"""Behind: records stored in batches behind their stage, acknowledged once stored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from touchpoint.sinks.base import Batch
from touchpoint.streams.runtime.behind import Behind

# --- Behind: the events stored behind the stage that reads them --------------------------

class _Writer:
    """The retrying writer as Behind uses it: writes wait while ``open`` is clear."""

    def __init__(self) -> None:
        self.written: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()

    async def write(self, batch: Batch) -> None:
        await self.open.wait()
        self.written.append([row[0] for row in batch.rows])


class _Stream:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.enable_acks = True  # Faust's default: each record acknowledged as it passes

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.value)
        return True


def _rows(events: Sequence[Any]) -> list[Batch]:
    return [Batch("t", ("id",), [(e.value,) for e in events], "token")]


def _rig(batch_size: int = 3, now: float = 0.0) -> tuple[_Writer, _Stream, list[float], Behind]:
    """A writer, a stream, a settable clock, and a Behind (flush_seconds 1) over them."""
    writer, stream, clock = _Writer(), _Stream(), [now]
    stored = Behind(cast(Any, writer), _rows, batch_size=batch_size, flush_seconds=1.0,
                    clock=lambda: clock[0])
    return writer, stream, clock, stored


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def _event(value: str) -> Any:
    return SimpleNamespace(value=value)


def test_records_are_acknowledged_only_once_their_batch_is_stored() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig()
        async with stored.running(cast(Any, stream)):
            assert stream.enable_acks is False  # only Behind acknowledges them
            writer.open.clear()  # the warehouse is slow
            for value in "abcd":
                await stored.add(_event(value))
            await _settle()
            assert (writer.written, stream.acked) == ([], [])  # full batch handed over
            writer.open.set()
            await _settle()
            assert writer.written == [["a", "b", "c"]]
            assert stream.acked == ["a", "b", "c"]  # "d" waits for its batch

    asyncio.run(scenario())


def test_a_stage_batch_added_at_once_is_cut_into_batches_as_added_one_by_one() -> None:
    async def scenario() -> None:
        writer, stream, clock, stored = _rig(batch_size=3, now=10.0)
        async with stored.running(cast(Any, stream)):
            await stored.add(_event("a"))
            clock[0] = 10.5
            await stored.add_all([_event(v) for v in "bcdefgh"])  # fills two, starts one
            await stored.add_all([])
            await _settle()
            assert writer.written == [["a", "b", "c"], ["d", "e", "f"]]
            assert stream.acked == ["a", "b", "c", "d", "e", "f"]
            clock[0] = 11.4  # "g" came at 10.5: its batch is not due yet
            await stored.flush_due()
            await _settle()
            assert len(writer.written) == 2
            clock[0] = 11.5
            await stored.flush_due()
            await _settle()
            assert writer.written[2:] == [["g", "h"]]
            assert stream.acked == list("abcdefgh")

    asyncio.run(scenario())


def test_a_partial_batch_goes_once_its_first_record_is_flush_seconds_old() -> None:
    async def scenario() -> None:
        writer, stream, clock, stored = _rig(now=10.0)
        async with stored.running(cast(Any, stream)):
            await stored.add(_event("a"))
            clock[0] = 10.9
            await stored.add(_event("b"))
            await stored.flush_due()
            await _settle()
            assert writer.written == []
            clock[0] = 11.0  # a second after "a"
            await stored.flush_due()
            await _settle()
            assert (writer.written, stream.acked) == ([["a", "b"]], ["a", "b"])

    asyncio.run(scenario())


def test_a_stage_two_batches_ahead_of_the_warehouse_waits() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=1)
        async with stored.running(cast(Any, stream)):
            writer.open.clear()  # an outage
            await stored.add(_event("a"))  # being written
            await _settle()
            await stored.add(_event("b"))  # waiting in the queue
            third = asyncio.ensure_future(stored.add(_event("c")))
            await _settle()
            assert not third.done()  # the stage is paused
            writer.open.set()
            await asyncio.wait_for(third, 1)
            await _settle()
            assert writer.written == [["a"], ["b"], ["c"]]
            assert stream.acked == ["a", "b", "c"]

    asyncio.run(scenario())


def test_records_not_stored_when_the_stage_stops_stay_unacknowledged() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=2)
        async with stored.running(cast(Any, stream)):
            writer.open.clear()
            for value in "abc":
                await stored.add(_event(value))
            await _settle()
        writer.open.set()
        await _settle()
        assert (writer.written, stream.acked) == ([], [])
        await stored.add(_event("d"))
        await stored.flush_due()  # not running: nothing handed over, nothing waits
        assert stream.acked == []

    asyncio.run(scenario())


def test_a_writer_that_fails_stops_the_stage_instead_of_leaving_it_waiting() -> None:
    async def scenario() -> None:
        writer, stream, _, stored = _rig(batch_size=1)

        async def broken(batch: Batch) -> None:
            raise KeyError("a bug in a row")

        writer.write = broken  # type: ignore[method-assign]
        async with stored.running(cast(Any, stream)):
            await stored.add(_event("a"))  # taken by the writing task, which fails
            with pytest.raises(KeyError, match="a bug in a row"):
                for value in "bcd":  # without the failure, "d" would wait forever
                    await asyncio.wait_for(stored.add(_event(value)), 1)
        assert stream.acked == []

    asyncio.run(scenario())
