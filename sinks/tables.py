"""The names of the warehouse's tables and views: one constant per name the migrations create.

Python code names a table through these constants (batches the sinks insert, the SQL of
reports, the dashboard, ``touchpoint signals`` and the demo); the DDL in
``sinks/migrations/*.sql`` spells the same names out, and
``tests/unit/sinks/test_tables.py`` checks that the two agree: every constant here is
created by a migration and every table or view a migration creates is named here once.
``*_RAW`` tables are what the worker writes; the view without the suffix is what people
read (latest version of each row, customer as resolved now).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AD_CLICKS",
    "AD_REPORT",
    "CAMPAIGN_ATTRIBUTION",
    "CAMPAIGN_ATTRIBUTION_RAW",
    "CAMPAIGN_RESPONSE",
    "CAMPAIGN_RESPONSE_BY_TIER",
    "CHANNEL_REPORT",
    "COMPLAINT_SIGNALS",
    "COMPLAINT_SIGNALS_RAW",
    "CUSTOMER_ALIASES",
    "CUSTOMER_PROFILES",
    "CUSTOMER_PROFILES_RAW",
    "DEADLETTER",
    "DEADLETTER_RAW",
    "EVENTS",
    "EVENTS_RAW",
    "IDENTITY_MERGES",
    "MIGRATED",
    "SCHEMA_MIGRATIONS",
    "TOUCHPOINT_MINUTE",
    "TOUCHPOINT_MINUTE_LATE",
    "TOUCHPOINT_MINUTE_LATE_RAW",
    "TOUCHPOINT_MINUTE_RAW",
    "TOUCHPOINT_SCORECARD",
]

# 0001: events
EVENTS_RAW: Final = "touchpoint_events_raw"
EVENTS: Final = "touchpoint_events"
# 0002: dead letters
DEADLETTER_RAW: Final = "deadletter_raw"
DEADLETTER: Final = "deadletter"
# 0003: customers and identity
CUSTOMER_PROFILES_RAW: Final = "customer_profiles_raw"
CUSTOMER_PROFILES: Final = "customer_profiles"
IDENTITY_MERGES: Final = "identity_merges"
CUSTOMER_ALIASES: Final = "customer_aliases"
# 0004: complaint signals
COMPLAINT_SIGNALS_RAW: Final = "complaint_signals_raw"
COMPLAINT_SIGNALS: Final = "complaint_signals"
# 0005: per-minute aggregates, campaigns and the report views
TOUCHPOINT_MINUTE_RAW: Final = "touchpoint_minute_raw"
TOUCHPOINT_MINUTE: Final = "touchpoint_minute"
TOUCHPOINT_MINUTE_LATE_RAW: Final = "touchpoint_minute_late_raw"
TOUCHPOINT_MINUTE_LATE: Final = "touchpoint_minute_late"
CAMPAIGN_ATTRIBUTION_RAW: Final = "campaign_attribution_raw"
CAMPAIGN_ATTRIBUTION: Final = "campaign_attribution"
CAMPAIGN_RESPONSE: Final = "campaign_response"
CAMPAIGN_RESPONSE_BY_TIER: Final = "campaign_response_by_tier"
TOUCHPOINT_SCORECARD: Final = "touchpoint_scorecard"
AD_CLICKS: Final = "ad_clicks"
AD_REPORT: Final = "ad_report"
CHANNEL_REPORT: Final = "channel_report"

#: Every table and view ``sinks/migrations/*.sql`` creates.
MIGRATED: Final[frozenset[str]] = frozenset({
    EVENTS_RAW, EVENTS, DEADLETTER_RAW, DEADLETTER,
    CUSTOMER_PROFILES_RAW, CUSTOMER_PROFILES, IDENTITY_MERGES, CUSTOMER_ALIASES,
    COMPLAINT_SIGNALS_RAW, COMPLAINT_SIGNALS,
    TOUCHPOINT_MINUTE_RAW, TOUCHPOINT_MINUTE, TOUCHPOINT_MINUTE_LATE_RAW,
    TOUCHPOINT_MINUTE_LATE, CAMPAIGN_ATTRIBUTION_RAW, CAMPAIGN_ATTRIBUTION,
    CAMPAIGN_RESPONSE, CAMPAIGN_RESPONSE_BY_TIER, TOUCHPOINT_SCORECARD,
    AD_CLICKS, AD_REPORT, CHANNEL_REPORT,
})

#: The applied migrations' record, created by :func:`touchpoint.sinks.migrate.migrate`.
SCHEMA_MIGRATIONS: Final = "schema_migrations"
