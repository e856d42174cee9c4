"""Complaint signals as operations list them: `touchpoint signals` and the worker's /signals.

Both read the ``complaint_signals`` view (latest state of each signal, customer as
resolved now). Age and time left are measured on *event time*: "now" is the newest
event time in the warehouse, which in live operation is the clock, and in a replay or
the demo's accelerated traffic is where the stream has got to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from touchpoint.sinks.clickhouse import QueryResult
from touchpoint.sinks.tables import COMPLAINT_SIGNALS, EVENTS_RAW
from touchpoint.streams.rules.complaint_replay import WITHDRAWN

__all__ = ["SEVERITIES", "STATUSES", "SignalFilter", "list_signals", "signals_sql"]

SEVERITIES = ("watch", "high", "critical")
#: ``any``: every signal raised; ``withdrawn`` (a later replay in event-time order no longer
#: raises it) is listed only when asked for.
STATUSES = ("open", "resolved", "breached", WITHDRAWN, "any")

COLUMNS = ("signal_id", "customer_id", "severity", "status", "score", "reasons", "channels",
           "detected_at", "escalated_at", "due_at", "first_evidence_at", "evidence_event_ids")


@dataclass(frozen=True)
class SignalFilter:
    """Which signals to list."""

    status: str = "open"
    min_severity: str = "watch"
    customer: str | None = None
    reason: str | None = None
    channel: str | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        if self.limit < 1:
            raise ValueError("limit must be 1 or more")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def signals_sql(which: SignalFilter) -> str:
    """The query for ``which``: most severe first, then the soonest breach, then newest."""
    wanted = SEVERITIES[SEVERITIES.index(which.min_severity):]
    where = [f"severity IN ({', '.join(map(_quote, wanted))})"]
    if which.status != "any":
        where.append(f"status = {_quote(which.status)}")
    else:
        where.append(f"status != {_quote(WITHDRAWN)}")
    if which.customer:
        where.append(f"(customer_id = {_quote(which.customer)} "
                     f"OR stored_customer_id = {_quote(which.customer)})")
    if which.reason:
        where.append(f"has(reasons, {_quote(which.reason)})")
    if which.channel:
        where.append(f"has(channels, {_quote(which.channel)})")
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {COMPLAINT_SIGNALS} WHERE {' AND '.join(where)} "
        "ORDER BY indexOf(['critical', 'high', 'watch'], severity), "
        "isNull(due_at), due_at, detected_at DESC "
        f"LIMIT {int(which.limit)}"
    )


NOW_SQL = f"SELECT max(occurred_at) FROM {EVENTS_RAW}"


def list_signals(query: Callable[[str], QueryResult], which: SignalFilter
                 ) -> tuple[datetime | None, list[dict[str, Any]]]:
    """(event-time now, signals) with ``age_s`` and ``time_left_s`` added to each."""
    now = _as_datetime(query(NOW_SQL).rows[0][0])
    result = query(signals_sql(which))
    signals = []
    for row in result.rows:
        signal = dict(zip(result.columns, row, strict=True))
        detected, due = _as_datetime(signal["detected_at"]), _as_datetime(signal["due_at"])
        signal["age_s"] = None if now is None or detected is None else \
            int((now - detected).total_seconds())
        signal["time_left_s"] = None if now is None or due is None else \
            int((due - now).total_seconds())
        signals.append(signal)
    return now, signals


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("T", " ").rstrip("Z")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC)
    return None


def duration(seconds: int | None) -> str:
    """``3d 4h``, ``5h 12m``, ``7m``; negative as ``overdue 2h``."""
    if seconds is None:
        return "-"
    sign, seconds = ("overdue " if seconds < 0 else ""), abs(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    return f"{sign}{minutes}m"


def table_rows(signals: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Columns and cells for the terminal table."""
    columns = ["severity", "customer", "reasons", "channels", "score", "age", "time left",
               "status", "signal"]
    rows = [[s["severity"], s["customer_id"], ",".join(s["reasons"]), ",".join(s["channels"]),
             f"{s['score']:.1f}", duration(s["age_s"]),
             duration(s["time_left_s"]) if s["status"] == "open" else "-", s["status"],
             s["signal_id"]] for s in signals]
    return columns, rows
