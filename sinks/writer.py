"""Retrying writer: hands batches to a sink off the event loop, backing off while it is down.

The stream stages call :meth:`RetryingWriter.write` and only acknowledge their Kafka
records after it returns, so offsets are committed only for stored rows. While the
warehouse is unreachable ``write`` does not return: the stage stops taking records,
Kafka keeps them, and nothing is dropped. A stop request ends the wait without storing
and without acknowledging, so the records are read again after restart.

Rows the warehouse refuses for their values (:class:`WarehouseRejected`: out of range,
wrong type, unparseable) would be refused at every retry, and would stop storage for
good. With a ``refused`` hook, the writer splits such a batch in halves until the
refused rows stand alone, stores the rest, and hands the refused rows to the hook (in
a worker, it sends them to the dead-letter topic) before ``write`` returns. Every other
failure is retried: unreachable or overloaded warehouses quietly, refused statements
(unknown table, no permission) loudly, as nothing about them is the rows' fault.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from touchpoint.exceptions import WarehouseError, WarehouseRejected, WarehouseUnavailable
from touchpoint.sinks.base import Batch, Sink

__all__ = ["REASON_CHARS", "RefusedHandler", "RefusedRow", "RetryingWriter", "WriterStats",
           "bounded"]

log = logging.getLogger(__name__)

#: Longest reason kept for a refused row (the engine's message can quote kilobytes of rows).
REASON_CHARS = 1000


@dataclass(frozen=True)
class RefusedRow:
    """A row the warehouse refused for its values, and the engine's reason (bounded)."""

    table: str
    columns: tuple[str, ...]
    row: tuple[Any, ...]
    reason: str

    def values(self) -> dict[str, Any]:
        """The row as column name -> value."""
        return dict(zip(self.columns, self.row, strict=False))


#: Takes the refused rows of one write somewhere safe (the dead-letter topic) and returns
#: once they are there; raises if they are not (the writer tries again).
RefusedHandler = Callable[[Sequence[RefusedRow]], Awaitable[None]]


@dataclass
class WriterStats:
    """What the writer has done, for /status and the demo's summary."""

    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_error_at: float | None = None
    retrying_since: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {
            "rows": dict(self.rows), "batches": self.batches, "retries": self.retries,
            "failures": dict(self.failures), "refused": dict(self.refused),
            "last_error": self.last_error, "last_error_at": self.last_error_at,
            "retrying_since": self.retrying_since,
        }


class RetryingWriter:
    """Writes batches through one sink, in order, retrying with capped exponential backoff.

    ``refused`` receives the rows the warehouse refuses for their values; without it,
    such a batch is retried like any refused statement. Rows of the ``retry_refused``
    tables never go to the hook (the dead letters' own table: a refused dead letter sent
    to the dead-letter topic would come back to it, for ever): they are retried loudly.
    """

    def __init__(self, sink: Sink, *, initial_backoff: float = 0.5, max_backoff: float = 30.0,
                 stats: WriterStats | None = None, refused: RefusedHandler | None = None,
                 retry_refused: Collection[str] = ()) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("backoff must be positive and max_backoff >= initial_backoff")
        self.sink = sink
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stats = stats or WriterStats()
        self.refused = refused
        self.retry_refused = frozenset(retry_refused)
        # One thread: the sink's connection is used by one caller at a time, and the
        # blocking driver / embedded engine never runs on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")

    async def write(self, batch: Batch) -> None:
        """Store ``batch``; retries until each row is stored or, if refused, handed over.

        Cancellation leaves the rest unstored (and the records unacknowledged).
        """
        if not batch.rows:
            return
        refused: list[RefusedRow] = []
        await self._store(batch, refused)
        if refused:
            await self._hand_over(refused)
            self.stats.refused[batch.table] += len(refused)
        if self.stats.retrying_since is not None:
            log.warning("warehouse writes resumed: %d rows into %s", len(batch.rows), batch.table)
        self.stats.retrying_since = None
        self.stats.rows[batch.table] += len(batch.rows) - len(refused)
        self.stats.batches += 1

    async def _store(self, batch: Batch, refused: list[RefusedRow]) -> None:
        """Store ``batch``, or its rows but the refused ones, which go to ``refused``."""
        try:
            await self._attempt(batch)
        except WarehouseRejected as exc:
            if len(batch.rows) == 1:
                reason = bounded(str(exc))
                log.warning("the warehouse refused a row of %s: %s", batch.table, reason)
                refused.append(RefusedRow(batch.table, batch.columns, tuple(batch.rows[0]),
                                          reason))
                return
            # Halves, each with its own deterministic token: k refused rows among n cost
            # about 2·k·log2(n) inserts, and every other row is stored once.
            middle = len(batch.rows) // 2
            await self._store(batch.part(0, middle), refused)
            await self._store(batch.part(middle, len(batch.rows)), refused)

    async def _attempt(self, batch: Batch) -> None:
        """One insert of ``batch``, retried until stored; raises if its rows are refused."""
        loop = asyncio.get_running_loop()
        delay = self.initial_backoff
        while True:
            try:
                await loop.run_in_executor(self._executor, self.sink.write, batch)
            except WarehouseError as exc:
                if isinstance(exc, WarehouseRejected) and self._splits(batch):
                    raise
                self._note_failure(batch, exc, delay,
                                   permanent=not isinstance(exc, WarehouseUnavailable))
                delay = await self._pause(delay)
                continue
            return

    async def _pause(self, delay: float) -> float:
        """Wait about ``delay`` seconds; the next, doubled delay (at most ``max_backoff``)."""
        # jitter: workers sharing a warehouse do not retry in lockstep
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        return min(delay * 2, self.max_backoff)

    def _splits(self, batch: Batch) -> bool:
        return self.refused is not None and batch.table not in self.retry_refused

    async def _hand_over(self, refused: list[RefusedRow]) -> None:
        """Give the refused rows to the hook; retried until it took them (never dropped)."""
        assert self.refused is not None
        delay = self.initial_backoff
        while True:
            try:
                await self.refused(refused)
            except Exception as exc:  # Kafka down, or a bug: the rows are kept, say so
                self._note_failure(None, exc, delay, permanent=True)
                delay = await self._pause(delay)
                continue
            return

    def _note_failure(self, batch: Batch | None, exc: Exception, delay: float, *,
                      permanent: bool) -> None:
        now = time.time()
        self.stats.retries += 1
        self.stats.failures[type(exc).__name__] += 1
        self.stats.last_error = bounded(str(exc))
        self.stats.last_error_at = now
        if self.stats.retrying_since is None:
            self.stats.retrying_since = now
        # A refused statement will not fix itself, but dropping the rows would lose data
        # and crashing would stop every stage: keep the records in Kafka, say so loudly.
        level = logging.ERROR if permanent else logging.WARNING
        if batch is None:
            log.log(level, "refused rows could not be handed over (%s); retrying in %.1fs",
                    bounded(repr(exc)), delay)
        else:
            log.log(level, "insert of %d rows into %s failed (%s); retrying in %.1fs",
                    len(batch.rows), batch.table, bounded(str(exc)), delay)

    def close(self) -> None:
        """Close the sink and its thread."""
        self._executor.shutdown(wait=True)
        self.sink.close()


def bounded(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + "…"
