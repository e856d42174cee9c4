"""Retrying writer: hands batches to a sink off the event loop, backing off while it is down.

The stream stages call :meth:`RetryingWriter.write` and only acknowledge their Kafka
records after it returns, so offsets are committed only for stored rows. While the
warehouse is unreachable ``write`` does not return: the stage stops taking records,
Kafka keeps them, and nothing is dropped. A stop request ends the wait without storing
and without acknowledging, so the records are read again after restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from touchpoint.exceptions import WarehouseError, WarehouseUnavailable
from touchpoint.sinks.base import Batch, Sink

__all__ = ["RetryingWriter", "WriterStats"]

log = logging.getLogger(__name__)


@dataclass
class WriterStats:
    """What the writer has done, for /status and the demo's summary."""

    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_error_at: float | None = None
    retrying_since: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {
            "rows": dict(self.rows), "batches": self.batches, "retries": self.retries,
            "failures": dict(self.failures), "last_error": self.last_error,
            "last_error_at": self.last_error_at, "retrying_since": self.retrying_since,
        }


class RetryingWriter:
    """Writes batches through one sink, in order, retrying with capped exponential backoff."""

    def __init__(self, sink: Sink, *, initial_backoff: float = 0.5, max_backoff: float = 30.0,
                 stats: WriterStats | None = None) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("backoff must be positive and max_backoff >= initial_backoff")
        self.sink = sink
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stats = stats or WriterStats()
        # One thread: the sink's connection is used by one caller at a time, and the
        # blocking driver / embedded engine never runs on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")

    async def write(self, batch: Batch) -> None:
        """Store ``batch``; retries until it is stored. Cancellation leaves it unstored."""
        if not batch.rows:
            return
        loop = asyncio.get_running_loop()
        delay = self.initial_backoff
        while True:
            try:
                await loop.run_in_executor(self._executor, self.sink.write, batch)
            except (WarehouseUnavailable, WarehouseError) as exc:
                permanent = not isinstance(exc, WarehouseUnavailable)
                self._note_failure(batch, exc, delay, permanent=permanent)
                # jitter: workers sharing a warehouse do not retry in lockstep
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_backoff)
                continue
            break
        if self.stats.retrying_since is not None:
            log.warning("warehouse writes resumed: %d rows into %s", len(batch.rows), batch.table)
        self.stats.retrying_since = None
        self.stats.rows[batch.table] += len(batch.rows)
        self.stats.batches += 1

    def _note_failure(self, batch: Batch, exc: Exception, delay: float, *, permanent: bool) -> None:
        now = time.time()
        self.stats.retries += 1
        self.stats.failures[type(exc).__name__] += 1
        self.stats.last_error = str(exc)
        self.stats.last_error_at = now
        if self.stats.retrying_since is None:
            self.stats.retrying_since = now
        # A refused statement will not fix itself, but dropping the rows would lose data
        # and crashing would stop every stage: keep the records in Kafka, say so loudly.
        level = logging.ERROR if permanent else logging.WARNING
        log.log(level, "insert of %d rows into %s failed (%s); retrying in %.1fs",
                len(batch.rows), batch.table, exc, delay)

    def close(self) -> None:
        """Close the sink and its thread."""
        self._executor.shutdown(wait=True)
        self.sink.close()
