"""SQL that a migration's view and a report both run: written once here, used by both.

Migration 0005 creates its report views from the functions here, through placeholders
named after the views (``{campaign_response}``, ``{touchpoint_scorecard}``, ...) that
:mod:`touchpoint.sinks.migrate` fills from :data:`VIEW_SQL`. ``touchpoint report``
(:mod:`touchpoint.report`) runs the same SQL over a period of its own, which a view
cannot take as a parameter, and without the view's ``day``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from touchpoint.sinks.tables import (
    AD_CLICKS,
    AD_REPORT,
    CAMPAIGN_ATTRIBUTION_RAW,
    CAMPAIGN_RESPONSE,
    CAMPAIGN_RESPONSE_BY_TIER,
    CHANNEL_REPORT,
    EVENTS,
    EVENTS_RAW,
    TOUCHPOINT_MINUTE_LATE_RAW,
    TOUCHPOINT_MINUTE_RAW,
    TOUCHPOINT_SCORECARD,
)

__all__ = [
    "VIEW_SQL",
    "ad_report_sql",
    "campaign_response_sql",
    "channel_report_sql",
    "touchpoint_scorecard_sql",
]

TimeFilter = Callable[[str], str]
"""A time column -> a WHERE condition on it (``Period.where`` of :mod:`touchpoint.report`)."""

_DAY: Final = "toDate(exposed_at) AS day"


def campaign_response_sql(keys: Sequence[str], *, table: str = CAMPAIGN_ATTRIBUTION_RAW,
                          where: str = "") -> str:
    """Campaign response per ``keys``: the funnel counts, revenue and rates of exposures.

    ``keys`` are columns of ``campaign_attribution_raw``, or ``day`` (the UTC day of the
    exposure). Retracted exposures are left out; ``where`` adds conditions (`` AND ...``).
    Counts are exposures; rates are fractions of exposed (0.0234 = 2.34 %). The SQL runs
    on ClickHouse 18.16 and on chdb alike.
    """
    outer = ", ".join(keys)
    inner = ", ".join(_DAY if key == "day" else key for key in keys)
    return f"""SELECT
    {outer},
    count() AS exposed,
    sum(x_delivered) AS delivered,
    sum(x_opened) AS opened,
    sum(x_clicked) AS clicked,
    sum(x_responded) AS responded,
    sum(x_converted) AS converted,
    round(sum(x_revenue), 2) AS revenue,
    round(responded / exposed, 4) AS response_rate,
    round(converted / exposed, 4) AS conversion_rate
FROM
(
    SELECT
        {inner},
        toUInt64(delivered) AS x_delivered, toUInt64(opened) AS x_opened,
        toUInt64(clicked) AS x_clicked, toUInt64(isNotNull(responded_at)) AS x_responded,
        toUInt64(isNotNull(converted_at)) AS x_converted, revenue AS x_revenue
    FROM (SELECT * FROM {table} FINAL)
    WHERE retracted = 0{where}
)
GROUP BY {outer}"""


def _in(db: str, name: str) -> str:
    return f"{db}.{name}" if db else name


def _and(period: TimeFilter | None, column: str) -> str:
    # one more condition on its own line under a subquery's WHERE
    return "" if period is None else f"\n        AND {period(column)}"


def touchpoint_scorecard_sql(*, by_day: bool, db: str = "",
                             period: TimeFilter | None = None) -> str:
    """Contacts, negative experiences and share lost per event type, category and 4S stage.

    From the per-minute aggregates, late events included; ``by_day`` adds the UTC day of
    the minute. ``period`` filters on ``minute``; ``db`` qualifies the table names.
    """
    day = "day, " if by_day else ""
    inner = "toDate(minute) AS day, " if by_day else ""
    where = "" if period is None else f"\n    WHERE {period('minute')}"
    parts = [f"""    SELECT {inner}channel, type, category, stage,
        events AS m_events, negative AS m_negative
    FROM {_in(db, table)} FINAL{where}"""
             for table in (TOUCHPOINT_MINUTE_RAW, TOUCHPOINT_MINUTE_LATE_RAW)]
    union = "\n    UNION ALL\n".join(parts)
    return f"""SELECT
    {day}channel, type, category, stage,
    sum(m_events) AS contacts,
    sum(m_negative) AS negative,
    round(negative / contacts, 4) AS share_lost
FROM
(
{union}
)
GROUP BY {day}channel, type, category, stage"""


def ad_report_sql(*, by_day: bool, db: str = "", period: TimeFilter | None = None) -> str:
    """Web ads per ad x campaign: impressions, clicks, unique clickers, rates and dwell.

    Repeat and click rate, landed clicks and mean dwell after a click in seconds.
    ``by_day`` adds the UTC day; ``period`` filters impressions on ``occurred_at`` and
    clicks on ``clicked_at`` (a condition on the campaign can ride along with it).
    """
    day = "day, " if by_day else ""
    impression_day = "toDate(occurred_at) AS day, " if by_day else ""
    impressions_and = _and(period, "occurred_at")
    clicks_where = "" if period is None else f"\n    WHERE {period('clicked_at')}"
    return f"""SELECT
    {day}ad_id, campaign_id,
    sum(is_impression) AS impressions,
    sum(is_click) AS clicks,
    uniqExactIf(clicker, is_click = 1) AS unique_clickers,
    if(unique_clickers = 0, NULL, round(clicks / unique_clickers, 3)) AS repeat_rate,
    if(impressions = 0, NULL, round(clicks / impressions, 4)) AS click_rate,
    sum(is_landed) AS landed_clicks,
    if(landed_clicks = 0, NULL, round(sum(dwell_ms) / landed_clicks / 1000, 1)) AS mean_dwell_s
FROM
(
    SELECT {impression_day}ad_id, campaign_id, customer_id AS clicker,
        toUInt64(1) AS is_impression, toUInt64(0) AS is_click, toUInt64(0) AS is_landed,
        toInt64(0) AS dwell_ms
    FROM {_in(db, EVENTS_RAW)} FINAL
    WHERE channel = 'web' AND type = 'ad_impression' AND ad_id != ''{impressions_and}
    UNION ALL
    SELECT {day}ad_id, campaign_id, customer_id AS clicker,
        toUInt64(0) AS is_impression, toUInt64(1) AS is_click, toUInt64(landed) AS is_landed,
        toInt64(ifNull(landing_dwell_ms, 0)) AS dwell_ms
    FROM {_in(db, AD_CLICKS)}{clicks_where}
)
GROUP BY {day}ad_id, campaign_id"""


def channel_report_sql(*, by_day: bool, db: str = "", period: TimeFilter | None = None) -> str:
    """Per channel: reach, contacts, purchases, and the campaign results it brought.

    Customers reached, contacts, purchases and their revenue, and the responses,
    conversions and attributed revenue of campaigns that came through the channel.
    ``by_day`` adds the UTC day. ``period`` filters contacts on ``occurred_at`` and
    responses and conversions on when they happened, so customers reached are distinct
    over the period (per day with ``by_day``, where they do not add up across days).
    """
    day = "day, " if by_day else ""
    contact_day = "toDate(occurred_at) AS day, " if by_day else ""
    response_day = "toDate(assumeNotNull(responded_at)) AS day, " if by_day else ""
    conversion_day = "toDate(assumeNotNull(converted_at)) AS day, " if by_day else ""
    contacts_where = "" if period is None else f"\n    WHERE {period('occurred_at')}"
    responses_and = _and(period, "assumeNotNull(responded_at)")
    conversions_and = _and(period, "assumeNotNull(converted_at)")

    return f"""SELECT
    {day}channel,
    sum(r_customers) AS customers_reached,
    sum(r_contacts) AS contacts,
    sum(r_purchases) AS purchases,
    round(sum(r_revenue), 2) AS revenue,
    sum(r_responses) AS responses,
    sum(r_conversions) AS conversions,
    round(sum(r_attributed), 2) AS attributed_revenue
FROM
(
    SELECT {contact_day}channel,
        uniqExact(customer_id) AS r_customers, count() AS r_contacts,
        countIf(type = 'purchase') AS r_purchases,
        sumIf(ifNull(amount, 0), type = 'purchase') AS r_revenue,
        toUInt64(0) AS r_responses, toUInt64(0) AS r_conversions,
        toFloat64(0) AS r_attributed
    FROM {_in(db, EVENTS)}{contacts_where}
    GROUP BY {day}channel
    UNION ALL
    SELECT {response_day}response_channel AS channel,
        toUInt64(0) AS r_customers, toUInt64(0) AS r_contacts, toUInt64(0) AS r_purchases,
        toFloat64(0) AS r_revenue, count() AS r_responses, toUInt64(0) AS r_conversions,
        toFloat64(0) AS r_attributed
    FROM (SELECT * FROM {_in(db, CAMPAIGN_ATTRIBUTION_RAW)} FINAL)
    WHERE retracted = 0 AND isNotNull(responded_at){responses_and}
    GROUP BY {day}channel
    UNION ALL
    SELECT {conversion_day}conversion_channel AS channel,
        toUInt64(0) AS r_customers, toUInt64(0) AS r_contacts, toUInt64(0) AS r_purchases,
        toFloat64(0) AS r_revenue, toUInt64(0) AS r_responses, count() AS r_conversions,
        sum(revenue) AS r_attributed
    FROM (SELECT * FROM {_in(db, CAMPAIGN_ATTRIBUTION_RAW)} FINAL)
    WHERE retracted = 0 AND isNotNull(converted_at){conversions_and}
    GROUP BY {day}channel
)
GROUP BY {day}channel"""


_RESPONSE_KEYS: Final = ("campaign_id", "day", "medium", "variant")

# Placeholder name -> the view's SELECT in database ``db``.
VIEW_SQL: Final[Mapping[str, Callable[[str], str]]] = MappingProxyType({
    CAMPAIGN_RESPONSE: lambda db: campaign_response_sql(
        _RESPONSE_KEYS, table=f"{db}.{CAMPAIGN_ATTRIBUTION_RAW}"),
    CAMPAIGN_RESPONSE_BY_TIER: lambda db: campaign_response_sql(
        (*_RESPONSE_KEYS, "value_tier"), table=f"{db}.{CAMPAIGN_ATTRIBUTION_RAW}"),
    TOUCHPOINT_SCORECARD: lambda db: touchpoint_scorecard_sql(by_day=True, db=db),
    AD_REPORT: lambda db: ad_report_sql(by_day=True, db=db),
    CHANNEL_REPORT: lambda db: channel_report_sql(by_day=True, db=db),
})
