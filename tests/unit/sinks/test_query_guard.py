"""The SQL guard of /warehouse/query: hostile SQL refused with its reason, ours accepted."""

from __future__ import annotations

import inspect
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import sqlglot
from sqlglot import exp

from touchpoint import report, signals_view
from touchpoint.commands import demo
from touchpoint.exceptions import ConfigError, QueryRefused, WarehouseError
from touchpoint.settings import WarehouseURL, load_settings
from touchpoint.sinks import migrate
from touchpoint.sinks.clickhouse import Warehouse
from touchpoint.sinks.query_guard import INTERNAL, QUERYABLE, checked_select, open_reader
from touchpoint.sinks.sql_tokens import tokenize
from touchpoint.streams.ops import dashboard

REPO = Path(__file__).resolve().parents[3]
DB = "touchpoint"

# --- hostile SQL ---------------------------------------------------------------------------

#: (SQL, the rule that refuses it)
HOSTILE = [
    # the attacks that worked against the old `^(SELECT|WITH|...)` check
    ("SELECT * FROM file('/etc/passwd','LineAsString')", "function"),
    ("SELECT line FROM file('/work/.touchpoint/pii_salt', 'LineAsString')", "function"),
    ("SELECT * FROM touchpoint_events INTO OUTFILE '/tmp/x' APPEND", "clause"),
    ("SELECT * FROM url('http://127.0.0.1:6066/status', 'JSONAsString')", "function"),
    ("SELECT count() FROM numbers(1e11)", "table_function"),
    # stacked statements, also behind comments
    ("SELECT 1; DROP TABLE touchpoint_events_raw", "statements"),
    ("SELECT 1 -- harmless\n; DROP TABLE x", "statements"),
    ("SELECT 1 /* ; */; SELECT * FROM file('/etc/passwd')", "statements"),
    ("SELECT 1;;", "statements"),
    # comments the engines end at different places (sqlglot alone reads SELECT 1 here)
    ("SELECT 1 /* /* */ FROM file('/etc/passwd') -- */", "lexical"),
    ("SELECT 1 /* /* */ , * FROM system.tables -- */", "lexical"),
    ("SELECT 1 # FROM file('/etc/passwd')", "lexical"),
    ("SELECT 1 -- \r FROM system.tables", "lexical"),
    ("SELECT 1 /* unclosed", "lexical"),
    # other databases, bookkeeping tables, tables not ours
    ("SELECT * FROM system.tables", "database"),
    ("SELECT name FROM system.users", "database"),
    ('SELECT * FROM "system"."users"', "database"),
    ("SELECT * FROM `system`.`tables`", "database"),
    ("SELECT * FROM other.touchpoint_events", "database"),
    ("SELECT * FROM a.touchpoint.touchpoint_events", "database"),
    ("SELECT * FROM schema_migrations", "table"),
    ("SELECT * FROM touchpoint.schema_migrations", "table"),
    ("SELECT * FROM `touchpoint.touchpoint_events`", "table"),
    ("SELECT * FROM Touchpoint_Events", "table"),
    ("SELECT * FROM deadletter AS d, system.one", "database"),
    ("SELECT * FROM deadletter UNION ALL SELECT * FROM system.one", "database"),
    ("SELECT (SELECT count() FROM system.processes)", "database"),
    ("SELECT 1 FROM deadletter WHERE EXISTS (SELECT 1 FROM system.one)", "database"),
    # IN on a table, or IN as a function
    ("SELECT 1 FROM deadletter WHERE reason IN system.users", "in_table"),
    ("SELECT 1 FROM deadletter WHERE reason IN (system.users)", "in_table"),
    ("SELECT 1 FROM deadletter WHERE reason NOT IN ((schema_migrations))", "in_table"),
    ("SELECT 1 FROM deadletter WHERE reason GLOBAL IN schema_migrations", "in_table"),
    ("SELECT 1 FROM deadletter WHERE reason IN numbers(10)", "in_table"),
    ("SELECT 1 FROM deadletter WHERE reason IN (numbers(10))", "in_table"),
    ("SELECT 1 WHERE in(0, system.one)", "function"),
    ("SELECT 1 FROM deadletter WHERE 1 AND NOT in(0, system.one)", "function"),
    ("SELECT notIn(0, system.one)", "function"),
    ("SELECT globalNullIn(0, system.one)", "function"),
    # table functions in JOIN, subqueries, CTEs, however spelled
    ("SELECT * FROM deadletter JOIN file('/etc/passwd') AS f ON 1", "function"),
    ("SELECT * FROM deadletter AS d, numbers(10) AS n", "table_function"),
    ("SELECT * FROM (SELECT * FROM url('http://example.com/'))", "function"),
    ("SELECT * FROM deadletter WHERE reason IN (SELECT * FROM s3('http://x/y'))", "function"),
    ("WITH x AS (SELECT * FROM file('/etc/passwd')) SELECT * FROM x", "function"),
    ("WITH x AS (SELECT * FROM generateRandom('a String')) SELECT * FROM x", "table_function"),
    ("SELECT * FROM `file`('/etc/passwd')", "function"),
    ('SELECT * FROM "file"(\'/etc/passwd\')', "function"),
    ("SELECT * FROM FiLe('/etc/passwd')", "function"),
    ("SELECT * FROM fIlE ( '/etc/passwd' )", "function"),
    ("SELECT * FROM file\n/* x */('/etc/passwd')", "function"),
    ("SELECT * FROM remote('127.0.0.1:19000', system.one)", "function"),
    ("SELECT * FROM view(SELECT * FROM deadletter)", "function"),
    ("SELECT * FROM merge('touchpoint', '.*')", "function"),
    ("SELECT * FROM executable('x.sh', TSV, 'a String')", "function"),
    ("SELECT * FROM input('a String')", "function"),
    ("SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')", "function"),
    ("SELECT * FROM python(x)", "function"),
    ("SELECT * FROM values('a UInt8', 1)", "function"),
    # scalar functions that reach outside, around the limits, or into settings
    ("SELECT file('/etc/passwd')", "function"),
    ("SELECT length(FILE('/etc/passwd')) FROM deadletter", "function"),
    ("SELECT `file`('/etc/passwd')", "function"),
    ("SELECT dictGet('d', 'a', toUInt64(1))", "function"),
    ("SELECT dictGetString('d', 'a', toUInt64(1))", "function"),
    ("SELECT joinGet('touchpoint.j', 'v', 1)", "function"),
    ("SELECT hasColumnInTable('system', 'users', 'name')", "function"),
    ("SELECT getSetting('readonly')", "function"),
    ("SELECT getServerSetting('path')", "function"),
    ("SELECT getMacro('shard')", "function"),
    ("SELECT sleep(3)", "function"),
    ("SELECT sleepEachRow(1) FROM deadletter", "function"),
    ("SELECT filesystemAvailable()", "function"),
    ("SELECT catboostEvaluate('/tmp/model.bin', 1)", "function"),
    # clauses the worker owns
    ("SELECT * FROM deadletter FORMAT JSON", "clause"),
    ("SELECT * FROM deadletter format TabSeparated", "clause"),
    ("SELECT format('{}', reason) FROM deadletter", "clause"),
    ("SELECT * FROM deadletter SETTINGS readonly = 0", "clause"),
    ("SELECT * FROM deadletter SETTINGS max_execution_time = 0", "clause"),
    ("SELECT 1 INTO OUTFILE '/tmp/x'", "clause"),
    # other statements
    ("INSERT INTO deadletter_raw SELECT * FROM deadletter_raw", "not_select"),
    ("ALTER TABLE deadletter_raw DELETE WHERE 1", "not_select"),
    ("DROP TABLE deadletter_raw", "not_select"),
    ("SET readonly = 0", "not_select"),
    ("SYSTEM SHUTDOWN", "not_select"),
    ("KILL QUERY WHERE 1", "not_select"),
    ("OPTIMIZE TABLE deadletter_raw FINAL", "not_select"),
    ("SHOW TABLES", "not_select"),
    ("DESCRIBE deadletter", "not_select"),
    ("EXISTS TABLE deadletter", "not_select"),
    ("EXPLAIN SELECT 1", "not_select"),
    ("USE system", "not_select"),
    ("  \n -- only a comment\n", "syntax"),
    ("", "syntax"),
    # CTE names: none may stand for our bookkeeping, and none reaches outside its scope
    ("WITH schema_migrations AS (SELECT 1) SELECT * FROM schema_migrations", "table"),
    ("SELECT * FROM (WITH a AS (SELECT 1) SELECT * FROM a) AS x, a", "table"),
    ("WITH a AS (SELECT * FROM a) SELECT * FROM a", "table"),
    ("WITH 1 AS a SELECT * FROM a", "table"),
    # what the engines may read differently: quoting, escapes, unicode, parameters
    ("SELECT $$x$$", "lexical"),
    ("SELECT $tag$ FROM file('/etc/passwd') $tag$", "lexical"),
    ("SELECT {name:String}", "lexical"),
    ("SELECT 1\u00a0FROM deadletter", "lexical"),
    ("SELECT * FROM deadletter\u2028WHERE 1", "lexical"),
    ("SELECT `x\\` FROM file('/etc/passwd') -- `", "lexical"),
    ("SELECT \"x\\\" FROM file('/etc/passwd') -- \"", "lexical"),
    ("SELECT 'unclosed", "lexical"),
    ("SELECT 1 \\", "lexical"),
    ("SELECT 1fILE('/etc/passwd')", "syntax"),
    ("SELECT N'x'", "ambiguous"),
    ("SELECT " + "(" * 70 + "1" + ")" * 70, "size"),
    ("SELECT 1 -- " + "x" * 60_000, "size"),
]


@pytest.mark.parametrize(("sql", "code"), HOSTILE, ids=[s[:50] for s, _ in HOSTILE])
def test_hostile_sql_is_refused_with_its_reason(sql: str, code: str) -> None:
    with pytest.raises(QueryRefused) as refused:
        checked_select(sql, database=DB)
    assert refused.value.code == code, str(refused.value)
    assert str(refused.value)
    assert isinstance(refused.value, WarehouseError)  # the worker answers it as before: 400


def test_the_old_check_of_the_worker_let_the_attacks_through() -> None:
    # streams/ops/web.py before this guard: a first word and no `;` inside
    old = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS)\b", re.IGNORECASE)
    let_through = [sql for sql, _ in HOSTILE
                   if old.match(sql) and ";" not in sql.strip().rstrip(";")]
    assert (len(let_through), len(HOSTILE)) == (94, 108)
    assert "SELECT * FROM file('/etc/passwd','LineAsString')" in let_through


def test_sqlglot_alone_reads_no_table_where_the_engine_reads_one() -> None:
    # why the lexer is there: sqlglot nests comments, 18.16 does not; and sqlglot sees a
    # list of values where ClickHouse reads a table
    tree = sqlglot.parse_one("SELECT 1 /* /* */ , * FROM system.tables -- */",
                             read="clickhouse")
    assert list(tree.find_all(exp.Table)) == []
    tree = sqlglot.parse_one("SELECT 1 WHERE 0 IN (system.users)", read="clickhouse")
    assert list(tree.find_all(exp.Table)) == []


def test_a_refusal_says_what_to_do() -> None:
    with pytest.raises(QueryRefused, match="only tables of database touchpoint can be read"):
        checked_select("SELECT * FROM system.tables", database=DB)
    with pytest.raises(QueryRefused, match="read ad_clicks, ad_report, "):
        checked_select("SELECT * FROM schema_migrations", database=DB)
    with pytest.raises(QueryRefused, match=r"add|write `x IN \(SELECT"):
        checked_select("SELECT 1 FROM deadletter WHERE reason IN system.users", database=DB)
    with pytest.raises(QueryRefused, match="remove the `;`"):
        checked_select("SELECT 1; SELECT 2", database=DB)
    with pytest.raises(QueryRefused, match="not INSERT"):
        checked_select("insert into deadletter_raw select 1", database=DB)


# --- legitimate SQL ------------------------------------------------------------------------

LEGIT = [
    "SELECT count() FROM deadletter",
    "select count() from deadletter;",
    "SELECT count() FROM deadletter ;  -- the end\n",
    "SELECT * FROM touchpoint_events FINAL WHERE channel = 'web' AND amount > 10",
    "SELECT * FROM touchpoint_events_raw FINAL WHERE event_id = 'e-1'",
    "SELECT channel, count() AS n FROM touchpoint_events GROUP BY channel ORDER BY n DESC "
    "LIMIT 10",
    "SELECT quantile(0.9)(queue_wait_s), quantiles(0.5, 0.9)(queue_wait_s), "
    "countIf(type = 'purchase'), sumIf(amount, type = 'purchase'), uniqExact(customer_id) "
    "FROM touchpoint_events",
    "SELECT * FROM touchpoint.deadletter WHERE reason_code IN ('undecodable', 'unknown_schema')",
    "SELECT * FROM `touchpoint`.`deadletter`",
    'SELECT "reason" FROM "deadletter"',
    "WITH recent AS (SELECT * FROM touchpoint_events WHERE occurred_at > now() - 3600) "
    "SELECT channel, count() FROM recent GROUP BY channel",
    "WITH a AS (SELECT 1 AS x), b AS (SELECT x FROM a) SELECT * FROM b",
    "WITH (SELECT max(occurred_at) FROM touchpoint_events_raw) AS newest "
    "SELECT count() FROM touchpoint_events_raw WHERE occurred_at > newest - 3600",
    "WITH 10 AS n SELECT number_of_things FROM (SELECT n AS number_of_things)",
    "SELECT channel FROM touchpoint_minute UNION ALL SELECT channel FROM touchpoint_minute_late",
    "SELECT * FROM (SELECT customer_id FROM customer_profiles) AS p "
    "ANY LEFT JOIN (SELECT customer_id, count() AS n FROM complaint_signals GROUP BY "
    "customer_id) AS s USING customer_id",
    "SELECT e.channel, m.n FROM touchpoint_events AS e JOIN (SELECT channel, sum(events) AS n "
    "FROM touchpoint_minute GROUP BY channel) AS m ON e.channel = m.channel",
    "SELECT customer_id FROM touchpoint_events WHERE customer_id IN "
    "(SELECT customer_id FROM complaint_signals WHERE status = 'open')",
    "SELECT customer_id FROM touchpoint_events WHERE customer_id GLOBAL NOT IN "
    "(SELECT customer_id FROM complaint_signals)",
    "SELECT 1 IN (1, 2), 'x' in ('x'), (channel) IN ('web') FROM deadletter",
    "SELECT signal_id, r FROM complaint_signals ARRAY JOIN reasons AS r",
    "SELECT signal_id FROM complaint_signals LEFT ARRAY JOIN channels AS c WHERE c = 'web'",
    "SELECT arrayMap(x -> x * 2, [1, 2, 3]), has(reasons, 'long_wait') FROM complaint_signals",
    "SELECT CASE WHEN score > 5 THEN 'high' ELSE 'low' END, toStartOfDay(detected_at), "
    "formatDateTime(detected_at, '%Y-%m-%d'), dateDiff('hour', detected_at, now()) "
    "FROM complaint_signals",
    "SELECT toDate(occurred_at) AS day, count() FROM touchpoint_events "
    "WHERE occurred_at >= now() - INTERVAL 7 DAY GROUP BY day WITH TOTALS ORDER BY day",
    "SELECT channel, type, count() FROM touchpoint_events GROUP BY channel, type "
    "ORDER BY count() DESC LIMIT 2 BY channel",
    "SELECT URLHash(url), domain(url), fileName FROM (SELECT url, 'a' AS fileName "
    "FROM touchpoint_events)",
    "SELECT 'it''s', 'it\\'s', 'a -- not a comment', 'a /* nor this */', 'a ; b', "
    "'file(''/etc/passwd'')', '中文'",
    "SELECT reason AS `the reason`, `中文` FROM (SELECT reason, 1 AS `中文` FROM deadletter)",
    "SELECT count() -- a comment\nFROM /* another */ deadletter",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SELECT * FROM ad_report, channel_report LIMIT 1",
    "SELECT 0x1F, 1e3, 1.5, .5, 1_000, -1, toUInt8(1)::String",
]


@pytest.mark.parametrize("sql", LEGIT, ids=[s[:50] for s in LEGIT])
def test_legitimate_sql_is_accepted(sql: str) -> None:
    checked_select(sql, database=DB)


def test_what_runs_is_the_sql_without_comments_or_final_semicolon() -> None:
    sql = "SELECT count() -- how many\nFROM /* all */ deadletter WHERE reason != '--';\n"
    assert checked_select(sql, database=DB) == "SELECT count() FROM deadletter WHERE reason != '--'"
    assert checked_select("SELECT a/**/FROM deadletter", database=DB) == \
        "SELECT a FROM deadletter"
    assert checked_select("SELECT\t1\n,\n2", database=DB) == "SELECT 1 , 2"


def _period() -> report.Period:
    return report.Period(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC))


def project_sql() -> list[str]:
    """Every SQL the project sends through the worker (reports, signals, demo, Grafana's
    panels in the integration tests) or documents for people (docs/reports.md)."""
    docs = re.findall(r"```sql\n(.*?)```", (REPO / "docs" / "reports.md").read_text(), re.S)
    found = [block.strip() for block in docs]
    for name in report.REPORTS:
        found += [report.build_report(name, _period()).sql,
                  report.build_report(name, report.Period()).sql]
    found += [report.campaigns_sql(_period(), campaign="C'1\\", by_tier=True).sql,
              report.ads_sql(_period(), campaign="--; DROP").sql]
    now_s = 1_795_000_000
    found += [dashboard.activity_sql(60), dashboard.signal_feed_sql(200),
              dashboard.SIGNAL_COUNTS_SQL, dashboard.waits_sql(now_s, 3600),
              dashboard.scorecard_sql(now_s), dashboard.campaign_view_sql(now_s),
              dashboard.campaign_events_sql(now_s), dashboard.deadletters_sql(5),
              dashboard.deadletter_reasons_sql(3600)]
    found += [signals_view.NOW_SQL, signals_view.signals_sql(signals_view.SignalFilter()),
              signals_view.signals_sql(signals_view.SignalFilter(
                  status="any", customer="x'y", reason="long_wait", channel="web"))]
    found += list(demo.SUMMARY_SQL)
    grafana = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "touchpoint.json")
                         .read_text())
    for panel in grafana["panels"]:
        for target in panel.get("targets", []):
            if "rawSql" in target:
                found.append(target["rawSql"]
                             .replace("$__timeFilter(ingested_at)", "ingested_at >= toDateTime(0)")
                             .replace("$__timeFilter(rejected_at)", "rejected_at >= toDateTime(0)"))
    return found


#: Shapes of what the integration tests ask a worker (tests/integration/*.py).
INTEGRATION_SQL = [
    "SELECT count() FROM touchpoint_events WHERE event_id LIKE 'run-%'",
    "SELECT count(DISTINCT event_id) FROM touchpoint_events WHERE event_id LIKE 'run-%'",
    "SELECT uniqExact(source_offset, source_partition) FROM touchpoint_events "
    "WHERE event_id LIKE 'run-%'",
    "SELECT DISTINCT event_id FROM touchpoint_events_raw WHERE event_id LIKE 'run-%'",
    "SELECT * FROM touchpoint_minute_raw FINAL ORDER BY minute, channel, type, store_id, "
    "campaign_id, part",
    "SELECT toUnixTimestamp(minute) AS m, channel, sum(events) AS n, round(sum(revenue), 2) "
    "AS rev FROM ( SELECT minute, channel, events, revenue FROM touchpoint_minute UNION ALL "
    "SELECT minute, channel, events, revenue FROM touchpoint_minute_late) GROUP BY m, channel "
    "ORDER BY m, channel",
    "SELECT payload_sha256, reason_code, reason, source_topic, payload_bytes FROM deadletter "
    "WHERE payload_sha256 IN ('a', 'b')",
    "SELECT merged_id, event_id FROM identity_merges WHERE into_id = 'crm-1'",
    "SELECT open_signals FROM customer_profiles WHERE customer_id = 'x-breach'",
    "SELECT signal_id, severity, status, reasons, channels, evidence_event_ids, "
    "toUnixTimestamp(detected_at) AS detected, toUnixTimestamp(escalated_at) AS escalated "
    "FROM complaint_signals WHERE customer_id = 'x-a'",
    "SELECT exposure_id, campaign_id, converted_at, model, retracted "
    "FROM campaign_attribution_raw FINAL ORDER BY exposure_id",
]


@pytest.mark.parametrize("sql", project_sql() + INTEGRATION_SQL)
def test_the_project_s_own_sql_is_accepted_and_runs_as_written(sql: str) -> None:
    # what runs is the SQL as written, but for spacing (none of it has comments)
    assert " ".join(checked_select(sql, database=DB).split()) == " ".join(sql.split())


def test_comments_and_spacing_do_not_change_what_is_checked_or_run() -> None:
    for sql in project_sql():
        tokens = tokenize(sql)
        commented = "".join(("\t/* c */\n -- line\r\n " if token.gap else "") + token.text
                            for token in tokens)
        assert checked_select(commented, database=DB) == checked_select(sql, database=DB)


# --- the allow-list ------------------------------------------------------------------------

def _created_by_migrations() -> set[str]:
    names = set()
    for migration in migrate.migrations():
        names |= set(re.findall(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS \{db\}\.(\w+)",
                                migration.sql))
    return names


def test_every_queryable_name_is_made_by_a_migration() -> None:
    assert _created_by_migrations() >= QUERYABLE


def test_every_table_of_ours_is_either_queryable_or_internal() -> None:
    bookkeeping = set(re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)",
                                 inspect.getsource(migrate.migrate)))
    assert bookkeeping == {"schema_migrations"}
    assert _created_by_migrations() | bookkeeping == QUERYABLE | INTERNAL
    assert not QUERYABLE & INTERNAL


def test_every_queryable_name_is_accepted_bare_and_qualified() -> None:
    for name in sorted(QUERYABLE):
        checked_select(f"SELECT count() FROM {name}", database="tp_x")
        checked_select(f"SELECT count() FROM tp_x.{name}", database="tp_x")
        with pytest.raises(QueryRefused):
            checked_select(f"SELECT count() FROM touchpoint.{name}", database="tp_x")


# --- the reader ----------------------------------------------------------------------------

def _settings(tmp_path: Path, **env: str) -> Any:
    return load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s" * 16,
                          **env})


def test_the_embedded_warehouse_is_its_own_reader(tmp_path: Path) -> None:
    used: list[str] = []
    embedded = cast(Warehouse, SimpleNamespace(url=WarehouseURL.parse(f"chdb://{tmp_path}"),
                                               use_database=lambda: used.append("use")))
    assert open_reader(_settings(tmp_path), embedded) is embedded
    assert used == ["use"]
    with pytest.raises(ConfigError, match="TOUCHPOINT_CLICKHOUSE_QUERY_URL"):
        open_reader(_settings(tmp_path, TOUCHPOINT_CLICKHOUSE_QUERY_URL=(
            "clickhouse://touchpoint_reader@127.0.0.1:9000/touchpoint")), embedded)
