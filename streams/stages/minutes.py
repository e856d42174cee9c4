"""Minutes: the per-minute aggregates stage, from events to ``touchpoint_minute`` rows.

The cells and windows are in ``rules/aggregates.py`` and the rows of a batch in
``rules/minute_rows.py`` (both pure); this stage feeds them and stores what they return,
exactly once for readers. It reads ``touchpoints.unresolved``, where every copy of an
event lands in the same partition (keyed by the event's strongest identifier), in
batches, with windows of their own per partition; for each batch it writes the final
rows of the minutes that closed and the provisional and late rows it changed, and every
``STATE_SECONDS`` it stores what changed in the windows in the changelog-backed table
``touchpoint-minutes`` (a head per input partition and an entry per late cell, in that
partition; ``MinuteStage.changes``) before acknowledging the records they include. A
batch whose partition was revoked meanwhile is dropped: the next owner reads it again.
Why it reads that log and how and when it stores its windows is in
docs/design/aggregates-and-attribution.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Final, cast

import faust

from touchpoint.schemas.codec import codec_for
from touchpoint.sinks.base import Batch
from touchpoint.sinks.tables import TOUCHPOINT_MINUTE_LATE_RAW, TOUCHPOINT_MINUTE_RAW
from touchpoint.sinks.writer import RetryingWriter
from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.aggregates import LATE_COLUMNS, MINUTE_COLUMNS
from touchpoint.streams.rules.minute_rows import LATE_PREFIX, MinuteStage
from touchpoint.streams.runtime import changelog
from touchpoint.streams.runtime.batches import batch_stream, decoded
from touchpoint.streams.runtime.consumer import is_current, only_current
from touchpoint.streams.runtime.outbox import make_current

__all__ = ["MINUTE_TABLE", "STATE_SECONDS", "Unstored", "register"]

log = logging.getLogger(__name__)

#: The Faust table holding the windows (one key: the input partition).
MINUTE_TABLE: Final = "touchpoint-minutes"
#: Longest time counted events wait before the windows holding them are stored.
STATE_SECONDS: Final = 5.0


class Unstored:
    """Events counted into windows not stored yet, and when the windows are due.

    The windows are stored at most every ``every`` seconds (``clock`` time) and the
    events are acknowledged only after that, so a crash or a rebalance never commits
    an offset past what the stored windows hold.
    """

    def __init__(self, every: float = STATE_SECONDS,
                 clock: Any = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.events: list[faust.EventT] = []
        self.partitions: dict[int, faust.EventT] = {}  # whose windows changed: their last event
        self.stored_at = clock()

    def add(self, partition: int, events: Sequence[faust.EventT]) -> None:
        """Note a batch counted into ``partition``'s windows."""
        self.events.extend(events)
        self.partitions[partition] = events[-1]

    def due(self) -> bool:
        """Whether there is something to store, and the last store is ``every`` s ago."""
        return bool(self.events) and self.clock() - self.stored_at >= self.every

    def take(self) -> tuple[dict[int, faust.EventT], list[faust.EventT]]:
        """The partitions to store, with an event of each; the events to acknowledge after."""
        taken = self.partitions, self.events
        self.partitions, self.events = {}, []
        self.stored_at = self.clock()
        return taken

    def drop(self) -> None:
        """Forget everything (revoked: the next owner reads these events again)."""
        self.partitions, self.events = {}, []


def register(app: faust.App, *, unresolved: faust.TopicT, writer: RetryingWriter,
             rules: complaints.Rules, grace: timedelta, partitions: int, batch_size: int,
             flush_seconds: float, stats: dict[str, int]) -> None:
    """Add the per-minute aggregates agent and its table to ``app``."""
    # partitioned as its input; the app's tables are changelog.Table (app.py)
    table = cast(changelog.Table, app.Table(MINUTE_TABLE, partitions=partitions,
                                            key_type=str))
    codec = codec_for("event")
    stages: dict[int, MinuteStage] = {}  # per partition, loaded from the table on first use
    unstored = Unstored()
    records = batch_stream(app, unresolved)  # in batches, past Faust's streams (batches.py)
    lock = asyncio.Lock()  # one batch or one store at a time

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types sync receivers
    async def _forget(sender: Any, *args: Any, **kwargs: Any) -> None:
        # The table is the truth: whoever owns a partition next starts from it.
        stages.clear()
        unstored.drop()

    async def store() -> None:
        """Store the changed windows, then acknowledge the events they hold."""
        partitions, events = unstored.take()
        for partition, last in sorted(partitions.items()):
            if not is_current(app, last.message):
                continue  # revoked meanwhile: dropped, the partition's next owner reads on
            stage = stages.get(partition)
            if stage is not None:
                make_current(last)  # the changelog partition is the input's (outbox.py)
                writes = stage.changes().writes()  # in the order that survives a cut
                head = False
                try:
                    for name, value in writes:
                        if name is None:
                            table[str(partition)] = value
                            head = True
                        elif value is None:
                            table.del_in(partition, f"{partition}/{name}")
                        else:
                            table[f"{partition}/{name}"] = value
                except BaseException:
                    stage.not_stored(head=head)  # the windows stay; the next store writes them
                    raise
        records.ack_all(events)

    @app.agent(unresolved, name="touchpoint.minutes")
    async def minutes(stream: faust.StreamT[bytes]) -> None:
        async for taken in records.take(batch_size, within=flush_seconds):
            # Records fetched before a rebalance are dropped: the partition's owner now
            # reads them again, in order, from the committed offset.
            events = list(only_current(app, cast(Sequence[faust.EventT], taken)))
            async with lock:
                by_partition: dict[int, list[faust.EventT]] = {}
                for event in events:
                    by_partition.setdefault(event.message.partition, []).append(event)
                # Every partition's rows go into one insert a table: an insert costs the
                # warehouse milliseconds however few its rows (a part to write, and to
                # merge later), and a batch holds every partition of the worker. Rows of
                # two partitions never share a key (their ``part`` differs).
                minute_rows: list[tuple[Any, ...]] = []
                late_rows: list[tuple[Any, ...]] = []
                counted: list[tuple[int, list[faust.EventT]]] = []
                for partition, group in sorted(by_partition.items()):
                    if not is_current(app, group[-1].message):
                        break  # revoked while this task waited: the rest is stale
                    stage = stages.get(partition)
                    if stage is None:
                        stage = stages[partition] = MinuteStage(rules, grace=grace,
                                                                part=partition, stats=stats)
                        stage.load(table.get_in(partition, str(partition)),
                                   table.items_in(partition, f"{partition}/{LATE_PREFIX}"))
                    minutes_of, late_of = stage.add(decoded(e, codec.decode) for e in group)
                    minute_rows += minutes_of
                    late_rows += late_of
                    counted.append((partition, group))
                for name, columns, rows in ((TOUCHPOINT_MINUTE_RAW, MINUTE_COLUMNS, minute_rows),
                                            (TOUCHPOINT_MINUTE_LATE_RAW, LATE_COLUMNS,
                                             late_rows)):
                    if rows:
                        await writer.write(Batch(name, columns, rows,
                                                 Batch.token_for_rows(name, rows)))
                for partition, group in counted:
                    # revoked while the rows were written: dropped, the next owner reads
                    # the partition again from its committed offset
                    if is_current(app, group[-1].message):
                        unstored.add(partition, group)
                if unstored.due():
                    await store()

    @app.timer(interval=1.0, name="touchpoint.minutes.store")
    async def store_when_quiet() -> None:
        # The last batch before a pause is stored (and acknowledged) here.
        async with lock:
            if unstored.due():
                await store()
