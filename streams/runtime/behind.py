"""Behind: a stage's records stored in the warehouse behind it, acknowledged once stored.

A stage that reads a topic hands each record it is done with to a :class:`Behind`,
which writes the records' rows in batches while the stage goes on, at most two batches
behind, and acknowledges the records on the stage's stream only once their rows are
stored; Faust's own acknowledgement of the stream is turned off. Why, and what it
replaces in Faust: ``docs/design/runtime.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import faust

from touchpoint.sinks.base import Batch
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams.runtime.batches import BatchStream

__all__ = ["Acking", "Behind", "behind"]


class Acking(Protocol):
    """What records are acknowledged on: a Faust stream, or a batch stream (``batches.py``)."""

    enable_acks: bool

    async def ack(self, event: faust.EventT) -> bool:
        """Acknowledge ``event``."""


class Behind:
    """A stage's records stored behind it, in batches, each acknowledged once stored.

    The stage that reads a topic hands every record it is done with to :meth:`add`. A
    batch goes to the warehouse when it holds ``batch_size`` records, or when its first
    record is ``flush_seconds`` old (:meth:`flush_due`, called from a timer). Batches are
    written one at a time, in order, by the task :meth:`running` starts, while the stage
    goes on with the next records; a stage two batches ahead of the warehouse waits, so
    a warehouse outage pauses it. The records are acknowledged, on the stage's stream,
    once their rows are stored, and only then.
    """

    def __init__(self, writer: RetryingWriter,
                 to_batches: Callable[[Sequence[faust.EventT]], list[Batch]], *,
                 batch_size: int, flush_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.writer = writer
        self.to_batches = to_batches
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._pending: list[faust.EventT] = []
        self._since = 0.0
        self._batches: asyncio.Queue[list[faust.EventT]] | None = None
        self._task: asyncio.Future[None] | None = None

    @asynccontextmanager
    async def running(self, stream: Acking) -> AsyncIterator[None]:
        """Write batches and acknowledge their records on ``stream`` until the block ends.

        The stream stops acknowledging records itself as it moves on. (Faust's own
        acknowledgement, in its compiled stream iterator, would also bypass the consumer's
        generation check, ``streams/runtime/consumer.py``.)
        """
        stream.enable_acks = False
        self._batches = asyncio.Queue(maxsize=1)
        self._pending = []
        self._task = task = asyncio.ensure_future(self._write(stream, self._batches))
        try:
            yield
        finally:
            task.cancel()  # a batch not written stays unacknowledged: read again
            self._batches, self._task = None, None
            self._pending = []

    async def add(self, event: faust.EventT) -> None:
        """Store ``event`` with the next batch; wait if two batches are waiting already."""
        if not self._pending:
            self._since = self.clock()
        self._pending.append(event)
        if len(self._pending) >= self.batch_size:
            await self._hand_over()

    async def add_all(self, events: Sequence[faust.EventT]) -> None:
        """:meth:`add` each of ``events`` in order, in one call for a stage's whole batch."""
        at = 0
        while at < len(events):
            if not self._pending:
                self._since = self.clock()
            room = self.batch_size - len(self._pending)
            self._pending += events[at:at + room]
            at += room
            if len(self._pending) >= self.batch_size:
                await self._hand_over()

    async def flush_due(self) -> None:
        """Send the records gathered so far if the first is ``flush_seconds`` old."""
        if self._pending and self.clock() - self._since >= self.flush_seconds:
            await self._hand_over()

    async def _hand_over(self) -> None:
        batches, task = self._batches, self._task
        if batches is None or task is None:
            return  # not running (stopping): the records are read again
        events, self._pending = self._pending, []
        if not task.done() and not batches.full():
            batches.put_nowait(events)
            return
        # Wait for room, or for the writing task to end: it ends only by an error (a bug,
        # not an outage, which the writer retries), raised here so that it stops the
        # stage as it would have stopped a store agent, instead of the stage waiting on.
        put = asyncio.ensure_future(batches.put(events))
        await asyncio.wait({put, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            put.cancel()
            task.result()

    async def _write(self, stream: Acking,
                     batches: asyncio.Queue[list[faust.EventT]]) -> None:
        while True:
            events = await batches.get()
            for batch in self.to_batches(events):
                await self.writer.write(batch)  # returns only once stored
            # A record fetched before a rebalance is not counted by the consumer
            # (streams/runtime/consumer.py): its new owner reads and stores it again.
            if isinstance(stream, BatchStream):
                stream.ack_all(events)  # in one go
            else:
                for event in events:
                    await stream.ack(event)


def behind(app: faust.App, writer: RetryingWriter,
           to_batches: Callable[[Sequence[faust.EventT]], list[Batch]], *, name: str,
           batch_size: int, flush_seconds: float) -> Behind:
    """A :class:`Behind` writing ``to_batches`` of its records, its timer added to ``app``."""
    stored = Behind(writer, to_batches, batch_size=batch_size, flush_seconds=flush_seconds)

    @app.timer(interval=flush_seconds / 4, name=f"{name}.flush")
    async def flush_when_quiet() -> None:
        await stored.flush_due()

    return stored
