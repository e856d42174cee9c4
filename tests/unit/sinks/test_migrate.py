from __future__ import annotations

import re

from touchpoint.sinks.clickhouse import Capabilities, format_datetime
from touchpoint.sinks.migrate import migrations

OLD = Capabilities((18, 16, 1), datetime64=False, ttl=False, dedup_token=False, map_type=False)
NEW = Capabilities((26, 9, 2), datetime64=True, ttl=True, dedup_token=True, map_type=True)


def test_migrations_are_numbered_in_order() -> None:
    found = migrations()
    assert [(m.version, m.name) for m in found] == [
        (1, "touchpoint_events"), (2, "deadletter"), (3, "customers"),
        (4, "complaint_signals"), (5, "campaigns_and_reports")]


def test_statements_adapt_to_the_engine() -> None:
    events = migrations()[0]
    old = events.statements("tp", OLD)
    new = events.statements("tp", NEW)
    assert len(old) == len(new) == 1
    assert "occurred_at DateTime('UTC')" in old[0] and "DateTime64" not in old[0]
    assert "occurred_at DateTime64(3, 'UTC')" in new[0]
    assert "non_replicated_deduplication_window" in new[0]
    assert "non_replicated_deduplication_window" not in old[0]
    dead_old, dead_new = (migrations()[1].statements("tp", c)[0] for c in (OLD, NEW))
    assert "TTL" not in dead_old
    assert "TTL toDateTime(rejected_at) + INTERVAL 90 DAY" in dead_new
    for statement in old + new:
        assert "{" not in statement and "--" not in statement


def test_datetime_text_form() -> None:
    assert format_datetime(1_794_967_200_250) == "2026-11-18 02:00:00.250"
    assert format_datetime(1_794_967_200_007) == "2026-11-18 02:00:00.007"


def test_campaign_and_report_statements_fill_every_placeholder() -> None:
    reports = migrations()[4]
    old, new = reports.statements("tp", OLD), reports.statements("tp", NEW)
    created = [m.groups() for s in old
               if (m := re.match(r"CREATE (TABLE|VIEW) IF NOT EXISTS (\S+)", s))]
    assert created == [
        ("TABLE", "tp.touchpoint_minute_raw"), ("VIEW", "tp.touchpoint_minute"),
        ("TABLE", "tp.touchpoint_minute_late_raw"), ("VIEW", "tp.touchpoint_minute_late"),
        ("TABLE", "tp.campaign_attribution_raw"), ("VIEW", "tp.campaign_attribution"),
        ("VIEW", "tp.campaign_response"), ("VIEW", "tp.campaign_response_by_tier"),
        ("VIEW", "tp.touchpoint_scorecard"), ("VIEW", "tp.ad_clicks"), ("VIEW", "tp.ad_report"),
        ("VIEW", "tp.channel_report")]
    assert len(new) == len(old)
    assert "minute DateTime('UTC')" in old[0] and "minute DateTime64(3, 'UTC')" in new[0]
    assert "responded_at Nullable(DateTime('UTC'))" in old[4]
    assert "non_replicated_deduplication_window" in new[4]
    for statement in old + new:
        assert "{" not in statement and "--" not in statement
