"""Per-minute aggregates: touchpoints per minute x channel x type x store x campaign.

Pure, no Kafka and no Faust. The minutes stage feeds every event to a
:class:`MinuteWindows` (kept in a changelog-backed table through ``to_dict`` /
``from_dict``) and upserts the rows it returns into ``touchpoint_minute_raw``
(:data:`MINUTE_COLUMNS`) and ``touchpoint_minute_late_raw`` (:data:`LATE_COLUMNS`). A
:class:`MinuteCell` holds one key's figures for one minute of event time and remembers
the ids of the events it counted, so a redelivered event is not counted twice; each row
is complete and versioned, so writing it again changes nothing. A minute closes once the
watermark (latest event time minus ``grace``) passes its end; a later event of that
minute goes to a late cell instead. Why this is exact for readers is in
docs/design/aggregates-and-attribution.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, NamedTuple

from touchpoint.exceptions import ConfigError
from touchpoint.schemas.contract import CHANNELS
from touchpoint.streams.rules.complaints import Rules, to_millis

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_LATE_RETAIN",
    "DEFAULT_RETAIN",
    "DEFAULT_RETAIN_EVENTS",
    "LATE_COLUMNS",
    "MINUTE_COLUMNS",
    "MINUTE_MS",
    "Added",
    "MinuteCell",
    "MinuteKey",
    "MinuteWindows",
    "is_negative",
    "late_row",
    "late_values",
    "minute_key",
    "negative_reasons",
    "row_values",
]

MINUTE_MS: Final = 60_000
DEFAULT_GRACE: Final = timedelta(minutes=2)
DEFAULT_RETAIN: Final = timedelta(minutes=5)
DEFAULT_RETAIN_EVENTS: Final = 10_000
DEFAULT_LATE_RETAIN: Final = timedelta(days=1)
_FIXED: Final = 10_000  # revenue in 1/10,000 of the currency unit
_PURCHASES: Final = frozenset({("web", "purchase"), ("store", "purchase")})
_BAD_OUTCOMES: Final = frozenset({"unresolved", "escalated", "abandoned"})

MINUTE_COLUMNS: Final[tuple[str, ...]] = (
    "minute", "channel", "type", "store_id", "campaign_id", "part", "category", "stage",
    "events", "customers", "revenue", "wait_s_sum", "wait_count", "negative", "version",
)
LATE_COLUMNS: Final[tuple[str, ...]] = (*MINUTE_COLUMNS[:-1], "batch", "version")


class MinuteKey(NamedTuple):
    """What a row of ``touchpoint_minute`` is one of."""

    minute: int  # start of the minute, epoch ms
    channel: str
    type: str
    store_id: str
    campaign_id: str


def minute_key(event: dict[str, Any]) -> MinuteKey:
    """The minute (event time) x channel x type x store x campaign of a normalized event."""
    return _minute_key_at(event, to_millis(event["occurred_at"]))


def _minute_key_at(event: dict[str, Any], at: int) -> MinuteKey:
    return MinuteKey(at - at % MINUTE_MS, str(event["channel"]), str(event["type"]),
                     str(event.get("store_id") or ""), str(event.get("campaign_id") or ""))


# --- negative experiences ------------------------------------------------------------------

def negative_reasons(event: dict[str, Any], rules: Rules) -> tuple[str, ...]:
    """Why an event is a negative experience at its touchpoint (empty: it is not).

    The thresholds are the complaint rules' (``complaints.toml``): a long wait
    (``[long_wait]`` per channel; a callback request is a caller who gave up waiting),
    a call transferred ``[transfers] min_transfers`` times or more, a call ended
    unresolved, escalated or abandoned, a low rating (``[ratings.*] low``), a formal
    complaint, negative text (the event's ``sentiment`` at or below ``[negative_text]
    threshold``), and a web error.
    """
    channel, kind = event.get("channel"), event.get("type")
    reasons: list[str] = []
    wait = event.get("queue_wait_s")
    if channel == "callcenter":
        if kind == "callback_requested" or (wait is not None
                                            and wait >= rules.long_wait.callcenter_s):
            reasons.append("long_wait")
        if (event.get("transfers") or 0) >= rules.transfers.min_transfers:
            reasons.append("transfers")
        outcome = event.get("outcome")
        if outcome in _BAD_OUTCOMES:
            reasons.append(str(outcome))
    elif channel == "store":
        if wait is not None and wait >= rules.long_wait.store_s:
            reasons.append("long_wait")
    elif channel == "feedback":
        rating = rules.ratings.get(str(kind))
        score = event.get("score")
        if rating is not None and score is not None and score <= rating.low:
            reasons.append("low_rating")
        elif kind == "complaint":
            reasons.append("formal_complaint")
    elif channel == "web" and kind == "error":
        reasons.append("web_errors")
    sentiment = event.get("sentiment")
    if sentiment is not None and sentiment <= rules.negative_text.threshold:
        reasons.append("negative_text")
    return tuple(reasons)


def is_negative(event: dict[str, Any], rules: Rules) -> bool:
    """Whether an event is a negative experience (see :func:`negative_reasons`)."""
    return bool(negative_reasons(event, rules))


# --- cells ---------------------------------------------------------------------------------

def _digest(event_id: str) -> str:
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


_DIGEST_CHARS: Final = 16


def _pack(ids: set[str]) -> str:
    """Event-id digests as one string, for the changelog.

    The windows remember tens of thousands of digests (closed minutes keep theirs to
    recognize redeliveries), and the minutes stage stores them with every batch: one
    string encodes as JSON about four times faster, and restores faster, than a list.
    """
    return "".join(ids)


def _unpack(packed: str) -> set[str]:
    """The digests stored by :func:`_pack`."""
    return {packed[i:i + _DIGEST_CHARS] for i in range(0, len(packed), _DIGEST_CHARS)}


@dataclass(init=False)
class MinuteCell:
    """The figures of one key in one minute, and the events that made them."""

    key: MinuteKey
    category: str = ""
    stage: str = ""
    events: int = 0
    customers: set[str] = field(default_factory=set)
    revenue_fixed: int = 0  # revenue in 1/10,000 units: exact in any order
    wait_s_sum: int = 0
    wait_count: int = 0
    negative: int = 0
    ids: set[str] = field(default_factory=set)  # digests of the events counted

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, key: MinuteKey, category: str = "", stage: str = "", events: int = 0,
                 customers: set[str] | None = None, revenue_fixed: int = 0,
                 wait_s_sum: int = 0, wait_count: int = 0, negative: int = 0,
                 ids: set[str] | None = None) -> None:
        self.key = key
        self.category = category
        self.stage = stage
        self.events = events
        self.customers = set() if customers is None else customers
        self.revenue_fixed = revenue_fixed
        self.wait_s_sum = wait_s_sum
        self.wait_count = wait_count
        self.negative = negative
        self.ids = set() if ids is None else ids

    @property
    def revenue(self) -> float:
        """Purchase revenue of the cell."""
        return self.revenue_fixed / _FIXED

    def seen(self, event_id: str) -> bool:
        """Whether the event was counted here."""
        return _digest(event_id) in self.ids

    def add(self, event: dict[str, Any], negative: bool, *,
            customer_id: str | None = None, digest: str | None = None) -> bool:
        """Count one event of this key; ``False`` if it was counted already.

        ``customer_id`` is the resolved customer (default: the event's ``customer_id``);
        ``digest`` the event id's digest, if the caller has it already.
        """
        if digest is None:
            digest = _digest(str(event["event_id"]))
        if digest in self.ids:
            return False
        self.ids.add(digest)
        if not self.category:
            self.category, self.stage = _kind(event)
        self.events += 1
        customer = customer_id or event.get("customer_id")
        if customer:
            self.customers.add(str(customer))
        amount = event.get("amount")
        if amount is not None and (self.key.channel, self.key.type) in _PURCHASES:
            self.revenue_fixed += round(float(amount) * _FIXED)
        wait = event.get("queue_wait_s")
        if wait is not None:
            self.wait_s_sum += int(wait)
            self.wait_count += 1
        self.negative += int(negative)
        return True

    def row(self, part: int = 0) -> dict[str, Any]:
        """The cell's complete ``touchpoint_minute`` row; ``version`` = events counted.

        ``part`` is the input partition the cell was counted in (see
        :class:`MinuteWindows`).
        """
        return dict(zip(MINUTE_COLUMNS, self.values(part), strict=True))

    def values(self, part: int = 0) -> tuple[Any, ...]:
        """:meth:`row`'s values as a tuple in :data:`MINUTE_COLUMNS` order, without the dict."""
        key, events = self.key, self.events
        return (key.minute, key.channel, key.type, key.store_id, key.campaign_id, part,
                self.category, self.stage, events, len(self.customers), self.revenue,
                self.wait_s_sum, self.wait_count, self.negative, events)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {"key": list(self.key), "category": self.category, "stage": self.stage,
                "events": self.events, "customers": list(self.customers),
                "revenue_fixed": self.revenue_fixed, "wait_s_sum": self.wait_s_sum,
                "wait_count": self.wait_count, "negative": self.negative,
                "ids": _pack(self.ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MinuteCell:
        """The cell stored by :meth:`to_dict`."""
        return cls(MinuteKey(*data["key"]), data["category"], data["stage"], data["events"],
                   set(data["customers"]), data["revenue_fixed"], data["wait_s_sum"],
                   data["wait_count"], data["negative"], _unpack(data["ids"]))


def late_values(cell: MinuteCell, batch: int, part: int = 0) -> tuple[Any, ...]:
    """The ``touchpoint_minute_late`` row of a late cell, in :data:`LATE_COLUMNS` order.

    A minute row's values with the cell's ``batch`` before the version (events counted).
    """
    values = cell.values(part)
    return (*values[:-1], batch, values[-1])


def late_row(cell: MinuteCell, batch: int, part: int = 0) -> dict[str, Any]:
    """:func:`late_values` as a dict."""
    return dict(zip(LATE_COLUMNS, late_values(cell, batch, part), strict=True))


def _kind(event: dict[str, Any]) -> tuple[str, str]:
    category, stage = event.get("category"), event.get("stage")
    if category and stage:
        return str(category), str(stage)
    spec = CHANNELS.get(str(event.get("channel")))
    kind = spec.types.get(str(event.get("type"))) if spec is not None else None
    return (kind.category, kind.stage) if kind is not None else ("", "")


def row_values(row: Mapping[str, Any], columns: Iterable[str] = MINUTE_COLUMNS
               ) -> tuple[Any, ...]:
    """A row as a tuple in ``columns`` order (times stay epoch ms)."""
    return tuple(row[name] for name in columns)


# --- windows -------------------------------------------------------------------------------

@dataclass(init=False)
class Added:
    """What adding one event did.

    ``status`` is ``counted`` (in its open minute), ``late`` (its minute had closed) or
    ``duplicate`` (counted before). ``closing`` holds the cells of the minutes the event's
    time closed (:attr:`closed`: their final rows), ``late_cell`` the late cell the event
    changed, with its batch (:attr:`late`: its row).
    """

    status: str
    closing: list[MinuteCell] = field(default_factory=list)
    late_cell: tuple[int, MinuteCell] | None = None  # (batch, cell), if ``late``
    key: MinuteKey | None = None  # the event's, if ``counted``
    part: int = 0  # the input partition the cells were counted in

    # Written out so that mypyc compiles it: one is made for every event; not frozen,
    # which only a generated ``__init__`` can set (docs/design/compiled.md).
    def __init__(self, status: str, closing: list[MinuteCell] | None = None,
                 late_cell: tuple[int, MinuteCell] | None = None,
                 key: MinuteKey | None = None, part: int = 0) -> None:
        self.status = status
        self.closing = [] if closing is None else closing
        self.late_cell = late_cell
        self.key = key
        self.part = part

    @property
    def late(self) -> list[dict[str, Any]]:
        """The late row the event changed (``batch`` and ``version`` last), if any.

        The minutes stage takes the cell instead (:attr:`late_cell`) and makes one row a
        cell a batch: in a backlog most events are late, and a row made for every event
        cost a quarter of the stage's time.
        """
        if self.late_cell is None:
            return []
        batch, cell = self.late_cell
        return [late_row(cell, batch, self.part)]

    @property
    def closed(self) -> list[dict[str, Any]]:
        """The final rows of the minutes the event's time closed.

        A closed cell never changes again. The minutes stage takes its values as a tuple
        (:meth:`MinuteCell.values`) instead: a dict per closed minute, turned back into a
        tuple, was an eighth of its instructions.
        """
        return [cell.row(self.part) for cell in self.closing]


_NEVER = 1 << 62  # later than any epoch-ms time


class MinuteWindows:
    """Open minutes, the event-time watermark, closed minutes and late cells.

    ``grace``: how far behind the latest event time the watermark trails; ``retain`` and
    ``retain_events``: how long the ids of a closed minute are kept to recognize
    redeliveries (event time, and events added since it closed);
    ``late_retain``: how long a late cell keeps collecting (see
    docs/design/aggregates-and-attribution.md).
    ``part``: the input partition these windows count, written in every row.
    """

    def __init__(self, *, part: int = 0, grace: timedelta = DEFAULT_GRACE,
                 retain: timedelta = DEFAULT_RETAIN,
                 retain_events: int = DEFAULT_RETAIN_EVENTS,
                 late_retain: timedelta = DEFAULT_LATE_RETAIN) -> None:
        if retain_events < 0:
            raise ConfigError(f"aggregate retain_events must be 0 or more, got {retain_events}")
        for name, span in (("grace", grace), ("retain", retain), ("late_retain", late_retain)):
            if span < timedelta(0):
                raise ConfigError(f"aggregate {name} must be 0 or more, got {span}")
        ms = timedelta(milliseconds=1)
        self.grace, self.retain, self.late_retain = grace // ms, retain // ms, late_retain // ms
        self.retain_events = retain_events
        self.part = part
        self.added = 0  # events counted (on time or late): the clock of retain_events
        self.max_time: int | None = None
        self.floor: int | None = None  # a watermark set from outside (advance)
        self.open: dict[MinuteKey, MinuteCell] = {}
        self.closed: dict[MinuteKey, tuple[int, set[str]]] = {}  # key -> (added at close, ids)
        self.late: dict[MinuteKey, tuple[int, MinuteCell]] = {}  # key -> (batch, cell)
        # Late cells changed and gone since take_late_changes(): the table keeps each late
        # cell apart and rewrites only those (a backlog leaves thousands of them)
        self.late_changed: set[MinuteKey] = set()
        self.late_gone: set[MinuteKey] = set()
        # Ids of late cells that stopped collecting, kept for retain_events more events,
        # in order of ``at``: an event read again after a crash may have been counted in
        # one (key -> (added when the last of its cells retired, ids))
        self.retired: dict[MinuteKey, tuple[int, set[str]]] = {}
        self._retired_packed: dict[MinuteKey, str] = {}
        # A closed minute's ids never change: packed once for every later to_dict, which
        # runs every few seconds over all of them (the bulk of the windows)
        self._closed_packed: dict[MinuteKey, str] = {}
        # The earliest open minute and the earliest late batch (_NEVER: none), so that an
        # event that closes nothing does not scan ``open`` and ``late`` (it runs per event).
        self._first_open = self._first_late = _NEVER
        self.stats: dict[str, int] = {"counted": 0, "late": 0, "duplicate": 0}

    @property
    def watermark(self) -> int | None:
        """Event time up to which minutes are closed: latest event time - grace."""
        floor = self.floor
        if self.max_time is None:
            return floor
        mark = self.max_time - self.grace
        return mark if floor is None or mark > floor else floor

    def is_closed(self, minute: int) -> bool:
        """Whether the minute starting at ``minute`` (epoch ms) has closed."""
        mark = self.watermark
        return mark is not None and minute + MINUTE_MS <= mark

    def add(self, event: dict[str, Any], *, negative: bool,
            customer_id: str | None = None) -> Added:
        """Count one normalized event; return what that closed or changed."""
        at = to_millis(event["occurred_at"])
        key = _minute_key_at(event, at)
        event_id = str(event["event_id"])
        if self.is_closed(key.minute):
            digest = _digest(event_id)
            if digest in self.closed.get(key, (0, ()))[1] or \
                    digest in self.retired.get(key, (0, ()))[1]:
                return self._note(Added("duplicate"))
            current = self.late.get(key)
            if current is None:
                mark = self.watermark
                assert mark is not None
                current = self.late[key] = (mark - mark % MINUTE_MS, MinuteCell(key))
                self._first_late = min(self._first_late, current[0])
            late_cell = current[1]
            if not late_cell.add(event, negative, customer_id=customer_id, digest=digest):
                return self._note(Added("duplicate"))
            self.late_changed.add(key)
            self.late_gone.discard(key)
            self.added += 1
            return self._note(Added("late", late_cell=current, part=self.part))
        cell = self.open.get(key)
        if cell is None:
            cell = self.open[key] = MinuteCell(key)
            self._first_open = min(self._first_open, key.minute)
        if not cell.add(event, negative, customer_id=customer_id):
            return self._note(Added("duplicate"))
        self.added += 1
        self.max_time = at if self.max_time is None else max(self.max_time, at)
        return self._note(Added("counted", closing=self._close(), key=key, part=self.part))

    def advance(self, watermark: int) -> list[dict[str, Any]]:
        """Move the watermark to at least ``watermark`` (e.g. when input is idle).

        Returns the final rows of the minutes that closed. Events of those minutes that
        still come count as late.
        """
        self.floor = watermark if self.floor is None else max(self.floor, watermark)
        return [cell.row(self.part) for cell in self._close()]

    def snapshot(self) -> list[dict[str, Any]]:
        """Provisional rows of the open minutes (a later row of the same key replaces them)."""
        return [cell.row(self.part) for _, cell in sorted(self.open.items())]

    def _note(self, added: Added) -> Added:
        self.stats[added.status] += 1
        return added

    def _close(self) -> list[MinuteCell]:
        """Close the open minutes the watermark passed; their cells, in order of key."""
        mark = self.watermark
        if mark is None:
            return []
        cells = []
        if self._first_open + MINUTE_MS <= mark:
            for key in sorted(k for k in self.open if k.minute + MINUTE_MS <= mark):
                cell = self.open.pop(key)
                cells.append(cell)
                self.closed[key] = (self.added, cell.ids)
                self._closed_packed.pop(key, None)
            self._find_firsts()
        # Minutes close in time order, so ``closed`` is in order of minute and of ``at``:
        # what can go is a prefix (this runs for every event; a full scan cost more than
        # counting the event).
        expired = []
        for key, (at, _) in self.closed.items():
            if key.minute + MINUTE_MS > mark - self.retain or self.added - at <= self.retain_events:
                break
            expired.append(key)
        for key in expired:
            del self.closed[key]
            self._closed_packed.pop(key, None)
        expired = []
        for key, (at, _) in self.retired.items():
            if self.added - at <= self.retain_events:
                break
            expired.append(key)
        for key in expired:
            del self.retired[key]
            self._retired_packed.pop(key, None)
        self._expire_late(mark)
        return cells

    def _expire_late(self, mark: int, *, retire: bool = True) -> None:
        """Drop the late cells that stopped collecting by watermark ``mark``.

        Their ids are kept (``retired``) unless ``retire`` is false: cells loaded after
        a store that retired them (the head) and was cut before it deleted them.
        """
        if self._first_late <= mark - self.late_retain:
            for key in [k for k, (batch, _) in self.late.items()
                        if batch <= mark - self.late_retain]:
                _, cell = self.late.pop(key)
                self.late_gone.add(key)
                self.late_changed.discard(key)
                if retire:
                    _, ids = self.retired.pop(key, (0, set()))
                    self.retired[key] = (self.added, ids | cell.ids)  # last: in order of at
                    self._retired_packed.pop(key, None)
            self._find_firsts()

    def take_late_changes(self) -> tuple[dict[MinuteKey, list[Any]], set[MinuteKey]]:
        """The late cells changed (key -> ``[batch, cell data]``) and gone since the last call."""
        changed = {key: [self.late[key][0], self.late[key][1].to_dict()]
                   for key in sorted(self.late_changed)}
        gone = self.late_gone
        self.late_changed, self.late_gone = set(), set()
        return changed, gone

    def _find_firsts(self) -> None:
        """Look up the earliest open minute and late batch again (after some went)."""
        self._first_open = min((key.minute for key in self.open), default=_NEVER)
        self._first_late = min((batch for batch, _ in self.late.values()), default=_NEVER)

    def to_dict(self, *, late: bool = True) -> dict[str, Any]:
        """Plain JSON-able data; without the late cells if not ``late`` (the head)."""
        data = {
            "max_time": self.max_time, "floor": self.floor, "added": self.added,
            "open": [cell.to_dict() for _, cell in sorted(self.open.items())],
            "closed": [[list(key), at, self._packed(key, ids, self._closed_packed)]
                       for key, (at, ids) in sorted(self.closed.items())],
            "late": [],
            "retired": [[list(key), at, self._packed(key, ids, self._retired_packed)]
                        for key, (at, ids) in self.retired.items()],
            "stats": dict(self.stats),
        }
        if late:
            data["late"] = [[batch, cell.to_dict()]
                            for _, (batch, cell) in sorted(self.late.items())]
        return data

    @staticmethod
    def _packed(key: MinuteKey, ids: set[str], cache: dict[MinuteKey, str]) -> str:
        packed = cache.get(key)
        if packed is None:
            packed = cache[key] = _pack(ids)
        return packed

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, part: int = 0,
                  grace: timedelta = DEFAULT_GRACE,
                  retain: timedelta = DEFAULT_RETAIN,
                  retain_events: int = DEFAULT_RETAIN_EVENTS,
                  late_retain: timedelta = DEFAULT_LATE_RETAIN,
                  late: Iterable[Sequence[Any]] = ()) -> MinuteWindows:
        """The windows stored by :meth:`to_dict`, with these settings.

        ``late`` adds late cells stored apart (``[batch, cell data]``, as
        :meth:`take_late_changes` gives them). Cells that stopped collecting by the
        stored watermark are dropped and count as gone: a store can be cut after its
        head, before it deleted them.
        """
        windows = cls(part=part, grace=grace, retain=retain, retain_events=retain_events,
                      late_retain=late_retain)
        windows.max_time, windows.floor = data["max_time"], data["floor"]
        windows.added = data["added"]
        for item in data["open"]:
            cell = MinuteCell.from_dict(item)
            windows.open[cell.key] = cell
        for key, at, packed in data["closed"]:
            windows.closed[MinuteKey(*key)] = (at, _unpack(packed))
            windows._closed_packed[MinuteKey(*key)] = packed
        for key, at, packed in data["retired"]:
            windows.retired[MinuteKey(*key)] = (at, _unpack(packed))
            windows._retired_packed[MinuteKey(*key)] = packed
        for batch, item in (*data["late"], *late):
            cell = MinuteCell.from_dict(item)
            windows.late[cell.key] = (batch, cell)
        windows._find_firsts()
        mark = windows.watermark
        if mark is not None:
            windows._expire_late(mark, retire=False)
        windows.stats.update(data.get("stats") or {})
        return windows
