"""Minute rows: a batch of events counted into one partition's windows, rows out.

Pure, no Kafka and no Faust: :class:`MinuteStage` holds the
:class:`~touchpoint.streams.rules.aggregates.MinuteWindows` of one input partition, counts
a batch of normalized events into them and returns the ``touchpoint_minute_raw`` and
``touchpoint_minute_late_raw`` rows to upsert, one per key. The minutes stage
(``streams/stages/minutes.py``) feeds it from Kafka and stores its state and rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.aggregates import (
    LATE_COLUMNS,
    MINUTE_COLUMNS,
    MinuteKey,
    MinuteWindows,
    is_negative,
    minute_key,
    row_values,
)
from touchpoint.streams.rules.identity import provisional_customer_id

__all__ = ["MinuteStage"]

_MINUTE_KEY: Final = ("minute", "channel", "type", "store_id", "campaign_id", "part")


class MinuteStage:
    """Windows of one input partition: add a batch of events, get the rows to store.

    Kept apart from the agent so the rows of any sequence of batches, restarts
    included, are tested without Kafka.
    """

    def __init__(self, rules: complaints.Rules, *, grace: timedelta, part: int = 0,
                 stats: dict[str, int] | None = None) -> None:
        self.rules, self.grace, self.part = rules, grace, part
        self.stats = stats if stats is not None else {}
        self.windows = MinuteWindows(part=part, grace=grace)

    def load(self, stored: Mapping[str, Any] | None) -> None:
        """Continue from windows stored by :meth:`state` (``None``: from the start)."""
        self.windows = (MinuteWindows(part=self.part, grace=self.grace) if stored is None
                        else MinuteWindows.from_dict(stored, part=self.part, grace=self.grace))

    def state(self) -> dict[str, Any]:
        """The windows as plain data, for the table."""
        return self.windows.to_dict()

    def add(self, events: Iterable[Mapping[str, Any]]
            ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Count a batch of normalized events; return (minute rows, late rows) to upsert.

        Minute rows are the final rows of minutes that closed and the provisional rows
        of open minutes the batch changed; late rows those of late cells it changed. One
        row per key, the latest.
        """
        minutes: dict[tuple[Any, ...], dict[str, Any]] = {}
        late: dict[tuple[Any, ...], dict[str, Any]] = {}
        touched: set[MinuteKey] = set()
        for event in events:
            added = self.windows.add(event, negative=is_negative(event, self.rules),
                                     customer_id=provisional_customer_id(event))
            self.stats[added.status] = self.stats.get(added.status, 0) + 1
            if added.status == "counted":
                touched.add(minute_key(event))
            for row in added.closed:
                minutes[_key(row)] = row
            for row in added.late:
                late[(*_key(row), row["batch"])] = row
        for key in touched:
            cell = self.windows.open.get(key)
            if cell is not None:  # else it closed in this batch: its final row is in
                row = cell.row(self.part)
                minutes[_key(row)] = row
        return ([row_values(r, MINUTE_COLUMNS) for _, r in sorted(minutes.items())],
                [row_values(r, LATE_COLUMNS) for _, r in sorted(late.items())])


def _key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[name] for name in _MINUTE_KEY)
