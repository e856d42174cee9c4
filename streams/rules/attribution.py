"""Campaign attribution: which campaign exposure a customer's later contacts answer.

Pure per-customer state and rules, no Kafka and no Faust. The profiles stage keeps one
:class:`AttributionState` per resolved customer, calls :func:`observe` for each of the
customer's events and :func:`combine` when identity resolution merges two customers, and
upserts the complete, versioned rows they return into ``campaign_attribution_raw``
(:data:`ATTRIBUTION_COLUMNS`, :func:`row_values`). Which exposures share a touchpoint is
decided in one place, the :class:`AttributionModel` (:data:`MODELS`). What an exposure,
a response and a conversion are is in docs/reports.md; why the rows are exact whatever
the order of the events is in docs/design/aggregates-and-attribution.md.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import operator
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final

from touchpoint.exceptions import ConfigError
from touchpoint.schemas.contract import CHANNELS
from touchpoint.streams.rules.complaints import to_millis

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "DEFAULT_LATENESS",
    "DEFAULT_WINDOW",
    "LAST_TOUCH",
    "MAX_EXPOSURE_EVENTS",
    "MAX_TOUCHPOINTS",
    "MODELS",
    "AttributionModel",
    "AttributionState",
    "Candidate",
    "FirstTouch",
    "LastTouch",
    "Linear",
    "combine",
    "exposure_id",
    "is_idle",
    "model_for",
    "observe",
    "row_values",
    "snapshot",
]

DEFAULT_WINDOW: Final = timedelta(days=7)
DEFAULT_LATENESS: Final = timedelta(days=1)
MAX_EXPOSURE_EVENTS: Final = 256
MAX_TOUCHPOINTS: Final = 512

# Exposure event types, in the order they happen to one send (ties in time sort so).
_EXPOSURE_ORDER: Final[Mapping[str, int]] = {
    "sent": 0, "delivered": 1, "opened": 2, "clicked": 3, "ad_impression": 4, "ad_click": 5,
}
_CAMPAIGN_EXPOSURES: Final = frozenset({"sent", "delivered", "opened", "clicked"})
#: A touchpoint's place in time: (time, event id), as ``_credit`` and ``_bound`` order them.
_POINT_ORDER: Final = operator.itemgetter(0, 1)
_WEB_EXPOSURES: Final = frozenset({"ad_impression", "ad_click"})
_PURCHASES: Final = frozenset({("web", "purchase"), ("store", "purchase")})

ATTRIBUTION_COLUMNS: Final[tuple[str, ...]] = (
    "exposure_id", "campaign_id", "medium", "variant", "customer_id", "value_tier",
    "exposed_at", "last_exposed_at", "delivered", "opened", "clicked", "responded_at",
    "response_channel", "response_type", "response_event_id", "converted_at",
    "conversion_channel", "conversions", "revenue", "model", "retracted", "version",
)


# --- the model -----------------------------------------------------------------------------

@dataclass(init=False, slots=True)
class Candidate:
    """An exposure whose window holds a touchpoint.

    ``last_touch_at`` is the time of the exposure's latest event at or before the
    touchpoint (its ``exposed_at`` at the earliest).
    """

    exposure_id: str
    exposed_at: int
    last_touch_at: int

    # Written out so that mypyc compiles it; not frozen,
    # which only a generated ``__init__`` can set (docs/design/compiled.md).
    def __init__(self, exposure_id: str, exposed_at: int, last_touch_at: int) -> None:
        self.exposure_id = exposure_id
        self.exposed_at = exposed_at
        self.last_touch_at = last_touch_at


class AttributionModel(ABC):
    """Decides which exposures share one touchpoint, and how much each gets."""

    name: ClassVar[str]

    @abstractmethod
    def credit(self, candidates: Sequence[Candidate]) -> list[tuple[str, float]]:
        """(exposure id, share) pairs for a touchpoint; ``candidates`` is never empty.

        Must depend on the candidates only (not on their order), so that the same events
        always give the same rows; shares should add up to 1.
        """


class LastTouch(AttributionModel):
    """Everything to the exposure touched last before the touchpoint."""

    name = "last_touch"

    def credit(self, candidates: Sequence[Candidate]) -> list[tuple[str, float]]:
        """The latest touch wins; ties go to the later window, then the larger id."""
        best = max(candidates, key=lambda c: (c.last_touch_at, c.exposed_at, c.exposure_id))
        return [(best.exposure_id, 1.0)]


class FirstTouch(AttributionModel):
    """Everything to the exposure whose window opened first."""

    name = "first_touch"

    def credit(self, candidates: Sequence[Candidate]) -> list[tuple[str, float]]:
        """The earliest exposure wins; ties go to the smaller id."""
        best = min(candidates, key=lambda c: (c.exposed_at, c.exposure_id))
        return [(best.exposure_id, 1.0)]


class Linear(AttributionModel):
    """An equal share to every exposure whose window holds the touchpoint."""

    name = "linear"

    def credit(self, candidates: Sequence[Candidate]) -> list[tuple[str, float]]:
        """1/n to each of the n candidates."""
        share = 1.0 / len(candidates)
        return [(c.exposure_id, share) for c in sorted(candidates, key=lambda c: c.exposure_id)]


LAST_TOUCH: Final = LastTouch()
MODELS: Final[Mapping[str, AttributionModel]] = {
    m.name: m for m in (LAST_TOUCH, FirstTouch(), Linear())
}


def model_for(name: str) -> AttributionModel:
    """The model called ``name`` (``last_touch``, ``first_touch``, ``linear``)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown attribution model {name!r}: use one of "
                          f"{', '.join(sorted(MODELS))}") from None


# --- state ---------------------------------------------------------------------------------

@dataclass(init=False)
class AttributionState:
    """What attribution remembers about one customer; JSON-serializable, bounded.

    ``exposures`` holds the events of exposures still open, as
    ``[at, event_id, campaign_id, type, medium, variant, value_tier]``; ``touchpoints``
    the customer's touchpoints that may still be credited, as
    ``[at, event_id, channel, type, amount]``; ``closed`` the exposures whose rows are
    final but which may still compete for a touchpoint, as
    ``exposure_id -> [exposed_at, [touch times]]``; ``rows`` the last row emitted per
    exposure id (without its version), to emit only what changed.
    """

    customer_id: str
    clock: int | None = None  # latest event time applied (ms)
    applied: int = 0  # events applied, plus one per merge: the version of emitted rows
    late: int = 0  # events ignored as more than `lateness` late
    exposures: list[list[Any]] = field(default_factory=list)
    touchpoints: list[list[Any]] = field(default_factory=list)
    closed: dict[str, list[Any]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, customer_id: str, clock: int | None = None, applied: int = 0,
                 late: int = 0, exposures: list[list[Any]] | None = None,
                 touchpoints: list[list[Any]] | None = None,
                 closed: dict[str, list[Any]] | None = None,
                 rows: dict[str, dict[str, Any]] | None = None) -> None:
        self.customer_id = customer_id
        self.clock = clock
        self.applied = applied
        self.late = late
        self.exposures = [] if exposures is None else exposures
        self.touchpoints = [] if touchpoints is None else touchpoints
        self.closed = {} if closed is None else closed
        self.rows = {} if rows is None else rows

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON-able data (for the changelog-backed table).

        It shares its lists and dicts with this object: hand it over and drop the object
        (the profiles stage runs this per event; ``asdict`` copied every touchpoint).
        """
        # written out: a getattr by name per field was about half the call's cost
        return {"customer_id": self.customer_id, "clock": self.clock, "applied": self.applied,
                "late": self.late, "exposures": self.exposures,
                "touchpoints": self.touchpoints, "closed": self.closed, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributionState:
        """The state stored by :meth:`to_dict` (unknown keys ignored, missing defaulted).

        Copies the containers the rules change (they append, filter and replace items,
        never change an item in place), so ``data`` stays as it was.
        """
        # written out, not cls(**filtered): a keyword call made of a filtered dict took
        # four times as long (1.7 against 0.4 µs; it runs for every event)
        exposures, touchpoints = data.get("exposures"), data.get("touchpoints")
        closed, rows = data.get("closed"), data.get("rows")
        return cls(data["customer_id"], data.get("clock"), data.get("applied", 0),
                   data.get("late", 0), None if exposures is None else list(exposures),
                   None if touchpoints is None else list(touchpoints),
                   None if closed is None else dict(closed), None if rows is None else dict(rows))


# Remembered: a customer's exposures are grouped again for each touchpoint in their windows
@functools.lru_cache(maxsize=4096)
def exposure_id(campaign_id: str, first_event_id: str) -> str:
    """The id of the exposure to ``campaign_id`` whose first event is ``first_event_id``."""
    digest = hashlib.blake2b(f"{campaign_id}\x1f{first_event_id}".encode(), digest_size=10)
    return "x-" + digest.hexdigest()


def is_idle(state: AttributionState, *, lateness: timedelta = DEFAULT_LATENESS) -> bool:
    """Whether the state can be deleted: no exposure, and no touchpoint a late one could claim.

    Its older touchpoints would only matter to exposures brought in by a merge.
    """
    if state.exposures or state.closed or state.rows:
        return False
    if state.clock is None:
        return True  # it never applied an event
    horizon = state.clock - _ms(lateness)
    return all(point[0] < horizon for point in state.touchpoints)


# --- applying events -----------------------------------------------------------------------

def observe(state: AttributionState, event: dict[str, Any], *,
            model: AttributionModel = LAST_TOUCH, window: timedelta = DEFAULT_WINDOW,
            lateness: timedelta = DEFAULT_LATENESS,
            value_tier: str = "") -> tuple[AttributionState, list[dict[str, Any]]]:
    """Apply one normalized event to ``state`` (in place); return it and the rows to upsert.

    ``event`` has the fields of the ``event`` schema (``occurred_at`` epoch ms or an aware
    datetime). ``value_tier`` is the customer's profile tier, recorded on exposures this
    event starts. Rows are complete (:data:`ATTRIBUTION_COLUMNS`); a row with
    ``retracted = 1`` withdraws an exposure id that no longer exists. An event seen
    before, one that is neither an exposure nor a touchpoint, or one more than
    ``lateness`` late returns no rows.
    """
    _check(window, lateness)
    at = to_millis(event["occurred_at"])
    found = _item(event, at, value_tier)
    if found is None:
        return state, []
    is_exposure, item = found
    store = state.exposures if is_exposure else state.touchpoints
    event_id = item[1]
    if any(known[1] == event_id for known in store):
        return state, []
    if state.clock is not None and at < state.clock - _ms(lateness):
        state.late += 1
        return state, []
    store.append(item)
    state.applied += 1
    state.clock = at if state.clock is None else max(state.clock, at)
    window_ms, lateness_ms = _ms(window), _ms(lateness)
    # What _refresh would do here, at a fraction of its cost (most events)
    if is_exposure:
        rows = _quick_exposure(state, item, model, window_ms, lateness_ms)
    else:
        rows = _quick(state, item, model, window_ms, lateness_ms)
    if rows is not None:
        horizon = state.clock - lateness_ms
        state.touchpoints = [p for p in state.touchpoints if p[0] > horizon - window_ms]
        return state, rows
    return state, _refresh(state, model, window_ms, lateness_ms)


def combine(into: AttributionState, other: AttributionState, *,
            model: AttributionModel = LAST_TOUCH, window: timedelta = DEFAULT_WINDOW,
            lateness: timedelta = DEFAULT_LATENESS,
            ) -> tuple[AttributionState, list[dict[str, Any]]]:
    """Fold ``other`` (a merged-away customer's state) into ``into``; return the rows.

    Both histories are recomputed as one customer's: ``other``'s exposures now belong to
    ``into.customer_id``, and touchpoints of either can answer exposures of either.
    """
    _check(window, lateness)
    for name in ("exposures", "touchpoints"):
        mine: list[list[Any]] = getattr(into, name)
        known = {item[1] for item in mine}
        mine.extend(copy.deepcopy(item) for item in getattr(other, name) if item[1] not in known)
    rows: list[dict[str, Any]] = []
    into.applied = into.applied + other.applied + 1
    for xid, entry in other.closed.items():
        if xid not in into.closed:
            into.closed[xid] = copy.deepcopy(entry)
    for xid, row in other.rows.items():
        if xid in into.rows:
            continue
        if xid in other.closed:  # a final row: only its owner changes
            into.rows[xid] = {**row, "customer_id": into.customer_id}
            rows.append({**into.rows[xid], "version": into.applied})
        else:  # recomputed below: written again if it changed, retracted if it is gone
            into.rows[xid] = dict(row)
    if other.clock is not None:
        into.clock = other.clock if into.clock is None else max(into.clock, other.clock)
    into.late += other.late
    return into, rows + _refresh(into, model, _ms(window), _ms(lateness))


def snapshot(state: AttributionState) -> list[dict[str, Any]]:
    """Every row the state holds, at its current version (to re-write after a restart)."""
    return [{**row, "version": state.applied} for _, row in sorted(state.rows.items())]


def row_values(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """A row as a tuple in :data:`ATTRIBUTION_COLUMNS` order (times stay epoch ms)."""
    return tuple(row[name] for name in ATTRIBUTION_COLUMNS)


# Both run for every event with the same few settings: remembered, they cost a lookup.
@functools.lru_cache(maxsize=64)
def _check(window: timedelta, lateness: timedelta) -> None:
    if window <= timedelta(0):
        raise ConfigError(f"attribution window must be positive, got {window}")
    if lateness < timedelta(0):
        raise ConfigError(f"attribution lateness must be 0 or more, got {lateness}")


@functools.lru_cache(maxsize=64)
def _ms(span: timedelta) -> int:
    return span // timedelta(milliseconds=1)


def _item(event: dict[str, Any], at: int,
          value_tier: str) -> tuple[bool, list[Any]] | None:
    """(is an exposure, its stored form) for an exposure event or touchpoint, else ``None``."""
    channel, kind = str(event.get("channel") or ""), str(event.get("type") or "")
    event_id = str(event["event_id"])
    campaign = str(event.get("campaign_id") or "")
    attributes = event.get("attributes") or {}
    if channel == "campaign" and kind in _CAMPAIGN_EXPOSURES and campaign:
        return True, [at, event_id, campaign, kind, str(event.get("medium") or ""),
                      str(event.get("variant") or ""), value_tier]
    if channel == "web" and kind in _WEB_EXPOSURES and campaign:
        medium = event.get("medium") or attributes.get("medium") or "display"
        variant = event.get("variant") or attributes.get("variant") or event.get("ad_id") or ""
        return True, [at, event_id, campaign, kind, str(medium), str(variant), value_tier]
    spec = CHANNELS.get(channel)
    touch = spec.types.get(kind) if spec is not None else None
    if touch is None or touch.category == "communication":
        return None
    amount = event.get("amount") if (channel, kind) in _PURCHASES else None
    return False, [at, event_id, channel, kind, None if amount is None else float(amount)]


@dataclass(init=False)
class _Exposure:
    """An exposure being computed: its events, and what was credited to it."""

    xid: str
    events: list[list[Any]]
    response: list[Any] | None = None
    first_conversion: list[Any] | None = None
    conversions: int = 0
    revenue: float = 0.0

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, xid: str, events: list[list[Any]], response: list[Any] | None = None,
                 first_conversion: list[Any] | None = None, conversions: int = 0,
                 revenue: float = 0.0) -> None:
        self.xid = xid
        self.events = events
        self.response = response
        self.first_conversion = first_conversion
        self.conversions = conversions
        self.revenue = revenue

    @property
    def start(self) -> int:
        return int(self.events[0][0])


def _group(events: list[list[Any]], window: int) -> list[_Exposure]:
    """Exposure events into exposures (see docs/reports.md), in time order."""
    groups = [_Exposure(exposure_id(run[0][2], run[0][1]), run)
              for run in _runs(sorted(events, key=_exposure_order), window)]
    return sorted(groups, key=lambda g: (g.start, g.xid))


def _exposure_order(event: list[Any]) -> tuple[Any, ...]:
    """Where an exposure event goes among others: campaign, time, then send before open."""
    return event[2], event[0], _EXPOSURE_ORDER[event[3]], event[1]


def _runs(ordered: list[list[Any]], window: int) -> list[list[list[Any]]]:
    """Exposure events in :func:`_exposure_order` cut into exposures, in that order.

    A send starts an exposure, and so does another campaign or the end of the window.
    """
    runs: list[list[list[Any]]] = []
    for event in ordered:
        current = runs[-1] if runs else None
        if (current is None or event[3] == "sent" or event[2] != current[0][2]
                or event[0] >= current[0][0] + window):
            runs.append([event])
        else:
            current.append(event)
    return runs


def _steady(state: AttributionState, window: int, lateness: int) -> bool:
    """Whether a touchpoint just added can change no row but the ones that credit it.

    True when nothing closes or is forgotten at the state's clock, and every open row
    names the customer. After every :func:`_refresh` each row
    is current, retracted or closed and no open exposure is due to close; a touchpoint
    leaves the exposures as they are, and ``_credit`` credits each touchpoint on its own.
    So then :func:`_refresh` would change only the rows of the exposures credited with
    this touchpoint, or with one its bound drops (:func:`_quick`), and prune the
    touchpoints. A group's start is one of its events' times: checking every exposure
    event covers every group.
    """
    assert state.clock is not None
    horizon = state.clock - lateness
    oldest = horizon - 2 * window
    for exposure in state.exposures:
        if exposure[0] + window <= horizon:
            return False  # closes now
    for start, _ in state.closed.values():
        if start <= oldest:
            return False  # forgotten now
    for xid, row in state.rows.items():
        if row["exposed_at"] <= oldest:
            return False  # forgotten now
        if row["customer_id"] != state.customer_id and not row["retracted"] \
                and xid not in state.closed:
            return False  # an open exposure's row names another customer: rewritten
    return True


def _quick(state: AttributionState, point: list[Any], model: AttributionModel, window: int,
           lateness: int) -> list[dict[str, Any]] | None:
    """The rows a new touchpoint changes, without the full recompute; ``None`` if it needs it.

    In a :func:`_steady` state only the responses of the open exposures credited with
    ``point`` can change: a response is the earliest touchpoint credited, and the rest of
    a row does not depend on touchpoints but for conversions. ``_bound`` may also drop
    the oldest touchpoint (a busy customer, at the bound on every event): if an open
    exposure was credited with it, it was that exposure's response, and the next one
    credited takes its place. A conversion credited to an open exposure, added or
    dropped, changes revenue, a sum whose rounding depends on the order it is added in:
    ``None`` then, and for any other case :func:`_refresh` would handle differently. The
    state changes only when rows are returned; the caller prunes the touchpoints.
    """
    if not _steady(state, window, lateness):
        return None
    # Every state left by _refresh or here is within the bounds: at most the one touchpoint
    # just added is over.
    kept, dropped = state.touchpoints, None
    if len(kept) > MAX_TOUCHPOINTS:  # as _bound: the newest, in time order
        ordered = sorted(kept, key=_POINT_ORDER)
        dropped, kept = ordered[0], ordered[1:]
        if dropped is point:
            return None
    # Only an open exposure whose window holds a touchpoint can be credited with it, and
    # a group starts at one of its events: if no event's window holds either touchpoint,
    # no row changes (most touchpoints, and every one of a customer without exposures).
    times = (point[0],) if dropped is None else (point[0], dropped[0])
    if not any(e[0] < at <= e[0] + window for e in state.exposures for at in times):
        state.touchpoints = kept
        return []
    groups = _group(state.exposures, window)
    credited = _Credit(groups, state.closed, model, window)
    rows, changed = dict(state.rows), set()
    if dropped is not None:
        lost = credited.open_for(dropped)
        if lost and _converts(dropped):
            return None
        for xid in lost:  # it was the response: the next one credited is
            after = next((p for p in kept if xid in credited.open_for(p)), None)
            rows[xid] = _responded(rows[xid], after)
            changed.add(xid)
    gained = credited.open_for(point)
    if gained and _converts(point):
        return None
    for xid in gained:
        row = rows[xid]
        if row["responded_at"] is None or \
                _POINT_ORDER(point) < (row["responded_at"], row["response_event_id"]):
            rows[xid] = _responded(row, point)
            changed.add(xid)
    state.touchpoints = kept
    out = []
    for group in groups:  # in _refresh's order
        if group.xid in changed:  # a response moved: never back to where it was
            row = state.rows[group.xid] = rows[group.xid]
            out.append({**row, "version": state.applied})
    return out


def _quick_exposure(state: AttributionState, item: list[Any], model: AttributionModel,
                    window: int, lateness: int) -> list[dict[str, Any]] | None:
    """The rows a new exposure event changes, without the full recompute; ``None`` if it needs it.

    ``item`` is in ``state.exposures`` already. In a :func:`_steady` state, an exposure
    event that comes after every event of its campaign (in :func:`_group`'s order) leaves
    the groups before it as they are: it starts a group or joins the campaign's last one.
    If every touchpoint is earlier than it, no touchpoint is credited differently: a
    group starting at it holds none in its window, and a group it joins keeps its latest
    touch before each of them. Then only that group's row can change, and only in what
    its events give (their types, the last exposure, medium, variant): a new group's row
    is as :func:`_row` makes it, a joined group's row is its stored row with those. Most
    exposures (sends, then their deliveries, opens and clicks) come this way. The state
    changes only when rows are returned; the caller prunes the touchpoints.
    """
    if len(state.exposures) > MAX_EXPOSURE_EVENTS or not _steady(state, window, lateness):
        return None
    at, event_id, campaign = item[0], item[1], item[2]
    if any(p[0] >= at for p in state.touchpoints):
        return None
    earlier = sorted((e for e in state.exposures if e[2] == campaign and e is not item),
                     key=_exposure_order)
    if earlier and _exposure_order(earlier[-1]) >= _exposure_order(item):
        return None
    current = _runs([*earlier, item], window)[-1]  # the exposure it starts or joins
    if current[0] is item:
        xid = exposure_id(campaign, event_id)
        if xid in state.rows or xid in state.closed:
            return None
        row = _row(_Exposure(xid, [item]), state, model)
    else:
        xid = exposure_id(campaign, current[0][1])
        stored = state.rows.get(xid)
        if stored is None or xid in state.closed:
            return None
        # what its events give, as _row makes it; what touchpoints gave, as stored
        events = _row(_Exposure(xid, current), state, model)
        row = {**stored, **{name: events[name] for name in _FROM_EVENTS}}
    if state.rows.get(xid) == row:
        return []
    state.rows[xid] = row
    return [{**row, "version": state.applied}]


class _Credit:
    """The exposures, open (``groups``) and closed, a touchpoint at a given time is credited to.

    Every exposure whose window holds the touchpoint is a candidate, closed ones too (they
    compete for it, but their rows are final); the model picks among them.
    """

    def __init__(self, groups: list[_Exposure], closed: Mapping[str, list[Any]],
                 model: AttributionModel, window: int) -> None:
        self.model, self.window = model, window
        self.open = {g.xid for g in groups}
        # Looked at as a touchpoint asks, not gathered up front: most touchpoints are
        # asked about once, and a busy customer's closed exposures are many. A closed
        # exposure's start and touches are its own even where a group has its id.
        self.groups = [g for g in groups if g.xid not in closed]
        self.closed = closed

    def shares(self, at: int) -> list[tuple[str, float]]:
        """(exposure id, share) for a touchpoint at ``at``: none if no window holds it."""
        window = self.window
        candidates = []
        for group in self.groups:
            start = group.start
            if start < at <= start + window:
                candidates.append(Candidate(group.xid, start,
                                            max(e[0] for e in group.events if e[0] <= at)))
        for xid, (begun, times) in self.closed.items():
            start = int(begun)
            if start < at <= start + window:
                candidates.append(Candidate(xid, start, max(t for t in times if t <= at)))
        return self.model.credit(candidates) if candidates else []

    def open_for(self, point: list[Any]) -> set[str]:
        """The open exposures credited with ``point``."""
        return {xid for xid, _ in self.shares(point[0])} & self.open


def _responded(row: dict[str, Any], point: list[Any] | None) -> dict[str, Any]:
    """``row`` with ``point`` as its response."""
    return {**row, **_response_fields(point)}


def _response_fields(point: list[Any] | None) -> dict[str, Any]:
    """A row's response columns for the touchpoint ``point`` (None: no response yet)."""
    return {"responded_at": point[0] if point else None,
            "response_channel": point[2] if point else "",
            "response_type": point[3] if point else "",
            "response_event_id": point[1] if point else ""}


def _converts(point: list[Any]) -> bool:
    """Whether crediting ``point`` counts a conversion: a web or store purchase."""
    return (point[2], point[3]) in _PURCHASES


def _refresh(state: AttributionState, model: AttributionModel, window: int,
             lateness: int) -> list[dict[str, Any]]:
    """Recompute the open exposures; close and prune; return the rows that changed."""
    assert state.clock is not None
    _bound(state)
    groups = _group(state.exposures, window)
    if groups or state.closed:  # else no exposure can claim a touchpoint: nothing to credit
        _credit(groups, state, model, window)
    out: list[dict[str, Any]] = []
    current = set()
    for group in groups:
        current.add(group.xid)
        row = _row(group, state, model)
        if state.rows.get(group.xid) != row:
            state.rows[group.xid] = row
            out.append({**row, "version": state.applied})
    for xid, row in sorted(state.rows.items()):
        if xid not in current and xid not in state.closed and not row["retracted"]:
            state.rows[xid] = {**row, "retracted": 1}
            out.append({**row, "retracted": 1, "version": state.applied})
    _close_and_prune(state, groups, window, lateness)
    return out


def _credit(groups: list[_Exposure], state: AttributionState, model: AttributionModel,
            window: int) -> None:
    """Credit each touchpoint to the exposures the model picks among those holding it."""
    credit = _Credit(groups, state.closed, model, window)
    by_id = {g.xid: g for g in groups}
    for point in sorted(state.touchpoints, key=_POINT_ORDER):
        for xid, share in credit.shares(point[0]):
            group = by_id.get(xid)
            if group is None:
                continue  # a closed exposure: its row is final
            if group.response is None:
                group.response = point
            if _converts(point):
                group.conversions += 1
                group.revenue += (point[4] or 0.0) * share
                if group.first_conversion is None:
                    group.first_conversion = point


#: The columns of a row that its exposure's own events give (the rest: its customer, and
#: what touchpoints credited to it gave).
_FROM_EVENTS: Final = ("medium", "variant", "last_exposed_at", "delivered", "opened",
                       "clicked")


def _row(group: _Exposure, state: AttributionState, model: AttributionModel) -> dict[str, Any]:
    first = group.events[0]
    kinds = {e[3] for e in group.events}
    medium = next((e[4] for e in group.events if e[4]), "")
    variant = next((e[5] for e in group.events if e[5]), "")
    conversion = group.first_conversion
    return {
        "exposure_id": group.xid,
        "campaign_id": first[2],
        "medium": medium,
        "variant": variant,
        "customer_id": state.customer_id,
        "value_tier": first[6],
        "exposed_at": group.start,
        "last_exposed_at": max(e[0] for e in group.events),
        "delivered": int(bool(kinds - {"sent"})),
        "opened": int("opened" in kinds),
        "clicked": int(bool(kinds & {"clicked", "ad_click"})),
        **_response_fields(group.response),
        "converted_at": conversion[0] if conversion else None,
        "conversion_channel": conversion[2] if conversion else "",
        "conversions": group.conversions,
        "revenue": round(group.revenue, 2),
        "model": model.name,
        "retracted": 0,
    }


def _close_and_prune(state: AttributionState, groups: list[_Exposure], window: int,
                     lateness: int) -> None:
    """Close exposures no event can change any more; forget what no window can reach."""
    assert state.clock is not None
    horizon = state.clock - lateness  # older events are ignored as late
    closing = {g.xid for g in groups if g.start + window <= horizon}
    for group in groups:
        if group.xid in closing:
            state.closed[group.xid] = [group.start, sorted(e[0] for e in group.events)]
    if closing:
        member = {e[1] for g in groups if g.xid in closing for e in g.events}
        state.exposures = [e for e in state.exposures if e[1] not in member]
    # A touchpoint not yet late is at least `horizon`; exposures that may claim it opened
    # after horizon - window, and closed ones compete for touchpoints after that.
    state.touchpoints = [p for p in state.touchpoints if p[0] > horizon - window]
    oldest = horizon - 2 * window
    for xid in [x for x, (start, _) in state.closed.items() if start <= oldest]:
        del state.closed[xid]
    state.rows = {xid: row for xid, row in state.rows.items()
                  if xid in state.closed or row["exposed_at"] > oldest}


def _bound(state: AttributionState) -> None:
    """Keep the newest events when a customer exceeds the limits (a bot, a test rig)."""
    if len(state.exposures) > MAX_EXPOSURE_EVENTS:
        state.exposures = sorted(state.exposures, key=lambda e: (e[0], e[1]))[
            -MAX_EXPOSURE_EVENTS:]
    if len(state.touchpoints) > MAX_TOUCHPOINTS:
        state.touchpoints = sorted(state.touchpoints, key=_POINT_ORDER)[
            -MAX_TOUCHPOINTS:]

