"""Complaint signals: warn, in event time, while a customer's problem is still small.

Pure per-customer state and rules, no Kafka and no Faust. The profiles stage keeps one
:class:`ComplaintState` per resolved customer, calls :func:`observe` for each of the
customer's events and :func:`expire` with the stream's event-time watermark, and
publishes the records they return on ``signals.complaints``. Bad events add decaying
points to one score per customer (weights and thresholds in ``complaints.toml``); a
signal opens at ``watch``, escalates to ``high`` and ``critical``, and ends ``resolved``
or ``breached``. Every time in a record is an event time, so a replay gives the same
records. The reason codes are CONTRACT.md's plus ``escalated``, ``formal_complaint`` and
``cancel_request``; the design is in docs/design/signals.md.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Container
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from touchpoint.streams.rules.complaint_rules import (
    DEFAULT_RULES,
    PREDICTED_REASON,
    SEVERITIES,
    Rules,
)

__all__ = [
    "DEFAULT_RULES",
    "REASONS",
    "SEVERITIES",
    "ComplaintState",
    "Episode",
    "Rules",
    "current_record",
    "expire",
    "matters",
    "next_due",
    "observe",
    "open_signals",
    "seen_digest",
    "to_millis",
]

REASONS = (
    "repeat_contact", "long_wait", "transfers", "unresolved", "escalated", "abandoned",
    "low_rating", "negative_text", "channel_hopping", "web_errors", "formal_complaint",
    "cancel_request",
)
_OPEN_OUTCOMES = ("unresolved", "escalated", "abandoned")
_HOUR_MS = 3_600_000
_MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHECKOUT_ERRORS_KEPT = 5


def _rank(severity: str | None) -> int:
    return 0 if severity is None else SEVERITIES.index(severity) + 1


# --- state ---------------------------------------------------------------------------------

@dataclass
class Episode:
    """One complaint signal: its evidence, severity and status."""

    signal_id: str
    detected_at: int
    first_evidence_at: int
    severity: str
    escalated_at: int
    status: str = "open"
    reasons: list[str] = field(default_factory=list)
    evidence_event_ids: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    # Call reasons among the evidence: a resolved call about one of them resolves it.
    subjects: list[str] = field(default_factory=list)
    # When it reached the service severity: the service clock runs from here.
    service_from: int | None = None
    closed_at: int | None = None
    # Event time of the latest record returned for it (rate limit of evidence updates).
    last_emit_at: int = 0
    # Opened by a predicted outcome (a complaint, a cancel call): not an early signal.
    by_outcome: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; shares its lists with this object."""
        return {name: getattr(self, name) for name in _EPISODE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        """The episode stored by :meth:`to_dict` (unknown keys ignored); copies its lists."""
        copied: dict[str, Any] = {k: list(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in _EPISODE_FIELDS}
        return cls(**copied)


@dataclass(init=False)
class ComplaintState:
    """Everything the detector remembers about one customer; JSON-serializable, bounded."""

    customer_id: str
    clock: int | None = None  # latest event time seen (ms)
    score: float = 0.0
    # The part of the score earned since the latest signal closed: a new signal needs
    # this to reach watch (after a breach the score itself stays high).
    fresh: float = 0.0
    score_at: int | None = None  # event time the scores are decayed to
    value_tier: str = "standard"
    seen: list[str] = field(default_factory=list)  # digests of recent event ids
    # call reason -> [last call at, calls in the chain, last call left it open]
    issues: dict[str, list[Any]] = field(default_factory=dict)
    # [at, channel, bad, service contact] for channel hopping
    contacts: list[list[Any]] = field(default_factory=list)
    # recent bad contacts and the points they and the ratings about them earned:
    # [at, channel, points] (before the tier multiplier)
    incidents: list[list[Any]] = field(default_factory=list)
    hopped_at: int | None = None
    # tracker session -> {"at", "checkout", "errors", "points"}
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # recent evidence: {"at", "ids", "channel", "reasons", "subject"}
    evidence: list[dict[str, Any]] = field(default_factory=list)
    episode: Episode | None = None  # the open signal, or the latest closed one
    episodes: int = 0
    # predicted outcomes: {"at", "kind", "event_id", "signal_id", "severity", "status",
    # "detected_at", "early"}
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, customer_id: str, clock: int | None = None, score: float = 0.0,
                 fresh: float = 0.0, score_at: int | None = None,
                 value_tier: str = "standard", seen: list[str] | None = None,
                 issues: dict[str, list[Any]] | None = None,
                 contacts: list[list[Any]] | None = None,
                 incidents: list[list[Any]] | None = None, hopped_at: int | None = None,
                 sessions: dict[str, dict[str, Any]] | None = None,
                 evidence: list[dict[str, Any]] | None = None,
                 episode: Episode | None = None, episodes: int = 0,
                 outcomes: list[dict[str, Any]] | None = None) -> None:
        self.customer_id = customer_id
        self.clock = clock
        self.score = score
        self.fresh = fresh
        self.score_at = score_at
        self.value_tier = value_tier
        self.seen = [] if seen is None else seen
        self.issues = {} if issues is None else issues
        self.contacts = [] if contacts is None else contacts
        self.incidents = [] if incidents is None else incidents
        self.hopped_at = hopped_at
        self.sessions = {} if sessions is None else sessions
        self.evidence = [] if evidence is None else evidence
        self.episode = episode
        self.episodes = episodes
        self.outcomes = [] if outcomes is None else outcomes

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON-able data (for the changelog-backed table).

        It shares its lists and dicts with this object: hand it over and drop the object
        (the profiles stage runs this per event; ``dataclasses.asdict`` cost ~10x more).
        """
        # written out, in the fields' order: a getattr by name per field was about half
        # the call's cost
        episode = self.episode
        return {
            "customer_id": self.customer_id, "clock": self.clock, "score": self.score,
            "fresh": self.fresh, "score_at": self.score_at, "value_tier": self.value_tier,
            "seen": self.seen, "issues": self.issues, "contacts": self.contacts,
            "incidents": self.incidents, "hopped_at": self.hopped_at,
            "sessions": self.sessions, "evidence": self.evidence,
            "episode": None if episode is None else episode.to_dict(),
            "episodes": self.episodes, "outcomes": self.outcomes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplaintState:
        """The state stored by :meth:`to_dict` (unknown keys ignored, missing defaulted).

        Copies every container the detector changes in place, so ``data`` stays as it was.
        """
        # written out, not cls(**filtered): a keyword call made of a filtered dict took
        # nearly three times as long (2.5 against 0.9 µs; it runs for every event)
        get = data.get
        seen, contacts, evidence, outcomes = (
            get("seen"), get("contacts"), get("evidence"), get("outcomes"))
        incidents, issues, sessions = get("incidents"), get("issues"), get("sessions")
        episode = get("episode")
        return cls(
            data["customer_id"], get("clock"), get("score", 0.0), get("fresh", 0.0),
            get("score_at"), get("value_tier", "standard"),
            None if seen is None else list(seen),
            None if issues is None else {k: list(v) for k, v in issues.items()},
            None if contacts is None else list(contacts),
            None if incidents is None else [list(i) for i in incidents],
            get("hopped_at"),
            None if sessions is None else {k: {**v, "errors": list(v.get("errors") or [])}
                                           for k, v in sessions.items()},
            None if evidence is None else list(evidence),
            None if episode is None else Episode.from_dict(episode),
            get("episodes", 0),
            None if outcomes is None else list(outcomes),
        )


_EPISODE_FIELDS = tuple(f.name for f in fields(Episode))  # in their order


def open_signals(state: ComplaintState) -> int:
    """Open complaint signals of the customer (0 or 1), for the profile."""
    return int(state.episode is not None and state.episode.status == "open")


def to_millis(value: datetime | int) -> int:
    """Epoch milliseconds of an event time given as epoch ms or a timezone-aware datetime."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ValueError(f"occurred_at {value!r} has no timezone: give an aware datetime "
                             f"or epoch milliseconds")
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"occurred_at must be epoch milliseconds or an aware datetime, "
                     f"got {value!r}")


# --- detection -----------------------------------------------------------------------------

@dataclass(init=False)
class _Finding:
    """What one event (or a concluded checkout) says."""

    at: int
    ids: list[str]
    channel: str
    items: list[tuple[str, float]] = field(default_factory=list)
    subject: str | None = None  # call reason
    resolving: bool = False  # a resolved call or a good rating: resolves an open signal
    ordered: bool = False  # a completed order: the customer is buying again
    predicted: str | None = None  # "complaint" or "cancel"

    # Written out so that mypyc compiles it (docs/design/compiled.md).
    def __init__(self, at: int, ids: list[str], channel: str,
                 items: list[tuple[str, float]] | None = None, subject: str | None = None,
                 resolving: bool = False, ordered: bool = False,
                 predicted: str | None = None) -> None:
        self.at = at
        self.ids = ids
        self.channel = channel
        self.items = [] if items is None else items
        self.subject = subject
        self.resolving = resolving
        self.ordered = ordered
        self.predicted = predicted

    def add(self, reason: str, points: float) -> None:
        self.items.append((reason, points))

    @property
    def points(self) -> float:
        return sum(points for _, points in self.items)


def observe(state: ComplaintState, event: dict[str, Any], *, rules: Rules,
            value_tier: str = "standard", sentiment: float | None = None,
            digest: str | None = None) -> tuple[ComplaintState, list[dict[str, Any]]]:
    """Apply one normalized event to ``state`` (in place); return it and the records to emit.

    ``event`` has the fields of the ``event`` schema; ``occurred_at`` is epoch ms or an
    aware datetime. ``value_tier`` is the customer's profile tier, ``sentiment`` the score
    (-1..1) of the event's text, if it has any. Records have the ``complaint_signal``
    fields except ``emitted_at``. A redelivered event (same ``event_id``) changes nothing.
    ``digest`` is the event id's :func:`seen_digest`, if the caller has it already.
    """
    at = to_millis(event["occurred_at"])
    if digest is None:
        digest = seen_digest(event["event_id"])
    if digest in state.seen:
        return state, []
    state.seen = [*state.seen, digest][-rules.limits.recent_ids:]
    state.value_tier = value_tier
    records: list[dict[str, Any]] = []
    if state.clock is None or at > state.clock:
        records += _advance(state, at, rules)  # what fell due before this event
        state.clock = max(state.clock or at, at)
    found = _assess(state, event, at, rules, sentiment)
    records += _apply(state, found, rules)
    _prune(state, rules)
    return state, records


def matters(event: dict[str, Any], *, sessions: Container[str], rules: Rules,
            sentiment: float | None = None) -> bool:
    """Whether ``event`` can change a detector state beyond its clock and seen ids.

    ``sessions`` are the web sessions the state follows (``ComplaintState.sessions``).
    Contacts, feedback, web errors, checkouts and purchases can; so can any web event in a
    session the detector follows (it keeps the session alive), a service page, and any
    text that reads negative. A page view or a campaign message otherwise cannot.
    """
    channel = event.get("channel")
    if channel in ("callcenter", "store", "feedback"):
        return True
    if sentiment is not None and sentiment <= rules.negative_text.threshold:
        return True
    kind = event.get("type")
    hop = rules.channel_hopping
    if f"{channel}:{kind}" in hop.contact_types:
        return True
    if channel != "web":
        return False
    if kind in ("error", "checkout_started", "purchase") or \
            str(event.get("session_id") or "") in sessions:
        return True
    url = str(event.get("url") or "")
    return kind == "page_view" and any(p in url for p in hop.web_paths)


def current_record(state: ComplaintState, *, rules: Rules) -> dict[str, Any]:
    """The record of the customer's current signal as it stands (there must be one)."""
    ep = state.episode
    assert ep is not None
    return _emit(state, ep, ep.last_emit_at, rules)


def event_digest(event_id: str) -> bytes:
    """The 8-byte digest by which an event is recognised when it comes again.

    The profiles stage keys an applied event by it (``profile.event_digest``), and the
    detector remembers the events it has seen by it in hex (:func:`seen_digest`), so the
    stage hands the detector the digest it made. At 64 bits, two of a customer's events
    collide (and one is taken for a repeat of the other) with odds below 1 in 10^9 for a
    customer with 190,000 events.
    """
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def seen_digest(event_id: object) -> str:
    """How ``ComplaintState.seen`` remembers an event id (redeliveries change nothing)."""
    return event_digest(str(event_id)).hex()


def expire(state: ComplaintState, now: datetime | int, *,
           rules: Rules) -> tuple[ComplaintState, list[dict[str, Any]]]:
    """Conclude what fell due by event time ``now`` (a watermark); return the records.

    Breaches signals past their service time, resolves faded watch signals and concludes
    abandoned checkouts, each at the event time it fell due. Calling it again, or with an
    earlier ``now``, changes nothing. ``now`` should be a low watermark (event time every
    partition has passed): an event older than it that still arrives counts as late.
    """
    records = _advance(state, to_millis(now), rules)
    _prune(state, rules)
    return state, records


def _assess(state: ComplaintState, event: dict[str, Any], at: int, rules: Rules,
            sentiment: float | None) -> _Finding:
    channel = str(event.get("channel") or "")
    kind = str(event.get("type") or "")
    found = _Finding(at=at, ids=[str(event["event_id"])], channel=channel)
    if channel == "callcenter":
        _call(state, event, kind, found, rules)
    elif channel == "store":
        wait = event.get("queue_wait_s")
        if wait is not None and wait >= rules.long_wait.store_s:
            found.add("long_wait", rules.long_wait.weight)
        found.ordered = kind == "purchase"
    elif channel == "feedback":
        _feedback(event, kind, found, rules)
    elif channel == "web":
        _web(state, event, kind, found, rules)
        found.ordered = kind == "purchase"
    recovery = found.resolving or found.ordered
    if recovery:
        # Recovery is never a complaint: a resolved call's note ("question answered, no
        # further action") or the wait before a call that fixed things is not new trouble.
        found.items.clear()
    elif sentiment is not None and sentiment <= rules.negative_text.threshold:
        found.add("negative_text", rules.negative_text.weight)
    _incident(state, event, found, rules)
    hop = rules.channel_hopping
    url = str(event.get("url") or "")
    service = f"{channel}:{kind}" in hop.contact_types or (
        channel == "web" and kind == "page_view" and any(p in url for p in hop.web_paths))
    _hopping(state, found, service=service, rules=rules)
    if recovery:
        found.items.clear()  # logged as a service contact, but completes no hop
    return found


def _call(state: ComplaintState, event: dict[str, Any], kind: str, found: _Finding,
          rules: Rules) -> None:
    wait = event.get("queue_wait_s")
    waits = rules.long_wait
    long_wait = wait is not None and wait >= waits.callcenter_s
    if kind == "callback_requested":
        # The caller gave up waiting; the callback itself is the same contact, so this
        # is no call of its own for repeat contacts.
        found.add("long_wait", waits.weight if long_wait else waits.callback_requested)
        return
    if kind != "call_ended":
        return
    if long_wait:
        found.add("long_wait", waits.weight)
    transfers = event.get("transfers") or 0
    tr = rules.transfers
    if transfers >= tr.min_transfers:
        found.add("transfers", tr.weight + tr.per_extra * (transfers - tr.min_transfers))
    outcome = event.get("outcome")
    if outcome in _OPEN_OUTCOMES:
        found.add(str(outcome), getattr(rules.call_outcomes, str(outcome)))
    reason = event.get("reason") or None
    if reason == "cancel":
        found.predicted = "cancel"
        return
    if reason is not None:
        found.subject = str(reason)
        _repeat(state, found, outcome, rules)
    found.resolving = outcome in rules.resolution.call_outcomes


def _repeat(state: ComplaintState, found: _Finding, outcome: Any, rules: Rules) -> None:
    """Score a call about a reason called about recently, or still open; chain the calls."""
    assert found.subject is not None
    rc = rules.repeat_contact
    issue = state.issues.get(found.subject)
    chain = 1
    if issue is not None:
        last_at, calls, still_open = issue
        gap = abs(found.at - last_at)
        if gap <= rc.window_hours * _HOUR_MS or (still_open and
                                                 gap <= rc.open_issue_hours * _HOUR_MS):
            found.add("repeat_contact", rc.weight + rc.per_extra * (calls - 1))
            chain = calls + 1
    now_open = outcome in _OPEN_OUTCOMES
    if issue is not None and found.at < issue[0]:  # a late call: the latest call decides
        state.issues[found.subject] = [issue[0], chain, issue[2]]
    else:
        state.issues[found.subject] = [found.at, chain, now_open]


def _feedback(event: dict[str, Any], kind: str, found: _Finding, rules: Rules) -> None:
    if kind == "complaint":
        found.predicted = "complaint"
        return
    rating = rules.ratings.get(kind)
    score = event.get("score")
    if rating is None or score is None:
        return
    if score <= rating.very_low:
        found.add("low_rating", rating.very_low_weight)
    elif score <= rating.low:
        found.add("low_rating", rating.weight)
    elif score >= rating.good:
        found.resolving = True


def _incident(state: ComplaintState, event: dict[str, Any], found: _Finding,
              rules: Rules) -> None:
    """Weigh a rating or comment as the verdict on the bad contact it is about.

    A low rating or an angry comment soon after a bad contact is mostly the customer's
    verdict on that same contact, not a second bad experience: together they are one
    bad contact, worth at most ``max_event_points`` (like any one event), however many
    surveys and reviews follow it. Feedback matches the latest bad contact within
    ``[feedback] window_hours`` before it on its ``about_channel`` (any channel when it
    names none); feedback that matches none is an incident of its own, which later
    feedback about the same channel shares.
    """
    raw = found.points
    if raw <= 0:
        return
    cap = rules.score.max_event_points
    if found.channel != "feedback":
        state.incidents.append([found.at, found.channel, min(raw, cap)])
        return
    about = event.get("about_channel") or None
    window = rules.feedback.window_hours * _HOUR_MS
    incident: list[Any] | None = None
    for index in range(len(state.incidents) - 1, -1, -1):  # the latest it can be about
        earlier = state.incidents[index]
        if earlier[0] <= found.at <= earlier[0] + window and (about is None
                                                               or earlier[1] == about):
            incident = earlier
            break
    if incident is None:
        state.incidents.append([found.at, about or "feedback", min(raw, cap)])
        return
    allowed = max(0.0, min(cap, incident[2] + raw) - incident[2])
    incident[2] += allowed
    found.items = [(reason, points * allowed / raw) for reason, points in found.items]


def _web(state: ComplaintState, event: dict[str, Any], kind: str, found: _Finding,
         rules: Rules) -> None:
    sid = str(event.get("session_id") or "")
    session = state.sessions.get(sid)
    if session is None:
        if kind not in ("error", "checkout_started"):
            return
        session = state.sessions[sid] = {"at": found.at, "checkout": None, "errors": [],
                                         "points": 0.0}
    session["at"] = max(session["at"], found.at)
    we = rules.web_errors
    if kind == "error":
        points = min(we.per_error, we.max_per_session - session["points"])
        if points > 0:
            found.add("web_errors", points)
            session["points"] += points
        if session["checkout"] is not None and found.at >= session["checkout"]:
            session["errors"] = [*session["errors"], *found.ids][-_CHECKOUT_ERRORS_KEPT:]
    elif kind == "checkout_started":
        if session["checkout"] is None:
            session["checkout"] = found.at
    elif kind == "purchase":
        session["checkout"], session["errors"] = None, []


def _hopping(state: ComplaintState, found: _Finding, *, service: bool, rules: Rules) -> None:
    """Log a service or bad contact; add channel hopping if it completes a hop.

    Only channels that have service contacts (``contact_types``) take part: a low rating
    after a bad store visit is a survey answer, not a customer trying another channel.
    """
    hop = rules.channel_hopping
    bad = found.points >= hop.min_bad_points and \
        any(name.startswith(found.channel + ":") for name in hop.contact_types)
    if not (service or bad):
        return
    state.contacts = sorted([*state.contacts, [found.at, found.channel, bad, service]],
                            key=lambda c: (c[0], c[1]))
    window = int(hop.window_hours * _HOUR_MS)
    if state.hopped_at is not None and abs(found.at - state.hopped_at) < window:
        return
    for b_at, b_channel, b_bad, _ in state.contacts:
        if not b_bad or not found.at - window <= b_at <= found.at:
            continue
        channels = {b_channel} | {c for c_at, c, _, c_service in state.contacts
                                  if c_service and b_at <= c_at <= b_at + window}
        if len(channels) >= hop.min_channels:
            found.add("channel_hopping", hop.weight)
            state.hopped_at = found.at
            return


def _decay_to(state: ComplaintState, at: int, rules: Rules) -> float:
    """Bring the scores to ``at`` if later; return the decay factor for points at ``at``."""
    half_life = rules.score.half_life_hours * _HOUR_MS
    if state.score_at is None or at >= state.score_at:
        if state.score_at is not None:
            factor = 0.5 ** ((at - state.score_at) / half_life)
            state.score *= factor
            state.fresh *= factor
        state.score_at = at
        return 1.0
    return float(0.5 ** ((state.score_at - at) / half_life))  # a late event


def _score_at(state: ComplaintState, at: int, rules: Rules) -> float:
    if state.score_at is None or at <= state.score_at:
        return state.score
    return float(state.score * 0.5 ** ((at - state.score_at)
                                       / (rules.score.half_life_hours * _HOUR_MS)))


def _apply(state: ComplaintState, found: _Finding, rules: Rules) -> list[dict[str, Any]]:
    """Add a finding to the score and the signal; return the records to emit."""
    records: list[dict[str, Any]] = []
    at = found.at
    late = _decay_to(state, at, rules)
    ep = state.episode
    is_open = ep is not None and ep.status == "open"
    # A resolving contact older than the latest evidence (a late one) resolves nothing.
    if found.resolving and late == 1.0 and (ep is None or not is_open or not ep.subjects
                                             or found.subject is None
                                             or found.subject in ep.subjects):
        state.score *= rules.resolution.relief
        state.fresh *= rules.resolution.relief
        if ep is not None and is_open and at >= ep.detected_at:
            records.append(_close(state, ep, "resolved", at, rules))
            is_open = False
    elif found.ordered and late == 1.0:
        # buying again eases the episode, without closing a signal someone acts on
        state.score *= rules.resolution.order_relief
        state.fresh *= rules.resolution.order_relief
    # Evidence from before the latest signal closed (a late event) belonged to it.
    after_close = ep is None or ep.closed_at is None or at >= ep.closed_at
    points = min(found.points * rules.tier_factor(state.value_tier),
                 rules.score.max_event_points) * late
    if found.predicted is not None:
        points += rules.predicted[found.predicted].weight * late
    state.score += points
    state.fresh += points if after_close else 0.0
    reasons = list(dict.fromkeys(reason for reason, _ in found.items))
    level = rules.severity.level(state.score)
    if found.predicted is not None:
        predicted = rules.predicted[found.predicted]
        state.score = max(state.score, rules.severity.threshold(predicted.severity))
        reasons.append(PREDICTED_REASON[found.predicted])
        _record_outcome(state, found, rules)
        level = max(rules.severity.level(state.score), predicted.severity, key=_rank)
    if not reasons:
        return records
    entry = {"at": at, "ids": found.ids, "channel": found.channel, "reasons": reasons,
             "subject": found.subject}
    state.evidence = sorted([*state.evidence, entry],
                            key=lambda e: e["at"])[-rules.limits.evidence_items:]
    if ep is not None and is_open:
        _extend(ep, entry, rules)
        escalated = _rank(level) > _rank(ep.severity)
        if escalated:
            assert level is not None
            ep.severity, ep.escalated_at = level, max(at, ep.detected_at)
            if ep.service_from is None and \
                    _rank(level) >= _rank(rules.service.from_severity):
                ep.service_from = ep.escalated_at
        interval = rules.episode.update_interval_minutes * _MINUTE_MS
        if escalated or at - ep.last_emit_at >= interval:
            records.append(_emit(state, ep, at, rules))
    elif level is not None and (found.predicted is not None
                                or state.fresh >= rules.severity.watch):
        closed = ep.closed_at if ep is not None else None
        cooling = closed is not None and \
            at < closed + rules.episode.cooldown_hours * _HOUR_MS
        # Only new trouble jumps the cooldown: a breached signal's score stays high.
        bypass = _rank(rules.severity.level(state.fresh)) >= \
            _rank(rules.episode.bypass_severity)
        if not cooling or bypass or found.predicted is not None:
            records.append(_open(state, found, level, ep, rules))
    return records


def _open(state: ComplaintState, found: _Finding, level: str, last: Episode | None,
          rules: Rules) -> dict[str, Any]:
    """Open a new signal with the evidence since the last one closed."""
    closed = last.closed_at if last is not None else None
    spent = set(last.evidence_event_ids) if last is not None else set()
    state.episodes += 1
    detected = found.at if closed is None else max(found.at, closed)
    ep = Episode(signal_id=f"{state.customer_id}:{detected}:{state.episodes}",
                 detected_at=detected, first_evidence_at=found.at, severity=level,
                 escalated_at=detected, by_outcome=found.predicted is not None)
    horizon = (state.clock or found.at) - rules.score.forget_after_hours * _HOUR_MS
    for entry in state.evidence:
        if entry["ids"] == found.ids or (entry["at"] >= horizon and not spent >= set(entry["ids"])
                                         and (closed is None or entry["at"] >= closed)):
            _extend(ep, entry, rules)
    if _rank(level) >= _rank(rules.service.from_severity):
        ep.service_from = detected
    state.episode = ep
    return _emit(state, ep, found.at, rules)


def _extend(ep: Episode, entry: dict[str, Any], rules: Rules) -> None:
    ep.first_evidence_at = min(ep.first_evidence_at, entry["at"])
    ep.reasons = list(dict.fromkeys([*ep.reasons, *entry["reasons"]]))
    ep.evidence_event_ids = list(dict.fromkeys(
        [*ep.evidence_event_ids, *entry["ids"]]))[-rules.limits.evidence_ids:]
    ep.channels = list(dict.fromkeys([*ep.channels, entry["channel"]]))
    if entry["subject"] is not None and entry["subject"] not in ep.subjects:
        ep.subjects = [*ep.subjects, entry["subject"]]


def _close(state: ComplaintState, ep: Episode, status: str, at: int,
           rules: Rules) -> dict[str, Any]:
    ep.status, ep.closed_at = status, at
    record = _emit(state, ep, at, rules)
    # A new signal needs new evidence, not the old one's residue; a resolved problem's
    # points are spent, a breached one's stay (it was never solved).
    _decay_to(state, at, rules)
    state.fresh = 0.0
    if status == "resolved":
        state.score = min(state.score, rules.episode.carry_over)
    return record


def _emit(state: ComplaintState, ep: Episode, at: int, rules: Rules) -> dict[str, Any]:
    ep.last_emit_at = max(ep.last_emit_at, at)
    return {
        "signal_id": ep.signal_id,
        "customer_id": state.customer_id,
        "detected_at": ep.detected_at,
        "first_evidence_at": ep.first_evidence_at,
        "severity": ep.severity,
        "score": round(_score_at(state, at, rules), 3),
        "reasons": list(ep.reasons),
        "evidence_event_ids": list(ep.evidence_event_ids),
        "channels": list(ep.channels),
        "status": ep.status,
        "escalated_at": ep.escalated_at,
        "due_at": None if ep.service_from is None or ep.status != "open"
        else ep.service_from + int(rules.service.hours * _HOUR_MS),
    }


def _record_outcome(state: ComplaintState, found: _Finding, rules: Rules) -> None:
    """Remember a predicted outcome and the signal that stood before it."""
    assert found.predicted is not None
    ep = state.episode
    prior = ep if ep is not None and ep.detected_at < found.at else None
    state.outcomes = sorted([*state.outcomes, {
        "at": found.at, "kind": found.predicted, "event_id": found.ids[0],
        "signal_id": prior.signal_id if prior else None,
        "severity": prior.severity if prior else None,
        "status": prior.status if prior else None,
        "detected_at": prior.detected_at if prior else None,
        # A signal was standing when it came: open, or breached (never resolved), and not
        # itself raised by an earlier outcome.
        "early": prior is not None and not prior.by_outcome
        and prior.status in ("open", "breached"),
    }], key=lambda o: (o["at"], o["event_id"]))[-rules.limits.outcomes:]


def next_due(state: ComplaintState, *, rules: Rules) -> int | None:
    """Event time at which :func:`expire` first has something to conclude, if ever.

    ``None`` when nothing is pending (no open signal, no checkout in progress). Before
    this time ``expire`` changes nothing, so a caller holding many customers only needs
    to expire those whose time the watermark has passed.
    """
    due = _due(state, rules)
    return min(due)[0] if due else None


def _due(state: ComplaintState, rules: Rules) -> list[tuple[int, int, str]]:
    """What will fall due, and when: (event time, 0 checkout / 1 breach / 2 fade, session)."""
    abandon = int(rules.web_errors.abandon_after_minutes * _MINUTE_MS)
    due: list[tuple[int, int, str]] = [
        (s["at"] + abandon, 0, sid) for sid, s in state.sessions.items()
        if s["checkout"] is not None]
    ep = state.episode
    if ep is not None and ep.status == "open":
        if ep.service_from is not None:
            due.append((ep.service_from + int(rules.service.hours * _HOUR_MS), 1, ""))
        else:
            due.append((max(_fade_time(state, rules), _held_until(state, ep, rules),
                            ep.detected_at), 2, ""))
    return due


def _advance(state: ComplaintState, now: int, rules: Rules) -> list[dict[str, Any]]:
    """Conclude, in event-time order, what falls due by ``now``."""
    records: list[dict[str, Any]] = []
    while True:
        due = [d for d in _due(state, rules) if d[0] <= now]
        if not due:
            return records
        when, what, sid = min(due)
        ep = state.episode
        if what == 0:
            session = state.sessions[sid]
            errors, session["checkout"], session["errors"] = session["errors"], None, []
            if len(errors) >= rules.web_errors.min_checkout_errors:
                found = _Finding(at=when, ids=errors, channel="web")
                found.add("web_errors", rules.web_errors.abandoned_checkout)
                _hopping(state, found, service=False, rules=rules)
                state.clock = max(state.clock or when, when)
                records += _apply(state, found, rules)
        else:
            assert ep is not None
            records.append(_close(state, ep, "breached" if what == 1 else "resolved", when,
                                  rules))


def _held_until(state: ComplaintState, ep: Episode, rules: Rules) -> int:
    """A watch does not fade while a call issue of it is open (its last call unresolved)."""
    hold = rules.repeat_contact.open_issue_hours * _HOUR_MS
    return max((int(issue[0] + hold) for subject in ep.subjects
                if (issue := state.issues.get(subject)) is not None and issue[2]), default=0)


def _fade_time(state: ComplaintState, rules: Rules) -> int:
    """Event time at which the score decays below ``fade_below``."""
    at = state.score_at or 0
    below = rules.resolution.fade_below
    if state.score < below or below <= 0:
        return at if state.score < below else 2**62
    half_life = rules.score.half_life_hours * _HOUR_MS
    return at + math.floor(half_life * math.log2(state.score / below)) + 1


def _prune(state: ComplaintState, rules: Rules) -> None:
    """Keep the state bounded: drop what no window can reach any more."""
    clock = state.clock
    if clock is None:
        return
    limits = rules.limits
    hop_window = rules.channel_hopping.window_hours * _HOUR_MS
    state.contacts = [c for c in state.contacts if c[0] >= clock - 2 * hop_window]
    state.contacts = state.contacts[-limits.contacts:]
    rc = rules.repeat_contact
    keep = max(rc.window_hours, rc.open_issue_hours) * _HOUR_MS
    state.issues = {k: v for k, v in state.issues.items() if v[0] >= clock - keep}
    idle = rules.web_errors.session_idle_minutes * _MINUTE_MS
    sessions = sorted(((sid, s) for sid, s in state.sessions.items()
                       if s["checkout"] is not None or s["at"] >= clock - idle),
                      key=lambda item: (item[1]["at"], item[0]))
    state.sessions = dict(sessions[-limits.sessions:])
    horizon = clock - rules.score.forget_after_hours * _HOUR_MS
    state.evidence = [e for e in state.evidence if e["at"] >= horizon]
    verdicts = clock - rules.feedback.window_hours * _HOUR_MS
    state.incidents = [i for i in state.incidents if i[0] >= verdicts][-limits.incidents:]


def combine(into: ComplaintState, other: ComplaintState, *,
            rules: Rules) -> tuple[ComplaintState, list[dict[str, Any]]]:
    """Fold ``other`` (a customer merged into ``into``'s customer) into ``into``, in place.

    Both histories count from then on: scores add (decayed to the later of the two
    times), contacts, call issues, sessions and evidence are united. Of two signals the
    one open (or, both open, the earlier detected) goes on under its own id with the
    other's evidence, reasons and channels and the higher severity; the other is closed
    as ``resolved`` at the merge, since its evidence now lives on in the survivor.
    Returns the records to emit: the survivor's new state and the closed one.
    """
    at = max(into.score_at or 0, other.score_at or 0)
    if at:
        _decay_to(into, at, rules)
        _decay_to(other, at, rules)
    into.score += other.score
    into.fresh += other.fresh
    into.clock = max(into.clock or 0, other.clock or 0) or None
    into.seen = list(dict.fromkeys([*into.seen, *other.seen]))[-rules.limits.recent_ids:]
    for reason, issue in other.issues.items():
        held = into.issues.get(reason)
        if held is None or issue[0] > held[0]:
            into.issues[reason] = issue
    into.contacts = sorted([*into.contacts, *other.contacts], key=lambda c: (c[0], str(c[1:])))
    into.incidents = sorted([*into.incidents, *other.incidents],
                            key=lambda i: (i[0], str(i[1:])))
    for sid, session in other.sessions.items():
        into.sessions.setdefault(sid, session)
    into.evidence = sorted([*into.evidence, *other.evidence],
                           key=lambda e: (e["at"], str(e.get("ids"))))
    into.hopped_at = max(into.hopped_at or 0, other.hopped_at or 0) or None
    into.outcomes = sorted([*into.outcomes, *other.outcomes],
                           key=lambda o: (o["at"], str(o.get("event_id"))))
    into.episodes += other.episodes
    records: list[dict[str, Any]] = []
    mine, theirs = into.episode, other.episode
    if theirs is not None and (mine is None or _survives(theirs, mine)):
        mine, theirs = theirs, mine
        into.episode = mine
    if mine is not None and theirs is not None and theirs.status == "open":
        if _rank(theirs.severity) > _rank(mine.severity):
            mine.severity, mine.escalated_at = theirs.severity, theirs.escalated_at
        for name in ("reasons", "channels", "subjects"):
            setattr(mine, name, sorted({*getattr(mine, name), *getattr(theirs, name)}))
        mine.evidence_event_ids = list(dict.fromkeys(
            [*mine.evidence_event_ids, *theirs.evidence_event_ids]))[-rules.limits.evidence_ids:]
        mine.first_evidence_at = min(mine.first_evidence_at, theirs.first_evidence_at)
        if theirs.service_from is not None:
            mine.service_from = min(mine.service_from or theirs.service_from,
                                    theirs.service_from)
        closed = copy.deepcopy(theirs)
        closed.status, closed.closed_at = "resolved", into.clock or closed.detected_at
        records.append(_emit(other, closed, closed.closed_at, rules))
    if mine is not None:
        records.append(_emit(into, mine, into.clock or mine.detected_at, rules))
    _prune(into, rules)
    return into, records


def _survives(candidate: Episode, incumbent: Episode) -> bool:
    """Whether ``candidate`` rather than ``incumbent`` goes on after a merge."""
    if (candidate.status == "open") != (incumbent.status == "open"):
        return candidate.status == "open"
    return (candidate.detected_at, candidate.signal_id) < \
        (incumbent.detected_at, incumbent.signal_id)
