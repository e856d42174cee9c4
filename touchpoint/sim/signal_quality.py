"""How good complaint signals are, judged against labelled journeys (:mod:`.scenarios`).

``evaluate(truth, signals)`` compares complaint-signal records (every state of every
signal) with what really happened to each customer and returns a :class:`QualityReport`:
recall and median lead time (any signal before the complaint), the same for alarms
(``high`` or ``critical``), precision of alarms and false alarms per 1,000 satisfied
customers, overall, per channel mix (which of ``phone``, ``store`` and ``web`` the
customer used, campaign messages and feedback not counted) and per value tier. Signals
are matched to customers by ``customer_id``, else through their evidence events when
``events`` are given. The exact definitions are in docs/design/signals.md.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from touchpoint.schemas.contract import normalize_email, normalize_phone
from touchpoint.sim.scenarios import CustomerTruth
from touchpoint.streams.rules.complaint_replay import WITHDRAWN

__all__ = [
    "ALARM_SEVERITIES",
    "MIX_GROUPS",
    "Metrics",
    "QualityReport",
    "channel_mix",
    "evaluate",
]

ALARM_SEVERITIES: Final = frozenset({"high", "critical"})
MIX_GROUPS: Final = ("phone", "store", "web", "phone+store", "phone+web", "store+web",
                     "phone+store+web", "none")
_CONTACT_CHANNELS: Final = (("callcenter", "phone"), ("store", "store"), ("web", "web"))
_HOUR_MS: Final = 3_600_000


def channel_mix(channels: Iterable[str]) -> str:
    """Return the channel-mix group (``MIX_GROUPS``) of a customer who used ``channels``."""
    used = set(channels)
    names = [name for channel, name in _CONTACT_CHANNELS if channel in used]
    return "+".join(names) if names else "none"


@dataclass(frozen=True, slots=True)
class Metrics:
    """Signal quality over one group of customers; None where a share has no denominator."""

    customers: int
    heading: int  # customers with a formal complaint or a cancel call
    caught: int  # heading customers with a signal (any severity) before it
    recall: float | None
    median_lead_hours: float | None
    caught_alarm: int  # heading customers with a high/critical signal before it
    alarm_recall: float | None
    median_alarm_lead_hours: float | None
    alarmed: int  # customers with a high/critical signal (before their complaint, if any)
    precision: float | None
    satisfied: int
    false_alarms: int  # satisfied customers with a high/critical signal
    false_alarms_per_1000: float | None
    noisy: int
    noisy_alarms: int  # noisy customers with a high/critical signal


@dataclass(frozen=True)
class QualityReport:
    """Signal quality overall, by channel mix and by value tier."""

    overall: Metrics
    by_channel_mix: Mapping[str, Metrics]
    by_value_tier: Mapping[str, Metrics]
    signals: int  # distinct signal ids
    states: int  # signal records read
    unmatched_signals: int  # signal ids matching no customer of the truth
    unmatched_customer_ids: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready)."""
        return {
            "signals": self.signals,
            "states": self.states,
            "unmatched_signals": self.unmatched_signals,
            "unmatched_customer_ids": list(self.unmatched_customer_ids),
            "overall": asdict(self.overall),
            "by_channel_mix": {k: asdict(v) for k, v in self.by_channel_mix.items()},
            "by_value_tier": {k: asdict(v) for k, v in self.by_value_tier.items()},
        }

    def format(self) -> str:
        """A readable table: one row for all customers, then per channel mix and tier."""
        columns: tuple[tuple[str, Callable[[Metrics], str]], ...] = (
            ("customers", lambda m: str(m.customers)),
            ("heading", lambda m: str(m.heading)),
            ("recall", lambda m: _share(m.recall)),
            ("lead h", lambda m: _number(m.median_lead_hours)),
            ("alarm recall", lambda m: _share(m.alarm_recall)),
            ("alarm lead h", lambda m: _number(m.median_alarm_lead_hours)),
            ("precision", lambda m: _share(m.precision)),
            ("FA/1000 sat", lambda m: _number(m.false_alarms_per_1000)),
            ("noisy alarms", lambda m: f"{m.noisy_alarms}/{m.noisy}"),
        )
        rows: list[tuple[str, Metrics]] = [("all customers", self.overall)]
        rows += [(f"mix {name}", m) for name, m in self.by_channel_mix.items()]
        rows += [(f"tier {name}", m) for name, m in self.by_value_tier.items()]
        table = [["group", *(title for title, _ in columns)]]
        table += [[name, *(cell(m) for _, cell in columns)] for name, m in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [f"{self.signals} signals ({self.states} states), "
                 f"{self.unmatched_signals} matching no customer"]
        for index, row in enumerate(table):
            cells = [row[0].ljust(widths[0])]
            cells += [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)


def evaluate(truth: Mapping[str, CustomerTruth] | Iterable[CustomerTruth],
             signals: Iterable[Mapping[str, Any]], *,
             events: Iterable[tuple[str, Mapping[str, Any]]] | None = None,
             phone_region: str = "CN") -> QualityReport:
    """Score complaint ``signals`` against ``truth`` (see the module for the metrics).

    ``signals`` are complaint-signal records (dicts with at least ``signal_id``,
    ``customer_id``, ``detected_at`` and ``severity``; ``escalated_at`` and
    ``evidence_event_ids`` are used when present). Times may be epoch milliseconds,
    datetimes or ISO-8601 strings; times without an offset are read as UTC. ``events``
    (channel and event pairs, e.g. ``Scenario.events``) let signals keyed by an
    unlinked identifier be matched to their customer through their evidence;
    ``phone_region`` reads phone numbers written without a country code.
    """
    customers = dict(truth) if isinstance(truth, Mapping) else {t.customer_id: t for t in truth}
    states = 0
    merged: dict[str, _Signal] = {}
    # signal id -> (revision, position, status) of its latest state
    latest: dict[str, tuple[int, int, str]] = {}
    for n, record in enumerate(signals):
        states += 1
        state = _Signal.read(record)
        known = merged.get(state.signal_id)
        merged[state.signal_id] = state if known is None else known.merge(state)
        order = (int(record.get("revision") or 0), n, str(record.get("status")))
        if state.signal_id not in latest or order[:2] >= latest[state.signal_id][:2]:
            latest[state.signal_id] = order
    # A signal that a replay in event-time order withdrew was never raised.
    for signal_id, (_, _, status) in latest.items():
        if status == WITHDRAWN:
            del merged[signal_id]
    owners = event_owners(customers, events, phone_region) if events is not None else {}
    by_customer: dict[str, list[_Signal]] = defaultdict(list)
    unmatched: list[str] = []
    for signal in merged.values():
        customer_id = signal.owner(customers, owners)
        if customer_id is None:
            unmatched.append(signal.signal_id)
        else:
            by_customer[customer_id].append(signal)
    outcomes = {cid: _Outcome.of(customer, by_customer.get(cid, ()))
                for cid, customer in customers.items()}
    mixes: dict[str, list[_Outcome]] = {name: [] for name in MIX_GROUPS}
    tiers: dict[str, list[_Outcome]] = defaultdict(list)
    for cid, customer in customers.items():
        mixes[channel_mix(customer.channels)].append(outcomes[cid])
        tiers[customer.value_tier].append(outcomes[cid])
    return QualityReport(
        overall=_metrics(outcomes.values()),
        by_channel_mix={name: _metrics(group) for name, group in mixes.items() if group},
        by_value_tier={name: _metrics(tiers[name]) for name in sorted(tiers)},
        signals=len(merged), states=states, unmatched_signals=len(unmatched),
        unmatched_customer_ids=tuple(sorted({merged[s].customer_ids[-1] for s in unmatched})),
    )


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signal:
    """What matters of one signal over all its states."""

    signal_id: str
    customer_ids: tuple[str, ...]  # in the order the states named them
    detected_at: int
    alarm_at: int | None  # when it first reached high or critical
    evidence: frozenset[str]

    @classmethod
    def read(cls, record: Mapping[str, Any]) -> _Signal:
        missing = [name for name in ("signal_id", "customer_id", "detected_at", "severity")
                   if record.get(name) is None]
        if missing:
            raise ValueError(f"signal record {_short(record)} has no {', '.join(missing)}: "
                             "pass complaint_signal records (schemas/avro/complaint_signal)")
        detected_at = _millis(record["detected_at"], "detected_at")
        alarm_at = None
        if str(record["severity"]).lower() in ALARM_SEVERITIES:
            escalated = record.get("escalated_at")
            alarm_at = (detected_at if escalated is None
                        else _millis(escalated, "escalated_at"))
        return cls(str(record["signal_id"]), (str(record["customer_id"]),), detected_at,
                   alarm_at, frozenset(map(str, record.get("evidence_event_ids") or ())))

    def merge(self, other: _Signal) -> _Signal:
        alarms = [t for t in (self.alarm_at, other.alarm_at) if t is not None]
        ids = self.customer_ids + tuple(c for c in other.customer_ids
                                        if c not in self.customer_ids)
        return _Signal(self.signal_id, ids, min(self.detected_at, other.detected_at),
                       min(alarms) if alarms else None, self.evidence | other.evidence)

    def owner(self, customers: Mapping[str, CustomerTruth],
              owners: Mapping[str, str]) -> str | None:
        """Return the truth customer this signal is about, or None."""
        known = [c for c in self.customer_ids if c in customers]
        if known:
            return known[-1]  # the latest id, e.g. after a merge into the CRM id
        votes = Counter(owners[e] for e in self.evidence if e in owners)
        return votes.most_common(1)[0][0] if votes else None


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One customer's truth against the signals about them."""

    label: str
    heading: bool
    lead_ms: int | None  # complaint_at - earliest detected_at before it
    alarm_lead_ms: int | None  # complaint_at - earliest alarm before it
    alarmed: bool  # high/critical reached (before the complaint, if any)

    @classmethod
    def of(cls, truth: CustomerTruth, signals: Iterable[_Signal]) -> _Outcome:
        signals = list(signals)
        alarms = [s.alarm_at for s in signals if s.alarm_at is not None]
        if truth.complaint_at is None:
            return cls(truth.label, False, None, None, bool(alarms))
        complaint_at = _millis(truth.complaint_at, "complaint_at")
        detected = [s.detected_at for s in signals if s.detected_at < complaint_at]
        alarms = [t for t in alarms if t < complaint_at]
        return cls(truth.label, truth.heading,
                   complaint_at - min(detected) if detected else None,
                   complaint_at - min(alarms) if alarms else None, bool(alarms))


def _metrics(outcomes: Iterable[_Outcome]) -> Metrics:
    outcomes = list(outcomes)
    heading = [o for o in outcomes if o.heading]
    leads = [o.lead_ms / _HOUR_MS for o in heading if o.lead_ms is not None]
    alarm_leads = [o.alarm_lead_ms / _HOUR_MS for o in heading if o.alarm_lead_ms is not None]
    alarmed = [o for o in outcomes if o.alarmed]
    satisfied = [o for o in outcomes if o.label == "satisfied"]
    false_alarms = sum(o.alarmed for o in satisfied)
    noisy = [o for o in outcomes if o.label == "noisy"]
    return Metrics(
        customers=len(outcomes),
        heading=len(heading),
        caught=len(leads),
        recall=_ratio(len(leads), len(heading)),
        median_lead_hours=statistics.median(leads) if leads else None,
        caught_alarm=len(alarm_leads),
        alarm_recall=_ratio(len(alarm_leads), len(heading)),
        median_alarm_lead_hours=statistics.median(alarm_leads) if alarm_leads else None,
        alarmed=len(alarmed),
        precision=_ratio(sum(o.heading for o in alarmed), len(alarmed)),
        satisfied=len(satisfied),
        false_alarms=false_alarms,
        false_alarms_per_1000=(None if not satisfied
                               else 1000 * false_alarms / len(satisfied)),
        noisy=len(noisy),
        noisy_alarms=sum(o.alarmed for o in noisy),
    )


def event_owners(customers: Mapping[str, CustomerTruth],
                  events: Iterable[tuple[str, Mapping[str, Any]]],
                  region: str) -> dict[str, str]:
    """Return event_id -> truth customer, by the identifiers each event carries."""
    index: dict[tuple[str, str], str] = {}
    for record in customers.values():
        if record.phone:  # already normalized: digits with country code
            index["phone", record.phone] = record.customer_id
        if record.email:
            index["email", normalize_email(record.email) or record.email] = record.customer_id
        for device in record.devices:
            index["anonymous_id", device] = record.customer_id
    owners: dict[str, str] = {}
    for _channel, event in events:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            continue
        customer_id = event.get("customer_id")
        if isinstance(customer_id, str) and customer_id in customers:
            owners[event_id] = customer_id
            continue
        for key in _identifiers(event, region):
            owner = index.get(key)
            if owner is not None:
                owners[event_id] = owner
                break
    return owners


def _identifiers(event: Mapping[str, Any], region: str) -> Iterable[tuple[str, str]]:
    phone, email, device = event.get("phone"), event.get("email"), event.get("anonymous_id")
    if isinstance(phone, str):
        yield "phone", normalize_phone(phone, region) or phone.strip()
    if isinstance(email, str):
        yield "email", normalize_email(email) or email.strip()
    if isinstance(device, str):
        yield "anonymous_id", device


def _millis(value: object, name: str) -> int:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return _millis(datetime.fromisoformat(value.strip().replace(" ", "T")), name)
        except ValueError:
            pass
    raise ValueError(f"{name}={value!r} is not a time: pass epoch milliseconds, a datetime "
                     "or ISO-8601")


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _short(record: Mapping[str, Any]) -> str:
    text = repr(dict(record))
    return text if len(text) <= 120 else text[:117] + "..."
