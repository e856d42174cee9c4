"""Complaint signals that do not depend on arrival order, within a lateness bound.

The detector (``complaints.py``) is a state machine fed one contact at a time. Fed the same
contacts in another order (a backfill, a replay, a channel that uploads its day at night)
it can conclude differently. :class:`History` makes its result a function of the
customer's contacts in event time: it keeps a checkpoint (``base``, every contact older
than the bound folded in) and a journal of the recent contacts in event-time order, and
``live`` is always the checkpoint with the journal applied in that order. A contact that
arrives in order is applied to ``live`` directly; one that arrives behind a later contact,
or behind a conclusion already drawn, is put in its place and the journal replayed from
the checkpoint. Whatever the replay concludes differently from what was already published
is published again as a new state of the same signal; a signal the replay no longer
raises gets the state ``withdrawn``.

The bound is ``[order] lateness_hours`` behind the customer's newest contact, and at most
``[order] journal_items`` contacts. A contact older than that is folded into the
checkpoint: in order when it is newer than the checkpoint's own newest contact, otherwise
as a late contact (it adds its decayed points but cannot reopen or resolve what the
checkpoint already concluded). Only contacts that can change the detector's state are
journaled (``complaints.matters``); a page view outside any checkout is not.

Pure state and rules, no Kafka and no Faust; the design is in docs/design/signals.md.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.complaints import ComplaintState, Rules

__all__ = ["WITHDRAWN", "History", "combine", "episode_of", "expire", "next_due",
           "observe", "open_signals"]

#: Status of a published signal that a replay in event-time order no longer raises.
WITHDRAWN = "withdrawn"
_HOUR_MS = 3_600_000
#: Event fields the detector reads (``complaints._assess`` and the rules it calls).
_FIELDS = ("channel", "type", "queue_wait_s", "transfers", "outcome", "reason", "score",
           "about_channel", "session_id", "url")
#: Signals of the customer remembered as published, and states of each, at most.
_SHOWN_SIGNALS = 16
_SHOWN_STATES = 8


@dataclass(init=False)
class History:
    """One customer's detector state: checkpoint, recent contacts and what was published."""

    live: ComplaintState
    # recent contacts, each with the event fields the detector reads plus ``at``, ``tier``
    # and ``sentiment``, sorted by (at, event_id)
    journal: list[dict[str, Any]] = field(default_factory=list)
    # signal id -> states published (``_state``): severity, status, escalated_at, due_at,
    # first_evidence_at, reasons, channels
    shown: dict[str, list[list[Any]]] = field(default_factory=dict)
    # event time up to which conclusions without a new contact were drawn (``expire``)
    settled: int | None = None
    # The checkpoint as stored, read only when needed: a contact in order never needs it.
    stored_base: dict[str, Any] | None = None
    _base: ComplaintState | None = None

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, live: ComplaintState, journal: list[dict[str, Any]] | None = None,
                 shown: dict[str, list[list[Any]]] | None = None,
                 settled: int | None = None,
                 stored_base: dict[str, Any] | None = None,
                 _base: ComplaintState | None = None) -> None:
        self.live = live
        self.journal = [] if journal is None else journal
        self.shown = {} if shown is None else shown
        self.settled = settled
        self.stored_base = stored_base
        self._base = _base

    @property
    def base(self) -> ComplaintState:
        """The checkpoint: every contact older than the bound folded in."""
        if self._base is None:
            self._base = (ComplaintState(self.live.customer_id) if self.stored_base is None
                          else ComplaintState.from_dict(self.stored_base))
        return self._base

    @classmethod
    def new(cls, customer_id: str) -> History:
        """The history of a customer the detector has not seen yet."""
        return cls(ComplaintState(customer_id))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; shares containers with this object (hand it over)."""
        # None: nothing folded in yet (most customers), kept small in the profile
        base = self._base.to_dict() if self._base is not None else self.stored_base
        return {"base": base, "live": self.live.to_dict(), "journal": self.journal,
                "shown": self.shown, "settled": self.settled}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """The history stored by :meth:`to_dict`; ``data`` stays as it was."""
        return cls(ComplaintState.from_dict(data["live"]), list(data.get("journal") or ()),
                   {sid: list(states) for sid, states in (data.get("shown") or {}).items()},
                   data.get("settled"), stored_base=data.get("base"))


def episode_of(stored: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The current signal (open, or latest closed) in a stored history, as a dict."""
    if not stored:
        return None
    episode: Mapping[str, Any] | None = stored["live"].get("episode")
    return episode


def open_signals(history: History) -> int:
    """Open complaint signals of the customer (0 or 1), for the profile."""
    return complaints.open_signals(history.live)


def next_due(history: History, *, rules: Rules) -> int | None:
    """Event time at which :func:`expire` first has something to conclude, if ever."""
    return complaints.next_due(history.live, rules=rules)


def observe(history: History, event: dict[str, Any], *, rules: Rules,
            value_tier: str = "standard", sentiment: float | None = None,
            counts: Counter[str] | None = None,
            digest: str | None = None) -> tuple[History, list[dict[str, Any]]]:
    """Apply one event in its event-time place; return the history and records to publish.

    Records are ``complaint_signal`` records without ``emitted_at`` (as
    ``complaints.observe`` returns them), including corrections of states published
    before. A redelivered event (same ``event_id``) changes nothing. ``counts`` counts
    how each contact was placed: ``in_order``, ``replayed`` or ``beyond_bound``.
    ``digest`` is the event id's ``complaints.seen_digest``, if the caller has it already.
    """
    counts = Counter() if counts is None else counts
    live = history.live
    if not complaints.matters(event, sessions=live.sessions, rules=rules, sentiment=sentiment):
        return history, []
    entry = _entry(event, value_tier, sentiment)
    key = (entry["at"], entry["event_id"])
    if digest is None:
        digest = complaints.seen_digest(entry["event_id"])
    if digest in live.seen or \
            any(e["event_id"] == entry["event_id"] for e in history.journal):
        return history, []
    journal = history.journal
    start = (live.clock or entry["at"]) - int(rules.order.lateness_hours * _HOUR_MS)
    if entry["at"] < start:
        # Older than the bound: into the checkpoint (late there if older than its newest).
        counts["beyond_bound"] += 1
        _apply(history.base, entry, rules)
        records = _replay(history, rules)
    elif (not journal or key > (journal[-1]["at"], journal[-1]["event_id"])) and \
            entry["at"] >= (history.settled or entry["at"]):
        counts["in_order"] += 1
        journal.append(entry)
        records = _note(history, _apply(live, entry, rules, digest))
    else:
        counts["replayed"] += 1
        bisect.insort(journal, entry, key=lambda e: (e["at"], e["event_id"]))
        records = _replay(history, rules)
    _fold(history, rules)
    return history, records


def expire(history: History, now: int, *,
           rules: Rules) -> tuple[History, list[dict[str, Any]]]:
    """Conclude what fell due by event time ``now``; return the records to publish."""
    due = complaints.next_due(history.live, rules=rules)
    if due is None or due > now:
        return history, []
    _, records = complaints.expire(history.live, now, rules=rules)
    history.settled = max(history.settled or now, now)
    return history, _note(history, records)


def combine(into: History, other: History, *,
            rules: Rules) -> tuple[History, list[dict[str, Any]]]:
    """Fold a merged-away customer's history into ``into``'s (in place); return records.

    The checkpoints combine as ``complaints.combine`` does; the journals are united and
    replayed, so the merged customer's signals are those of one customer who made both
    customers' recent contacts. The merged-away customer's signals that the replay can
    reach (opened since its checkpoint) are withdrawn: their contacts now raise the
    merged customer's signals.
    """
    _, combined = complaints.combine(into.base, other.base, rules=rules)
    ids = {e["event_id"] for e in into.journal}
    into.journal = sorted([*into.journal, *(e for e in other.journal if e["event_id"] not in ids)],
                          key=lambda e: (e["at"], e["event_id"]))
    replaced = {sid for sid in other.shown
                if _number(sid)[0] == other.live.customer_id
                and _number(sid)[1] > other.base.episodes}
    for sid, states in other.shown.items():
        into.shown.setdefault(sid, states)
    if other.settled is not None:
        into.settled = max(into.settled or other.settled, other.settled)
    records = _replay(into, rules, first=combined, replaced=replaced)
    _fold(into, rules)
    return into, records


# ---------------------------------------------------------------------------------------

def _entry(event: dict[str, Any], tier: str, sentiment: float | None) -> dict[str, Any]:
    """What the detector reads of an event, small enough to keep for the bound."""
    entry: dict[str, Any] = {"event_id": str(event["event_id"]),
                             "at": complaints.to_millis(event["occurred_at"])}
    for name in _FIELDS:
        value = event.get(name)
        if value is not None:
            entry[name] = value
    if tier != "standard":
        entry["tier"] = tier
    if sentiment is not None:
        entry["sentiment"] = sentiment
    return entry


def _apply(state: ComplaintState, entry: dict[str, Any], rules: Rules,
           digest: str | None = None) -> list[dict[str, Any]]:
    event = {**entry, "occurred_at": entry["at"]}
    _, records = complaints.observe(state, event, rules=rules,
                                    value_tier=entry.get("tier", "standard"),
                                    sentiment=entry.get("sentiment"), digest=digest)
    return records


def _fold(history: History, rules: Rules) -> None:
    """Move contacts that left the bound from the journal into the checkpoint."""
    journal = history.journal
    start = (history.live.clock or 0) - int(rules.order.lateness_hours * _HOUR_MS)
    cut = 0
    while cut < len(journal) and (journal[cut]["at"] < start
                                  or len(journal) - cut > rules.order.journal_items):
        _apply(history.base, journal[cut], rules)
        cut += 1
    if cut:
        del journal[:cut]
        _forget_shown(history)


def _replay(history: History, rules: Rules, *, first: list[dict[str, Any]] | None = None,
            replaced: set[str] | None = None) -> list[dict[str, Any]]:
    """Recompute ``live`` from the checkpoint; return what must be published again.

    ``first`` are records the checkpoint itself produced (a merge); ``replaced`` names
    signals withdrawn unless the replay raises them.
    """
    live = ComplaintState.from_dict(history.base.to_dict())
    replayed: list[dict[str, Any]] = list(first or ())
    for entry in history.journal:
        replayed += _apply(live, entry, rules)
    if history.settled is not None:
        replayed += complaints.expire(live, history.settled, rules=rules)[1]
    history.live = live
    return _corrections(history, replayed, rules, replaced or set())


def _corrections(history: History, replayed: list[dict[str, Any]], rules: Rules,
                 replaced: set[str]) -> list[dict[str, Any]]:
    """The replay's records that say something not yet published, and withdrawals."""
    out: list[dict[str, Any]] = []
    last: dict[str, dict[str, Any]] = {}
    for record in replayed:
        sid = record["signal_id"]
        last[sid] = record
        if _state(record) not in history.shown.get(sid, ()):
            out.append(record)
            _remember(history, sid, _state(record))
    for sid, record in last.items():
        if history.shown[sid][-1] != _state(record):
            out.append(record)
            _remember(history, sid, _state(record))
    live = history.live
    for sid, states in list(history.shown.items()):
        if sid in last:
            continue
        episode = live.episode
        if episode is not None and episode.signal_id == sid:
            record = complaints.current_record(live, rules=rules)
        elif sid in replaced or _opened_since_base(history, sid):
            record = _withdrawn(_number(sid)[0], sid, states[-1])
        else:
            continue  # concluded before the checkpoint: no replay can change it
        if states[-1] != _state(record):
            out.append(record)
            _remember(history, sid, _state(record))
    return out


def _note(history: History, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Remember the states of ``records`` as published."""
    for record in records:
        states = history.shown.get(record["signal_id"])
        if not states or states[-1] != _state(record):
            _remember(history, record["signal_id"], _state(record))
    return records


def _remember(history: History, signal_id: str, state: list[Any]) -> None:
    states = history.shown.setdefault(signal_id, [])
    states.append(state)
    del states[:-_SHOWN_STATES]  # the latest decides; a few earlier spare re-publishing


def _state(record: Mapping[str, Any]) -> list[Any]:
    """What a published state says, bar its score and evidence ids."""
    return [record["severity"], record["status"], record.get("escalated_at"),
            record.get("due_at"), record["first_evidence_at"], record["reasons"],
            record["channels"]]


def _number(signal_id: str) -> tuple[str, int]:
    """(customer, n) of a signal id ``<customer>:<detected_at>:<n>``."""
    customer, _, n = signal_id.rpartition(":")
    return customer.rpartition(":")[0], int(n)


def _opened_since_base(history: History, signal_id: str) -> bool:
    customer, n = _number(signal_id)
    return customer == history.live.customer_id and n > history.base.episodes


def _forget_shown(history: History) -> None:
    """Drop published states no replay can change: signals concluded in the checkpoint."""
    base = history.base
    keep_from = base.episodes if base.episode is not None else base.episodes + 1
    current = {ep.signal_id for ep in (base.episode, history.live.episode) if ep is not None}
    shown = {sid: states for sid, states in history.shown.items()
             if sid in current or (_number(sid)[0] == base.customer_id
                                   and _number(sid)[1] >= keep_from)}
    history.shown = dict(list(shown.items())[-_SHOWN_SIGNALS:])


def _withdrawn(customer_id: str, signal_id: str, state: list[Any]) -> dict[str, Any]:
    severity, _, escalated_at, _, first_evidence_at, *_ = state
    detected_at = int(signal_id.rsplit(":", 2)[-2])
    return {"signal_id": signal_id, "customer_id": customer_id, "detected_at": detected_at,
            "first_evidence_at": first_evidence_at, "severity": severity, "score": 0.0,
            "reasons": [], "evidence_event_ids": [], "channels": [], "status": WITHDRAWN,
            "escalated_at": escalated_at, "due_at": None}
