"""Ask the warehouse a question from the command line, wherever it is open.

A ClickHouse server is queried directly. The embedded warehouse (chdb) can be open in
one process only; when a worker has it, the query goes to that worker's web server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from touchpoint.exceptions import WarehouseError, WarehouseUnavailable
from touchpoint.settings import Settings
from touchpoint.sinks.clickhouse import QueryResult, connect

__all__ = ["query_worker", "run_query"]


def run_query(settings: Settings, sql: str) -> QueryResult:
    """Run ``sql`` with bare table names read from the configured database."""
    try:
        warehouse = connect(settings.warehouse)
    except WarehouseUnavailable:
        if settings.warehouse.backend != "chdb":
            raise
        return query_worker(settings, sql)
    with warehouse:
        warehouse.use_database()
        return warehouse.query(sql)


def query_worker(settings: Settings, sql: str, *, timeout: float = 60.0) -> QueryResult:
    """Run a read-only ``sql`` through the worker at ``TOUCHPOINT_WEB_PORT``."""
    url = f"http://{settings.web_host}:{settings.web_port}/warehouse/query"
    request = urllib.request.Request(url, data=sql.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise WarehouseError(f"the worker refused the query: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise WarehouseUnavailable(
            f"the embedded warehouse is open in another process, and no worker answers at "
            f"{url} ({exc}): set TOUCHPOINT_WEB_PORT to that worker's port, or stop it"
        ) from exc
    return QueryResult(tuple(body["columns"]), tuple(body["types"]),
                       [tuple(row) for row in body["rows"]])
