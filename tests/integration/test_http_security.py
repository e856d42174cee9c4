"""The worker's HTTP surface tried as an attacker would, on a real worker per backend.

No token, a wrong one, a foreign ``Host`` (DNS rebinding), Faust's own table views, and
SQL that reads files, writes files, fetches URLs or reads other databases: each is
refused, and nothing leaks or is written. The open pages say nothing about customers.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from pathlib import Path

import pytest

from .conftest import Worker, WorkerFactory

pytestmark = pytest.mark.integration

CUSTOMER_PATHS = ["/status", "/customers/someone", "/profiles/someone", "/signals",
                  "/dashboard/data"]


def _sql(worker: Worker, sql: str, token: str | None = "") -> tuple[int, dict[str, object]]:
    status, body = worker.get("/warehouse/query", data=sql.encode(), token=token)
    return status, json.loads(body or b"{}")


@pytest.mark.parametrize("path", CUSTOMER_PATHS)
def test_customer_data_needs_a_token(worker: Worker, path: str) -> None:
    assert worker.get(path, token=None)[0] == 401
    assert worker.get(path, token="not-the-token-0123456789")[0] == 401
    # with the token: answered (503 while the worker still recovers its tables)
    assert worker.get(path)[0] in (200, 404, 503)


def test_sql_needs_a_token_and_is_never_taken_from_a_url(worker: Worker) -> None:
    assert _sql(worker, "SELECT count() FROM touchpoint_events", token=None)[0] == 401
    status, body = _sql(worker, "SELECT count() FROM touchpoint_events")
    assert status == 200 and body["columns"] == ["count()"], body
    # a cross-site GET (an <img> or a link) can carry neither the token nor the SQL
    assert worker.get("/warehouse/query?sql=SELECT%201", token=None)[0] == 401
    assert worker.get("/warehouse/query?sql=SELECT%201")[0] == 405


def test_a_foreign_host_name_is_refused_even_with_the_token(worker: Worker) -> None:
    for path in ("/health", "/status", "/warehouse/query"):
        host = f"rebound.example:{worker.settings.web_port}"
        status, _ = worker.get(path, headers={"Host": host})
        assert status == 421, path
    assert worker.get("/status", headers={"Host": f"localhost:{worker.settings.web_port}"})[0] \
        == 200


@pytest.mark.parametrize("path", ["/table/touchpoint-profiles/someone/", "/router/",
                                  "/graph/", "/stats/"])
def test_faust_s_own_views_are_off(worker: Worker, path: str) -> None:
    assert worker.get(path)[0] == 404


def test_sql_that_reaches_outside_the_project_s_tables_is_refused(worker: Worker,
                                                                   tmp_path: Path) -> None:
    salt_file = worker.settings.home / "api_token"  # a secret the worker's process can read
    target = tmp_path / "written.txt"
    target.write_text("before\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    contacted: list[bool] = []

    def watch() -> None:
        for _ in range(25):
            try:
                listener.accept()[0].close()
                contacted.append(True)
            except OSError:
                pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    port = listener.getsockname()[1]
    attacks = [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT * FROM file('{salt_file}', 'LineAsString')",
        f"select * from FILE('{salt_file}', 'TSV', 'line String')",
        f"SELECT file('{salt_file}')",
        f"SELECT 1 INTO OUTFILE '{target}' APPEND",
        f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString', 'line String')",
        "SELECT name FROM system.tables",
        "SELECT 1 FROM touchpoint_events WHERE customer_id IN system.users",
        "SELECT 1; DROP TABLE touchpoint_events_raw",
        "INSERT INTO touchpoint_events_raw SELECT * FROM touchpoint_events_raw",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1 /* /* */ , * FROM system.tables -- */",
        "WITH x AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM x",
        f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
    ]
    try:
        for sql in attacks:
            status, body = _sql(worker, sql)
            assert status == 400, (sql, body)
            text = json.dumps(body)
            assert "root:" not in text and worker.settings.api_token not in text, sql
    finally:
        watcher.join()
        listener.close()
    assert target.read_text() == "before\n"
    assert not contacted, "the worker fetched a URL"
    assert worker.get("/health", token=None)[0] == 200  # and it is still well


def test_the_open_pages_say_nothing_about_customers(worker: Worker) -> None:
    customer = f"secret-{uuid.uuid4().hex[:8]}"
    worker.publisher.publish("store", {
        "event_id": f"{customer}-1", "type": "purchase", "occurred_at": 1_795_000_000_000,
        "customer_id": customer, "store_id": "SH-01", "amount": 5.0})
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE customer_id = '{customer}'",
                    1)
    for path in ("/health", "/metrics", "/", "/dashboard/static/dashboard.js"):
        status, body = worker.get(path, token=None)
        assert status in (200, 503) and customer.encode() not in body, path
    status, body = worker.get("/dashboard/data")
    assert status == 200  # the dashboard's figures come with the token


@pytest.mark.slow
def test_named_tokens_are_accepted_until_revoked(worker_factory: WorkerFactory) -> None:
    ops, bi = "ops-" + uuid.uuid4().hex, "bi-" + uuid.uuid4().hex
    worker = worker_factory("chdb", TOUCHPOINT_API_TOKENS=f"ops={ops},bi={bi}",
                            TOUCHPOINT_API_TOKEN=ops)
    assert worker.get("/status", token=ops)[0] == 200
    assert worker.get("/status", token=bi)[0] == 200
    local = (worker.settings.home / "api_token")
    assert not local.exists() or worker.get("/status", token=local.read_text().strip())[0] == 401
    worker.stop()
    worker.env["TOUCHPOINT_API_TOKENS"] = f"ops={ops}"  # bi revoked
    worker.start()
    assert worker.get("/status", token=ops)[0] == 200
    assert worker.get("/status", token=bi)[0] == 401
