"""Reports for marketing and operations: the SQL behind ``touchpoint report``, and rendering.

One function per report builds a single read-only SELECT (so it can be answered by a
worker holding the embedded warehouse) on the row-level views of migration 0005, with
the period as a WHERE on their time column: exposures by ``exposed_at``, aggregates by
``minute``, ad clicks by ``clicked_at``, events by ``occurred_at``, signals by
``detected_at``. Counts add up exactly over any period, and distinct counts (unique
clickers, customers reached) are counted over the period itself, never summed per day.
The SQL runs unchanged on ClickHouse 18.16 and on chdb. ``docs/reports.md`` explains
every column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from touchpoint.sinks.clickhouse import quote_literal
from touchpoint.sinks.tables import COMPLAINT_SIGNALS
from touchpoint.sinks.views import (
    ad_report_sql,
    campaign_response_sql,
    channel_report_sql,
    touchpoint_scorecard_sql,
)
from touchpoint.streams.rules.complaint_replay import WITHDRAWN

__all__ = [
    "REPORTS",
    "Period",
    "ReportQuery",
    "ads_sql",
    "build_report",
    "campaigns_sql",
    "channels_sql",
    "parse_period",
    "render",
    "signals_sql",
    "touchpoints_sql",
]

REPORTS: Final = ("campaigns", "touchpoints", "ads", "channels", "signals")
FORMATS: Final = ("table", "csv", "json")


@dataclass(frozen=True)
class Period:
    """Event time from ``since`` (inclusive) to ``until`` (exclusive); ``None``: open."""

    since: datetime | None = None
    until: datetime | None = None

    def where(self, column: str) -> str:
        """A WHERE condition on ``column`` (``1`` when the period is open)."""
        parts = []
        if self.since is not None:
            parts.append(f"{column} >= {_datetime_literal(self.since)}")
        if self.until is not None:
            parts.append(f"{column} < {_datetime_literal(self.until)}")
        return " AND ".join(parts) or "1"


def _datetime_literal(moment: datetime) -> str:
    # Whole seconds in UTC: DateTime (18.16) and DateTime64 both compare with it.
    utc = moment.astimezone(UTC)
    return f"toDateTime('{utc:%Y-%m-%d %H:%M:%S}', 'UTC')"


def parse_time(text: str, *, end: bool) -> datetime:
    """``2026-11-01`` (a UTC day) or an ISO-8601 time (offset optional, UTC if none).

    A day given as the ``end`` of a period means its whole day: the period ends at the
    next midnight.
    """
    value = text.strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (2026-11-01) nor a time "
                         f"(2026-11-01T09:00+08:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_period(since: str | None, until: str | None) -> Period:
    """The period of ``--since`` / ``--until``; raises ``ValueError`` naming the problem."""
    period = Period(None if since is None else parse_time(since, end=False),
                    None if until is None else parse_time(until, end=True))
    if period.since is not None and period.until is not None and period.until <= period.since:
        raise ValueError(f"--until ({until}) must be after --since ({since})")
    return period


@dataclass(frozen=True)
class ReportQuery:
    """One report's SQL, its column names, and how each column is shown.

    ``kinds`` maps a column to ``int``, ``money``, ``rate`` (a fraction shown as a
    percentage), ``number``, ``time`` or ``list``; other columns are text.
    """

    name: str
    sql: str
    columns: tuple[str, ...]
    kinds: Mapping[str, str] = field(default_factory=dict)


def _campaign_filter(campaign: str | None) -> str:
    return "" if campaign is None else f" AND campaign_id = {quote_literal(campaign)}"


_FUNNEL: Final = ("exposed", "delivered", "opened", "clicked", "responded", "converted")


def campaigns_sql(period: Period, *, campaign: str | None = None,
                  by_tier: bool = False) -> ReportQuery:
    """Campaign response per campaign x medium x variant (x value tier) over the period.

    Exposures count in the period of their ``exposed_at``; their responses and
    conversions follow them (within their attribution window): the SQL of the
    ``campaign_response`` view (:func:`~touchpoint.sinks.views.campaign_response_sql`).
    """
    keys = ("campaign_id", "medium", "variant", *(("value_tier",) if by_tier else ()))
    where = f" AND {period.where('exposed_at')}{_campaign_filter(campaign)}"
    sql = f"{campaign_response_sql(keys, where=where)}\nORDER BY {', '.join(keys)}"
    columns = (*keys, *_FUNNEL, "revenue", "response_rate", "conversion_rate")
    kinds = {**dict.fromkeys(_FUNNEL, "int"), "revenue": "money", "response_rate": "rate",
             "conversion_rate": "rate"}
    return ReportQuery("campaigns", sql, columns, kinds)


def touchpoints_sql(period: Period) -> ReportQuery:
    """Touchpoint scorecard: per event type, category and 4S stage, ranked by points lost.

    From the per-minute aggregates, late events included: the SQL of the
    ``touchpoint_scorecard`` view (:func:`~touchpoint.sinks.views.touchpoint_scorecard_sql`).
    """
    sql = (f"{touchpoint_scorecard_sql(by_day=False, period=period.where)}\n"
           "ORDER BY negative DESC, share_lost DESC, contacts DESC, channel, type")
    columns = ("rank", "channel", "type", "category", "stage", "contacts", "negative",
               "share_lost")
    return ReportQuery("touchpoints", sql, columns,
                       {"rank": "int", "contacts": "int", "negative": "int",
                        "share_lost": "rate"})


def ads_sql(period: Period, *, campaign: str | None = None) -> ReportQuery:
    """Web ad report per ad: impressions, clicks, unique clickers, repeat rate, dwell.

    The SQL of the ``ad_report`` view (:func:`~touchpoint.sinks.views.ad_report_sql`).
    """
    campaign_filter = _campaign_filter(campaign)

    def during(column: str) -> str:
        return f"{period.where(column)}{campaign_filter}"

    sql = (f"{ad_report_sql(by_day=False, period=during)}\n"
           "ORDER BY clicks DESC, impressions DESC, ad_id, campaign_id")
    columns = ("ad_id", "campaign_id", "impressions", "clicks", "unique_clickers",
               "repeat_rate", "click_rate", "landed_clicks", "mean_dwell_s")
    kinds = {"impressions": "int", "clicks": "int", "unique_clickers": "int",
             "repeat_rate": "number", "click_rate": "rate", "landed_clicks": "int",
             "mean_dwell_s": "number"}
    return ReportQuery("ads", sql, columns, kinds)


def channels_sql(period: Period) -> ReportQuery:
    """Channel report: reach, contacts, purchases, and campaign responses per channel.

    Responses and conversions count in the period in which they happened: the SQL of
    the ``channel_report`` view (:func:`~touchpoint.sinks.views.channel_report_sql`).
    """
    sql = (f"{channel_report_sql(by_day=False, period=period.where)}\n"
           "ORDER BY contacts DESC, channel")
    columns = ("channel", "customers_reached", "contacts", "purchases", "revenue",
               "responses", "conversions", "attributed_revenue")
    kinds = {"customers_reached": "int", "contacts": "int", "purchases": "int",
             "revenue": "money", "responses": "int", "conversions": "int",
             "attributed_revenue": "money"}
    return ReportQuery("channels", sql, columns, kinds)


def signals_sql(period: Period) -> ReportQuery:
    """Complaint signals detected in the period: open first, then by severity and time."""
    sql = f"""SELECT signal_id, customer_id, status, severity, score, detected_at,
    escalated_at, reasons, channels
FROM {COMPLAINT_SIGNALS}
WHERE {period.where("detected_at")} AND status != '{WITHDRAWN}'
ORDER BY indexOf(['open', 'breached', 'resolved'], status),
    indexOf(['critical', 'high', 'watch'], severity), detected_at, signal_id"""
    columns = ("signal_id", "customer_id", "status", "severity", "score", "detected_at",
               "escalated_at", "reasons", "channels")
    kinds = {"score": "number", "detected_at": "time", "escalated_at": "time",
             "reasons": "list", "channels": "list"}
    return ReportQuery("signals", sql, columns, kinds)


def build_report(name: str, period: Period, *, campaign: str | None = None,
                 by_tier: bool = False) -> ReportQuery:
    """The query of report ``name``; raises ``ValueError`` for options it does not take."""
    if name not in REPORTS:
        raise ValueError(f"unknown report {name!r}: use one of {', '.join(REPORTS)}")
    if campaign is not None and name not in ("campaigns", "ads"):
        raise ValueError("--campaign applies to the campaigns and ads reports only")
    if by_tier and name != "campaigns":
        raise ValueError("--by-tier applies to the campaigns report only")
    if name == "campaigns":
        return campaigns_sql(period, campaign=campaign, by_tier=by_tier)
    if name == "ads":
        return ads_sql(period, campaign=campaign)
    if name == "touchpoints":
        return touchpoints_sql(period)
    if name == "channels":
        return channels_sql(period)
    return signals_sql(period)


# --- rendering -----------------------------------------------------------------------------

def records(query: ReportQuery, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Result rows as dictionaries in the report's columns (ranks numbered from 1)."""
    names = [c for c in query.columns if c != "rank"]
    out = []
    for index, row in enumerate(rows, start=1):
        record = dict(zip(names, row, strict=True))
        if "rank" in query.columns:
            record = {"rank": index, **record}
        out.append(record)
    return out


def render(query: ReportQuery, rows: Sequence[Sequence[Any]], fmt: str = "table") -> str:
    """The rows as an aligned terminal table, CSV or JSON (no trailing newline)."""
    data = records(query, rows)
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in r.items()} for r in data],
                          ensure_ascii=False, indent=1)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(query.columns)
        for record in data:
            writer.writerow([_csv_value(record[c]) for c in query.columns])
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    return _table(query, data)


def _table(query: ReportQuery, data: list[dict[str, Any]]) -> str:
    if not data:
        return f"(no {query.name} in this period)"
    kinds = query.kinds
    cells = [[_cell(r[c], kinds.get(c, "text")) for c in query.columns] for r in data]
    right = [kinds.get(c, "text") in ("int", "money", "rate", "number") for c in query.columns]
    header = list(query.columns)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]),
                      *(line(row) for row in cells)])


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "money":
        return f"{float(value):,.2f}"
    if kind == "rate":
        return f"{100 * float(value):.2f}%"
    if kind == "number":
        return f"{float(value):,.{_decimals(value)}f}"
    if kind == "time":
        return _time_text(value)
    if kind == "list":
        return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return str(value)


def _decimals(value: Any) -> int:
    text = repr(float(value))
    return min(3, len(text.split(".")[1])) if "." in text and "e" not in text else 1


def _time_text(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    # through a worker, times arrive as ISO-8601 text
    text = str(value).replace("T", " ")
    return text[:19]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(map(str, value))
    return _plain(value)
