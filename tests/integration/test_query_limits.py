"""People's SQL on the real engines: read-only, stopped at its limits, inserts let through.

``Warehouse.read`` is the engine's half of the SQL guard of ``/warehouse/query``: these
tests hand it hostile SQL directly, without ``checked_select``, and expect ClickHouse 18.16
and chdb each to refuse it themselves; then the project's own SQL, through the guard, must
answer as it does directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from touchpoint.exceptions import WarehouseError
from touchpoint.settings import load_settings
from touchpoint.sinks.clickhouse import Warehouse, connect
from touchpoint.sinks.migrate import migrate
from touchpoint.sinks.query_guard import checked_select, open_reader
from touchpoint.streams.rules.rows import EVENT_COLUMNS, event_row

from ..unit.sinks.test_query_guard import project_sql
from .conftest import BACKENDS, CLICKHOUSE, migrated_warehouse

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # 2026-11-18
SLOW_SQL = "SELECT sum(number) FROM system.numbers"  # never ends by itself
STOPPED = "query ran longer than 1 s and was stopped: narrow it (a WHERE on a time column) " \
          "or aggregate"


def _events() -> list[tuple[Any, ...]]:
    """A few events on every channel, so reports and panels have rows to agree on."""
    kinds = [("web", "page_view"), ("web", "ad_click"), ("web", "ad_impression"),
             ("store", "purchase"), ("store", "served"), ("callcenter", "call_ended"),
             ("campaign", "sent"), ("campaign", "opened"), ("feedback", "csat")]
    rows = []
    for i in range(36):
        channel, kind = kinds[i % len(kinds)]
        event = {"event_id": f"q-{i}", "channel": channel, "type": kind,
                 "occurred_at": T0 + i * 600_000, "ingested_at": T0 + i * 600_000 + 5,
                 "customer_id": f"C{i % 5}", "campaign_id": "CMP-1" if i % 2 else "",
                 "store_id": "S-A" if channel == "store" else "", "ad_id": "AD-1",
                 "session_id": f"s{i % 3}", "amount": 10.5 * i if kind == "purchase" else None,
                 "queue_wait_s": 60 * i if channel in ("store", "callcenter") else None,
                 "score": i % 6 if channel == "feedback" else None, "attributes": {},
                 "category": "service", "stage": "purchase",
                 "source_topic": f"touchpoints.{channel}", "source_partition": 0,
                 "source_offset": i}
        rows.append(event_row(event, 1))
    return rows


@pytest.fixture(scope="module", params=BACKENDS)
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              clickhouse_server: str) -> Iterator[Warehouse]:
    """A migrated warehouse of this module's own, with a few events, on each engine."""
    with migrated_warehouse(request.param, tmp_path_factory.mktemp("chdb"), "tp_limits") as found:
        found.use_database()
        found.insert("touchpoint_events_raw", EVENT_COLUMNS, _events())
        # now: the dashboard counts the dead letters of the last hour (wall clock)
        found.insert("deadletter_raw", ("rejected_at", "reason_code", "reason", "_version"),
                     [(int(time.time() * 1000), "undecodable", "not Avro", 1)])
        yield found


def _read(warehouse: Warehouse, sql: str) -> Any:
    return warehouse.read(sql, timeout_s=10, max_rows=1000)


def test_table_functions_are_refused_by_the_engine_itself(warehouse: Warehouse,
                                                          tmp_path: Path) -> None:
    secret = tmp_path / "pii_salt"
    secret.write_text("not for people\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        for sql in (f"SELECT * FROM file('{secret}', 'TSV', 'line String')",
                    f"SELECT * FROM url('http://127.0.0.1:{port}/', 'TSV', 'line String')",
                    f"SELECT * FROM (SELECT * FROM file('{secret}', 'TSV', 'line String'))"):
            with pytest.raises(WarehouseError, match=r"(?i)readonly"):
                _read(warehouse, sql)
        with pytest.raises(TimeoutError):  # no request reached the listener
            listener.accept()


def test_writes_and_further_statements_are_refused_by_the_engine(warehouse: Warehouse,
                                                                  tmp_path: Path) -> None:
    db = warehouse.database
    insert = f"INSERT INTO {db}.deadletter_raw (reason) VALUES ('written')"
    for sql in (insert, f"DROP TABLE {db}.deadletter_raw", f"SELECT 1; {insert}",
                f"SELECT 1) ; {insert}; SELECT (1", f"SELECT 1 FROM {db}.deadletter;\n{insert}"):
        with pytest.raises(WarehouseError):
            _read(warehouse, sql)
    # INTO OUTFILE: chdb writes such files in-process; the server leaves them to its client
    outfile = tmp_path / "out.tsv"
    with contextlib.suppress(WarehouseError):
        _read(warehouse, f"SELECT 1 INTO OUTFILE '{outfile}'")
    assert warehouse.query(f"SELECT count() FROM {db}.deadletter_raw "
                           "WHERE reason = 'written'").scalar() == 0
    assert not outfile.exists()


def test_a_slow_query_is_stopped_at_its_time_limit_and_inserts_go_on(
        warehouse: Warehouse) -> None:
    run = f"after-{uuid.uuid4().hex[:8]}"
    errors: list[str] = []

    def slow() -> None:
        try:
            warehouse.read(SLOW_SQL, timeout_s=1, max_rows=10)
        except WarehouseError as exc:
            errors.append(str(exc))

    started = time.monotonic()
    reading = threading.Thread(target=slow)
    reading.start()
    time.sleep(0.2)  # the read holds the connection now; the insert waits for it
    warehouse.insert("deadletter_raw", ("rejected_at", "reason", "_version"), [(T0, run, 1)])
    inserted_after = time.monotonic() - started
    reading.join(60)
    assert errors == [STOPPED]
    assert inserted_after < 15
    assert warehouse.query(
        f"SELECT reason FROM deadletter_raw WHERE reason = '{run}'").rows == [(run,)]


def test_a_query_s_own_settings_do_not_lift_its_limits(warehouse: Warehouse) -> None:
    started = time.monotonic()
    with pytest.raises(WarehouseError):
        warehouse.read(f"{SLOW_SQL} SETTINGS max_execution_time = 0", timeout_s=1, max_rows=10)
    with pytest.raises(WarehouseError):
        warehouse.read(f"SELECT * FROM ({SLOW_SQL} SETTINGS max_execution_time = 0)",
                       timeout_s=1, max_rows=10)
    assert time.monotonic() - started < 30


def test_more_rows_than_allowed_is_an_error_never_a_cut_answer(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError) as refused:
        warehouse.read("SELECT number FROM system.numbers LIMIT 11", timeout_s=10, max_rows=10)
    assert str(refused.value) == "query returns more than 10 rows: add LIMIT or aggregate " \
                                 "(GROUP BY)"
    # a stopped query leaves nothing behind for the next one (chdb keeps its output)
    assert warehouse.query("SELECT 1 AS one").rows == [(1,)]
    assert warehouse.read("SELECT number FROM system.numbers LIMIT 10", timeout_s=10,
                          max_rows=10).rows == [(n,) for n in range(10)]


def test_the_project_s_sql_answers_through_the_guard_as_it_does_directly(
        warehouse: Warehouse) -> None:
    answered = []
    for sql in project_sql():
        checked = checked_select(sql, database=warehouse.database)
        guarded = warehouse.read(checked, timeout_s=30, max_rows=10_000)
        direct = warehouse.query(sql)
        assert (guarded.columns, guarded.types, repr(guarded.rows)) == \
            (direct.columns, direct.types, repr(direct.rows)), sql
        if direct.rows:
            answered.append(sql)
    # most found rows to agree on; the rest read what these events leave empty (campaign
    # attribution, signals, per-minute aggregates)
    assert len(answered) == 20


# --- the server: a reader of its own, or the read-only user --------------------------------

@pytest.fixture
def server(clickhouse_server: str, tmp_path: Path) -> Iterator[Warehouse]:
    """A migrated database on the server, with a few events; the main connection."""
    database = f"tp_reader_{uuid.uuid4().hex[:8]}"
    with connect(f"clickhouse://{CLICKHOUSE}/{database}") as main:
        migrate(main)
        main.use_database()
        main.insert("touchpoint_events_raw", EVENT_COLUMNS, _events())
        yield main
        main.execute(f"DROP DATABASE IF EXISTS {database}")


def _settings(tmp_path: Path, main: Warehouse, query_url: str = "") -> Any:
    return load_settings({"TOUCHPOINT_HOME": str(tmp_path), "TOUCHPOINT_PII_SALT": "s" * 16,
                          "TOUCHPOINT_CLICKHOUSE_URL": f"clickhouse://{CLICKHOUSE}/"
                                                       f"{main.database}",
                          "TOUCHPOINT_CLICKHOUSE_QUERY_URL": query_url})


def test_a_slow_read_does_not_hold_the_connection_inserts_go_through(
        server: Warehouse, tmp_path: Path) -> None:
    reader = open_reader(_settings(tmp_path, server), server)
    assert reader is not server
    finished: dict[str, float] = {}

    def slow() -> None:
        with pytest.raises(WarehouseError, match=r"^query ran longer than 3 s"):
            reader.read(SLOW_SQL, timeout_s=3, max_rows=10)
        finished["read"] = time.monotonic()

    with reader:
        reading = threading.Thread(target=slow)
        reading.start()
        time.sleep(0.2)
        server.insert("deadletter_raw", ("rejected_at", "reason", "_version"), [(T0, "x", 1)])
        finished["insert"] = time.monotonic()
        reading.join(60)
    assert finished["insert"] < finished["read"]


def test_the_read_only_user_cannot_write_nor_lift_its_limits(server: Warehouse,
                                                             tmp_path: Path) -> None:
    url = f"clickhouse://touchpoint_reader@{CLICKHOUSE}/{server.database}"
    try:
        reader = open_reader(_settings(tmp_path, server, url), server)
    except WarehouseError as exc:
        pytest.fail(f"the test ClickHouse has no user touchpoint_reader ({exc}): its users.xml "
                    "predates deploy/local/clickhouse/users.xml.in; restart it "
                    "(deploy/local/clickhouse.sh stop, then start)", pytrace=False)
    with reader:
        assert reader.url.user == "touchpoint_reader"
        db = server.database
        for statement in (f"INSERT INTO {db}.deadletter_raw (reason) VALUES ('x')",
                          f"CREATE TABLE {db}.t (a UInt8) ENGINE = Memory",
                          f"DROP TABLE {db}.deadletter_raw", "SET readonly = 0"):
            with pytest.raises(WarehouseError, match=r"(?i)in readonly mode"):
                reader.execute(statement)
        with pytest.raises(WarehouseError, match=r"(?i)in readonly mode"):
            reader.query("SELECT count() FROM numbers(10)")
        checked = checked_select("SELECT count() FROM touchpoint_events", database=db)
        assert reader.read(checked, timeout_s=1, max_rows=10).rows == [(36,)]
        # the server ignores a read-only user's own settings: the profile's 10 s hold
        with pytest.raises(WarehouseError, match=r"^query ran longer than 10 s"):
            reader.read(SLOW_SQL, timeout_s=1, max_rows=10)
    assert server.query(f"SELECT count() FROM {db}.deadletter_raw").scalar() == 0
