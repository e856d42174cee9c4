"""Minute rows: a batch of events counted into one partition's windows, rows out.

Pure, no Kafka and no Faust: :class:`MinuteStage` holds the
:class:`~touchpoint.streams.rules.aggregates.MinuteWindows` of one input partition, counts
a batch of normalized events into them and returns the ``touchpoint_minute_raw`` and
``touchpoint_minute_late_raw`` rows to upsert, one per key, and what to write to the
table that keeps the windows (:class:`Changes`): a head, and each late cell under an
entry of its own, so a store rewrites what changed, not the day of late cells a backlog
leaves. The minutes stage (``streams/stages/minutes.py``) feeds it from Kafka and stores
its changes and rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final, NamedTuple

import orjson

from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.aggregates import (
    MinuteCell,
    MinuteKey,
    MinuteWindows,
    is_negative,
    late_values,
)
from touchpoint.streams.rules.identity import provisional_customer_id

__all__ = ["LATE_PREFIX", "Changes", "MinuteStage"]

#: Names of late-cell entries start with this: ``late/<digest of the cell's key>/<slot>``.
LATE_PREFIX: Final = "late/"


class Changes(NamedTuple):
    """A store's writes, in order: ``stale`` deleted, ``late``, ``head``, ``gone`` deleted.

    Late cells live in entries of their own, each in two slots: a change is written to
    the slot that does not hold the cell's current state, stamped with the store's
    generation, and the head that names that generation goes after it. So a store cut
    anywhere by a crash loads as the windows before it (entries of a later generation
    than the head are not read, and the slot beside each holds the cell as it was) or
    as the windows after it (cells deleted too late have stopped collecting by the
    head's watermark, and are dropped as they load). The entries a cut store left
    (``stale``) go before anything else, so none of them is ever taken for a later
    generation's.
    """

    stale: list[str]  # entry names to delete
    late: dict[str, list[Any]]  # entry name -> [generation, batch, cell data]
    head: dict[str, Any]
    gone: list[str]  # entry names to delete

    def writes(self) -> list[tuple[str | None, Any]]:
        """The writes in their order: (entry name, None: the head; value, None: delete)."""
        return [*((name, None) for name in self.stale), *self.late.items(),
                (None, self.head), *((name, None) for name in self.gone)]


def _entry(key: Iterable[Any], slot: int) -> str:
    digest = hashlib.blake2b(orjson.dumps(list(key)), digest_size=12).hexdigest()
    return f"{LATE_PREFIX}{digest}/{slot}"


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
        self.generation = 0  # of the last store
        self._slots: dict[tuple[Any, ...], int] = {}  # late cell key -> slot of its state
        self._stale: list[str] = []  # entries a store cut short left
        # what the last changes() took: changed and gone cells, their slots before, stale
        self._taken: tuple[set[Any], set[Any], dict[Any, int | None], list[str]] = \
            (set(), set(), {}, [])

    def load(self, head: Mapping[str, Any] | None,
             entries: Iterable[tuple[str, Any]] = ()) -> None:
        """Continue from what :meth:`changes` stored: the head and the late-cell entries.

        ``head`` None: from the start. An entry of a later generation than the head's is
        left by a store cut short: not read (the other slot of its cell has the cell's
        state), and deleted first at the next store.
        """
        self.windows = MinuteWindows(part=self.part, grace=self.grace)
        self.generation, self._slots, self._stale = 0, {}, []
        stored = 0 if head is None else int(head["generation"])
        found: dict[tuple[Any, ...], tuple[int, int, list[Any]]] = {}
        for name, (stamp, batch, cell) in entries:
            # no generation is used twice: the next store's is past every stamp found
            self.generation = max(self.generation, stamp)
            key, slot = tuple(cell["key"]), int(name.rsplit("/", 1)[1])
            if stamp > stored:
                self._stale.append(name)
            elif stamp > found.get(key, (-1,))[0]:
                found[key] = (stamp, slot, [batch, cell])
        if head is not None:
            self.windows = MinuteWindows.from_dict(
                head, part=self.part, grace=self.grace,
                late=[value for _, _, value in found.values()])
        self.generation = max(self.generation, stored)
        self._slots = {key: slot for key, (_, slot, _) in found.items()}

    def changes(self) -> Changes:
        """What to store since the last call (:class:`Changes`), as the next generation."""
        self.generation += 1
        changed, gone = self.windows.take_late_changes()
        slots = {key: self._slots.get(key) for key in (*changed, *gone)}
        late = {}
        for key, (batch, cell) in changed.items():
            slot = self._slots[key] = 1 - self._slots.get(key, 1)
            late[_entry(key, slot)] = [self.generation, batch, cell]
        names = []
        for key in sorted(gone):
            if self._slots.pop(key, None) is not None:
                names += [_entry(key, 0), _entry(key, 1)]
        head = self.windows.to_dict(late=False)
        head["generation"] = self.generation
        stale, self._stale = self._stale, []
        self._taken = (set(changed), set(gone), slots, stale)
        return Changes(stale, late, head, names)

    def not_stored(self, *, head: bool) -> None:
        """The writes of the last :meth:`changes` failed part-way: take them again next time.

        ``head``: whether the head was written. If it was, the cells it names are in the
        table and only the deletions after it are to do again; if not, the slots are as
        before, so the next store writes the cells where they would have gone.
        """
        changed, gone, slots, stale = self._taken
        windows = self.windows
        windows.late_gone |= {key for key in gone if key not in windows.late}
        if head:
            for key in gone:  # deleted again next time, if they were ever written
                slot = slots[key]
                if slot is not None:
                    self._slots[key] = slot
            return
        for key, slot in slots.items():
            if slot is None:
                self._slots.pop(key, None)
            else:
                self._slots[key] = slot
        windows.late_changed |= {key for key in changed if key in windows.late}
        self._stale = stale + self._stale

    def add(self, events: Iterable[dict[str, Any]]
            ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Count a batch of normalized events; return (minute rows, late rows) to upsert.

        Minute rows are the final rows of minutes that closed and the provisional rows
        of open minutes the batch changed; late rows those of late cells it changed. One
        row per key, the latest.
        """
        minutes: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        # late cells changed, by key and batch: a row each once the batch is counted (a
        # cell that stops collecting meanwhile is kept here as it stopped)
        late: dict[tuple[MinuteKey, int], MinuteCell] = {}
        touched: set[MinuteKey] = set()
        part = self.part
        for event in events:
            added = self.windows.add(event, negative=is_negative(event, self.rules),
                                     customer_id=provisional_customer_id(event))
            self.stats[added.status] = self.stats.get(added.status, 0) + 1
            if added.key is not None:
                touched.add(added.key)
            for closed in added.closing:
                minutes[(*closed.key, part)] = closed.values(part)
            if added.late_cell is not None:
                batch, late_cell = added.late_cell
                late[late_cell.key, batch] = late_cell
        for key in touched:
            cell = self.windows.open.get(key)
            if cell is not None:  # else it closed in this batch: its final row is in
                minutes[(*key, part)] = cell.values(part)
        return ([values for _, values in sorted(minutes.items())],
                [late_values(cell, batch, part) for (_, batch), cell in sorted(late.items())])
