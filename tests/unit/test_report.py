"""Unit tests of touchpoint report: periods, SQL, rendering, and the SQL on embedded chdb."""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from touchpoint.cli import main
from touchpoint.exceptions import WarehouseUnavailable
from touchpoint.report import (
    Period,
    ReportQuery,
    build_report,
    campaigns_sql,
    parse_period,
    parse_time,
    render,
)
from touchpoint.sim.campaign_scenario import CampaignScenario, generate
from touchpoint.sinks.clickhouse import Warehouse, connect
from touchpoint.sinks.migrate import migrate
from touchpoint.streams.rules.aggregates import LATE_COLUMNS, MINUTE_COLUMNS
from touchpoint.streams.rules.aggregates import row_values as minute_values
from touchpoint.streams.rules.attribution import ATTRIBUTION_COLUMNS, row_values

from .campaign_helpers import FLAGS, load_warehouse

START = datetime(2026, 11, 2, tzinfo=UTC)


# --- periods -------------------------------------------------------------------------------

def test_a_day_starts_at_midnight_utc_and_ends_after_it() -> None:
    assert parse_time("2026-11-05", end=False) == datetime(2026, 11, 5, tzinfo=UTC)
    assert parse_time("2026-11-05", end=True) == datetime(2026, 11, 6, tzinfo=UTC)


def test_times_keep_their_offset_and_default_to_utc() -> None:
    cst = timezone(timedelta(hours=8))
    assert parse_time("2026-11-05T09:30+08:00", end=True) == datetime(2026, 11, 5, 9, 30,
                                                                      tzinfo=cst)
    assert parse_time("2026-11-05T09:30Z", end=False) == datetime(2026, 11, 5, 9, 30, tzinfo=UTC)
    assert parse_time("2026-11-05T09:30", end=False) == datetime(2026, 11, 5, 9, 30, tzinfo=UTC)


def test_bad_periods_name_the_problem() -> None:
    with pytest.raises(ValueError, match="neither a date"):
        parse_time("last week", end=False)
    with pytest.raises(ValueError, match=r"--until .* must be after --since"):
        parse_period("2026-11-05", "2026-11-04")
    assert parse_period(None, None) == Period()


def test_period_conditions_are_utc_whole_seconds() -> None:
    period = parse_period("2026-11-05T09:30:15.600+08:00", "2026-11-06")
    assert period.where("t") == ("t >= toDateTime('2026-11-05 01:30:15', 'UTC') AND "
                                 "t < toDateTime('2026-11-07 00:00:00', 'UTC')")
    assert Period().where("t") == "1"


# --- queries -------------------------------------------------------------------------------

def test_each_report_filters_its_own_time_column() -> None:
    period = parse_period("2026-11-05", None)
    since = "toDateTime('2026-11-05 00:00:00', 'UTC')"
    assert f"exposed_at >= {since}" in build_report("campaigns", period).sql
    assert f"minute >= {since}" in build_report("touchpoints", period).sql
    ads = build_report("ads", period).sql
    assert f"clicked_at >= {since}" in ads and f"occurred_at >= {since}" in ads
    channels = build_report("channels", period).sql
    assert f"assumeNotNull(responded_at) >= {since}" in channels
    assert f"detected_at >= {since}" in build_report("signals", period).sql


def test_campaign_filter_is_quoted() -> None:
    sql = campaigns_sql(Period(), campaign="O'Brien\\x").sql
    assert "campaign_id = 'O\\'Brien\\\\x'" in sql
    assert "campaign_id = 'CMP-1'" in build_report("ads", Period(), campaign="CMP-1").sql


def test_options_a_report_does_not_take_are_refused() -> None:
    with pytest.raises(ValueError, match="--campaign applies to the campaigns and ads"):
        build_report("channels", Period(), campaign="C1")
    with pytest.raises(ValueError, match="--by-tier applies to the campaigns report"):
        build_report("ads", Period(), by_tier=True)
    with pytest.raises(ValueError, match="unknown report"):
        build_report("funnels", Period())
    by_tier = build_report("campaigns", Period(), by_tier=True)
    assert by_tier.columns[:4] == ("campaign_id", "medium", "variant", "value_tier")
    assert "GROUP BY campaign_id, medium, variant, value_tier" in by_tier.sql


def test_every_report_is_one_read_only_statement() -> None:
    for name in ("campaigns", "touchpoints", "ads", "channels", "signals"):
        sql = build_report(name, parse_period("2026-11-01", "2026-11-30")).sql
        assert sql.lstrip().startswith("SELECT") and ";" not in sql, name


# --- rendering -----------------------------------------------------------------------------

QUERY = ReportQuery("campaigns", "", ("campaign_id", "exposed", "revenue", "response_rate",
                                      "when", "reasons"),
                    {"exposed": "int", "revenue": "money", "response_rate": "rate",
                     "when": "time", "reasons": "list"})
ROWS = [("C1", 1234, 5678.5, 0.0234, datetime(2026, 11, 5, 9, 30, tzinfo=UTC), ["a", "b"]),
        ("LONGER-ID", 7, 0.0, 0.5, "2026-11-05T10:00:00+00:00", []),
        ("C3", 0, None, None, None, ["x"])]


def test_table_aligns_numbers_right_and_shows_rates_as_percentages() -> None:
    lines = render(QUERY, ROWS).splitlines()
    assert lines[0].split() == ["campaign_id", "exposed", "revenue", "response_rate", "when",
                                "reasons"]
    assert lines[1].startswith("-----------  -------")
    assert lines[2] == ("C1             1,234  5,678.50          2.34%  "
                        "2026-11-05 09:30:00  a, b")
    assert lines[3] == ("LONGER-ID          7      0.00         50.00%  "
                        "2026-11-05 10:00:00")
    assert lines[4] == "C3                 0         -              -  -                    x"


def test_csv_and_json_keep_raw_values() -> None:
    rows = list(csv.reader(io.StringIO(render(QUERY, ROWS, "csv"))))
    assert rows[0] == list(QUERY.columns)
    assert rows[1] == ["C1", "1234", "5678.5", "0.0234", "2026-11-05T09:30:00+00:00", "a;b"]
    assert rows[3] == ["C3", "0", "", "", "", "x"]
    data = json.loads(render(QUERY, ROWS, "json"))
    assert data[0] == {"campaign_id": "C1", "exposed": 1234, "revenue": 5678.5,
                       "response_rate": 0.0234, "when": "2026-11-05T09:30:00+00:00",
                       "reasons": ["a", "b"]}


def test_ranked_reports_number_their_rows_and_empty_ones_say_so() -> None:
    query = build_report("touchpoints", Period())
    rows = [("callcenter", "call_ended", "personnel", "satisfaction", 10, 4, 0.4),
            ("web", "error", "channel", "site", 3, 3, 1.0)]
    assert [r["rank"] for r in json.loads(render(query, rows, "json"))] == [1, 2]
    assert render(query, [], "table") == "(no touchpoints in this period)"
    with pytest.raises(ValueError, match="unknown format"):
        render(query, rows, "xml")


# --- the SQL on a real engine: embedded chdb -----------------------------------------------

@pytest.fixture(scope="module")
def scenario() -> CampaignScenario:
    return generate(seed=5, customers=80, start=START)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory,
           scenario: CampaignScenario) -> Iterator[tuple[Warehouse, dict[str, Any]]]:
    folder: Path = tmp_path_factory.mktemp("chdb")
    with connect(f"chdb://{folder}?database=reports") as warehouse:
        migrate(warehouse)
        computed = load_warehouse(warehouse, scenario.events)
        warehouse.use_database()
        yield warehouse, computed


def run(warehouse: Warehouse, name: str, period: Period | None = None,
        **options: Any) -> list[dict[str, Any]]:
    query = build_report(name, period or Period(), **options)
    result = warehouse.query(query.sql)
    return json.loads(render(query, result.rows, "json"))


def check_reports(warehouse: Warehouse, scenario: CampaignScenario,
                  computed: dict[str, Any]) -> None:
    """Every report on a warehouse loaded by ``load_warehouse`` equals the known truth."""
    expected = scenario.expected
    campaigns = run(warehouse, "campaigns")
    assert [{k: r[k] for k in ("campaign_id", "medium", "variant", *FLAGS, "revenue")}
            for r in campaigns] == expected["campaigns"]
    for row in campaigns:
        assert row["response_rate"] == round(row["responded"] / row["exposed"], 4)
    one = expected["campaigns"][0]
    only = run(warehouse, "campaigns", campaign=one["campaign_id"])
    assert {r["campaign_id"] for r in only} == {one["campaign_id"]}

    view = warehouse.query(
        "SELECT campaign_id, medium, variant, sum(exposed), sum(delivered), sum(opened), "
        "sum(clicked), sum(responded), sum(converted), round(sum(revenue), 2) "
        "FROM campaign_response GROUP BY campaign_id, medium, variant "
        "ORDER BY campaign_id, medium, variant").rows
    assert [dict(zip(("campaign_id", "medium", "variant", *FLAGS, "revenue"), row,
                     strict=True)) for row in view] == expected["campaigns"]
    tiers = warehouse.query("SELECT sum(exposed) FROM campaign_response_by_tier").scalar()
    assert tiers == sum(c["exposed"] for c in expected["campaigns"])

    minutes = warehouse.query(
        "SELECT minute, channel, sum(events), round(sum(revenue), 2) FROM touchpoint_minute "
        "WHERE minute < toDateTime('2030-01-01 00:00:00', 'UTC') "
        "GROUP BY minute, channel ORDER BY minute, channel").rows
    assert [{"minute": m.astimezone(UTC).isoformat(timespec="milliseconds"), "channel": c,
             "events": n, "revenue": r} for m, c, n, r in minutes] == expected["minutes"]

    channels = {r["channel"]: r for r in run(warehouse, "channels")}
    assert {c: r["contacts"] for c, r in channels.items()} == expected["channels"]
    assert sum(r["responses"] for r in channels.values()) == \
        sum(c["responded"] for c in expected["campaigns"])
    assert sum(r["conversions"] for r in channels.values()) == \
        sum(c["converted"] for c in expected["campaigns"])
    assert round(sum(r["attributed_revenue"] for r in channels.values()), 2) == \
        round(sum(c["revenue"] for c in expected["campaigns"]), 2)
    purchases = Counter(e["channel"] for _, e in computed["pairs"] if e["type"] == "purchase")
    assert {c: r["purchases"] for c, r in channels.items() if r["purchases"]} == purchases

    scorecard = run(warehouse, "touchpoints", Period(None, datetime(2030, 1, 1, tzinfo=UTC)))
    assert sum(r["contacts"] for r in scorecard) == expected["events"]
    assert [r["rank"] for r in scorecard] == list(range(1, len(scorecard) + 1))

    clicks = [e for _, e in computed["pairs"] if e["type"] == "ad_click"]
    ads = run(warehouse, "ads")
    assert sum(r["clicks"] for r in ads) == len(clicks)
    by_ad = Counter(e["ad_id"] for e in clicks)
    assert {r["ad_id"]: r["clicks"] for r in ads if r["clicks"]} == by_ad
    for row in ads:
        if row["clicks"]:
            assert row["repeat_rate"] == round(row["clicks"] / row["unique_clickers"], 3)
            assert row["landed_clicks"] == row["clicks"]  # every click lands in this scenario
            assert row["mean_dwell_s"] is not None and row["mean_dwell_s"] >= 3.0

    # Periods cut exposures by exposed_at: the halves add up to the whole.
    split = datetime.fromisoformat(expected["start"]) + timedelta(days=4)
    halves = [run(warehouse, "campaigns", Period(None, split)),
              run(warehouse, "campaigns", Period(split, None))]
    assert sum(r["exposed"] for half in halves for r in half) == \
        sum(c["exposed"] for c in expected["campaigns"])
    assert run(warehouse, "signals", parse_period("2026-11-01", None)) == []


def test_reports_equal_the_known_truth_on_chdb(
        loaded: tuple[Warehouse, dict[str, Any]], scenario: CampaignScenario) -> None:
    warehouse, computed = loaded
    check_reports(warehouse, scenario, computed)


def test_views_read_the_latest_row_and_skip_retracted_ones(
        loaded: tuple[Warehouse, dict[str, Any]], scenario: CampaignScenario) -> None:
    warehouse, computed = loaded
    stored = computed["stored"]
    live = sorted(x for x, r in stored.items() if not r["retracted"])
    rows = warehouse.query("SELECT exposure_id, version FROM campaign_attribution "
                           "ORDER BY exposure_id").rows
    assert [r[0] for r in rows] == live
    assert dict(rows) == {x: stored[x]["version"] for x in live}
    # A newer retraction in another part hides the older live row (FINAL, then the filter).
    row = {**next(iter(stored.values())), "exposure_id": "x-retracted-later",
           "retracted": 0, "version": 1}
    warehouse.insert("campaign_attribution_raw", ATTRIBUTION_COLUMNS, [row_values(row)])
    warehouse.insert("campaign_attribution_raw", ATTRIBUTION_COLUMNS,
                     [row_values({**row, "retracted": 1, "version": 2})])
    assert warehouse.query("SELECT count() FROM campaign_attribution "
                           "WHERE exposure_id = 'x-retracted-later'").scalar() == 0
    assert warehouse.query("SELECT sum(exposed) FROM campaign_response").scalar() == len(live)
    # Only visitors who never logged in keep a generated id; the anonymous visitors who
    # logged in show the CRM customer they are.
    stories = scenario.expected["stories"]
    web = dict(warehouse.query(
        "SELECT customer_id LIKE 'u-%' AS anonymous, count() FROM campaign_attribution "
        "WHERE campaign_id = 'CMP-WEB-11' GROUP BY anonymous").rows)
    assert web == {1: stories["anonymous_only"],
                   0: stories["anonymous_then_login"] + stories["ads_seen_twice"]}


def test_the_minute_views_add_up_the_parts(loaded: tuple[Warehouse, dict[str, Any]]) -> None:
    # Two input partitions counted the same minute and key (year 2030: apart from the
    # scenario); each wrote two versions, and a late row came in a third partition.
    warehouse, _ = loaded
    minute = int(datetime(2030, 1, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
    base = {"minute": minute, "channel": "store", "type": "served", "store_id": "S1",
            "campaign_id": "", "category": "personnel", "stage": "shopping", "revenue": 0.0,
            "wait_s_sum": 0, "wait_count": 0, "negative": 0}
    for part, events in ((0, 4), (1, 6)):
        for version in (events - 1, events):
            row = {**base, "part": part, "events": version, "customers": version,
                   "negative": 1, "version": version}
            warehouse.insert("touchpoint_minute_raw", MINUTE_COLUMNS, [minute_values(row)])
    late = {**base, "part": 2, "events": 1, "customers": 1, "batch": minute + 600_000,
            "version": 1}
    warehouse.insert("touchpoint_minute_late_raw", LATE_COLUMNS,
                     [minute_values(late, LATE_COLUMNS)])
    where = "WHERE minute >= toDateTime('2030-01-01 00:00:00', 'UTC')"
    assert warehouse.query(f"SELECT events, customers, negative, category FROM "
                           f"touchpoint_minute {where}").rows == [(10, 10, 2, "personnel")]
    assert warehouse.query(f"SELECT events FROM touchpoint_minute_late {where}").rows == [(1,)]
    scorecard = run(warehouse, "touchpoints", Period(datetime(2030, 1, 1, tzinfo=UTC), None))
    assert [(r["type"], r["contacts"], r["negative"]) for r in scorecard] == [("served", 11, 2)]


def test_signals_and_every_view_answer(loaded: tuple[Warehouse, dict[str, Any]]) -> None:
    warehouse, _ = loaded
    columns = ("signal_id", "customer_id", "detected_at", "first_evidence_at", "severity",
               "score", "reasons", "evidence_event_ids", "channels", "status", "escalated_at",
               "emitted_at", "revision")
    at = int(datetime(2026, 11, 5, 10, tzinfo=UTC).timestamp() * 1000)
    warehouse.insert("complaint_signals_raw", columns, [
        ("s1", "C1", at, at - 3_600_000, "high", 3.5, ["long_wait", "unresolved"], ["e1"],
         ["callcenter"], "open", at, at + 1000, 1)])
    signals = run(warehouse, "signals", parse_period("2026-11-05", "2026-11-05"))
    assert [(s["signal_id"], s["severity"], s["reasons"]) for s in signals] == \
        [("s1", "high", ["long_wait", "unresolved"])]
    table = render(build_report("signals", Period()), warehouse.query(
        build_report("signals", Period()).sql).rows)
    assert "long_wait, unresolved" in table and "2026-11-05 10:00:00" in table
    for view in ("touchpoint_minute", "touchpoint_minute_late", "campaign_attribution",
                 "campaign_response", "campaign_response_by_tier", "touchpoint_scorecard",
                 "ad_clicks", "ad_report", "channel_report"):
        assert warehouse.query(f"SELECT count() FROM {view}").scalar() >= 0, view
    day = warehouse.query("SELECT min(day) FROM channel_report").scalar()
    assert isinstance(day, date)


# --- the command ---------------------------------------------------------------------------

class _Worker(http.server.BaseHTTPRequestHandler):
    """A worker's /warehouse/query answering with JSON, as streams/ops/web.py does."""

    asked: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        sql = self.rfile.read(int(self.headers["Content-Length"])).decode()
        _Worker.asked.append(sql)
        body = json.dumps({
            "columns": ["signal_id", "customer_id", "status", "severity", "score",
                        "detected_at", "escalated_at", "reasons", "channels"],
            "types": ["String"] * 9,
            "rows": [["s1", "C1", "open", "critical", 6.5, "2026-11-05T10:00:00+00:00", None,
                      ["repeat_contact", "long_wait"], ["callcenter", "store"]]],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_command_asks_the_worker_holding_the_embedded_warehouse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Worker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
        monkeypatch.setenv("TOUCHPOINT_WEB_PORT", str(server.server_address[1]))

        def locked(url: Any) -> Warehouse:
            raise WarehouseUnavailable("the embedded warehouse is open in another process")

        monkeypatch.setattr("touchpoint.warehouse_client.connect", locked)
        result = CliRunner().invoke(main, ["report", "signals", "--since", "2026-11-05"])
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[2].split()[:8] == ["s1", "C1", "open", "critical", "6.5", "2026-11-05",
                                    "10:00:00", "-"]
    assert lines[2].endswith("repeat_contact, long_wait  callcenter, store")
    assert "detected_at >= toDateTime('2026-11-05 00:00:00', 'UTC')" in _Worker.asked[-1]


def test_the_command_refuses_bad_options_in_one_line(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["report", "channels", "--campaign", "C1"])
    assert (result.exit_code, result.output) == (
        2, "Error: --campaign applies to the campaigns and ads reports only\n")
    result = CliRunner().invoke(main, ["report", "ads", "--until", "soon"])
    assert result.exit_code == 2 and result.output.startswith("Error: 'soon' is neither")
    assert CliRunner().invoke(main, ["report", "--help"]).exit_code == 0
