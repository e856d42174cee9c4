"""The sink contract: write a batch, flush, close.

A sink never keeps or silently drops a failed batch: ``write`` either stores every row
or raises (:class:`~touchpoint.exceptions.WarehouseUnavailable` when a retry may help,
:class:`~touchpoint.exceptions.WarehouseRejected` when some rows' values cannot be stored).
Retrying and backpressure live in :mod:`touchpoint.sinks.writer`, not in each backend.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Batch", "Sink", "WarehouseSink"]


@dataclass(frozen=True)
class Batch:
    """Rows for one table, with a token that is the same whenever the batch is the same."""

    table: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    token: str

    @staticmethod
    def token_for(table: str, positions: Sequence[tuple[str, int, int]]) -> str:
        """Deterministic token from the (topic, partition, offset) of the source records.

        A retried batch gets the same token, so an engine with insert deduplication
        stores it once even when the first attempt did succeed but its answer was lost.
        """
        digest = hashlib.sha256(table.encode())
        for topic, partition, offset in sorted(positions):
            digest.update(f"|{topic}:{partition}:{offset}".encode())
        return digest.hexdigest()

    @staticmethod
    def token_for_rows(table: str, rows: Sequence[Sequence[Any]]) -> str:
        """Deterministic token from the rows themselves (complete, versioned rows).

        For tables whose rows are recomputed state rather than copies of source
        records: the same rows give the same token (a repeat may be dropped, harmlessly),
        different rows never share one.
        """
        digest = hashlib.sha256(table.encode())
        for row in sorted(map(_row_text, rows)):
            digest.update(b"|" + row)
        return digest.hexdigest()

    def part(self, start: int, stop: int) -> Batch:
        """Rows ``start:stop`` as a batch of their own, its token derived from this one's.

        The same part of the same batch always gets the same token, so a retried part is
        deduplicated like a retried batch, and no part shares a token with its batch.
        """
        if not 0 <= start < stop <= len(self.rows):
            raise ValueError(f"part {start}:{stop} is not within the batch's {len(self.rows)} rows")
        token = hashlib.sha256(f"{self.token}|{start}:{stop}".encode()).hexdigest()
        return Batch(self.table, self.columns, self.rows[start:stop], token)


#: orjson writes these types itself; with them passed through, a value of theirs raises
#: and the row is written with ``repr`` instead, which tells them from text.
_PLAIN_ONLY = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
               | orjson.OPT_PASSTHROUGH_SUBCLASS)


def _row_text(row: Sequence[Any]) -> bytes:
    """A row's values as bytes that differ whenever the values do.

    orjson's JSON, a few times faster than ``repr`` (a row token is made for every
    minute and exposure row written), or ``repr`` where JSON would blur two rows: a NaN
    or infinity (written as null, so one null more than the row has Nones), an integer
    beyond 64 bits or a value of another type (which raise).
    """
    try:
        text = orjson.dumps(row, option=_PLAIN_ONLY)
    except TypeError:
        return b"r" + repr(tuple(row)).encode()
    if b"null" in text and text.count(b"null") != row.count(None):
        return b"r" + repr(tuple(row)).encode()  # also for text holding "null": slower, exact
    return text


class Sink(ABC):
    """Somewhere batches of rows are stored."""

    @abstractmethod
    def write(self, batch: Batch) -> None:
        """Store every row of ``batch`` or raise; blocking."""

    def flush(self) -> None:  # noqa: B027 - optional hook, most sinks write through
        """Make written batches durable (no-op for sinks that write through)."""

    @abstractmethod
    def close(self) -> None:
        """Release resources."""


class WarehouseSink(Sink):
    """Writes batches into ClickHouse (server or embedded) through a Warehouse."""

    def __init__(self, warehouse: Any) -> None:
        self.warehouse = warehouse

    def write(self, batch: Batch) -> None:
        """Insert the batch as one columnar insert."""
        self.warehouse.insert(batch.table, batch.columns, batch.rows, dedup_token=batch.token)

    def close(self) -> None:
        """Close the warehouse connection."""
        self.warehouse.close()
