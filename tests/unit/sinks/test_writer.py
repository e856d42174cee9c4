from __future__ import annotations

import asyncio

import pytest

from touchpoint.exceptions import WarehouseError, WarehouseUnavailable
from touchpoint.sinks.base import Batch, Sink
from touchpoint.sinks.writer import RetryingWriter


class FlakySink(Sink):
    """Fails with the given errors first, then stores."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.stored: list[Batch] = []
        self.attempts = 0
        self.closed = False

    def write(self, batch: Batch) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.stored.append(batch)

    def close(self) -> None:
        self.closed = True


BATCH = Batch("t", ("a",), [(1,), (2,)], "tok")


def test_retries_until_stored_then_counts() -> None:
    sink = FlakySink([WarehouseUnavailable("down"), WarehouseUnavailable("down"),
                      WarehouseError("refused")])
    writer = RetryingWriter(sink, initial_backoff=0.001, max_backoff=0.004)
    asyncio.run(writer.write(BATCH))
    assert sink.stored == [BATCH]
    assert sink.attempts == 4
    stats = writer.stats
    assert (stats.retries, dict(stats.failures), dict(stats.rows), stats.batches) == \
        (3, {"WarehouseUnavailable": 2, "WarehouseError": 1}, {"t": 2}, 1)
    assert stats.last_error == "refused" and stats.retrying_since is None
    writer.close()
    assert sink.closed


def test_cancelled_while_retrying_leaves_the_batch_unstored() -> None:
    sink = FlakySink([WarehouseUnavailable("down")] * 1000)
    writer = RetryingWriter(sink, initial_backoff=0.01, max_backoff=0.01)

    async def scenario() -> None:
        task = asyncio.create_task(writer.write(BATCH))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert sink.stored == []
    assert writer.stats.rows == {}
    assert writer.stats.retrying_since is not None
    writer.close()


def test_backoff_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_backoff >= initial_backoff"):
        RetryingWriter(FlakySink([]), initial_backoff=2, max_backoff=1)
