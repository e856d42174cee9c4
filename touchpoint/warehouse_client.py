"""Ask the warehouse a question from the command line, wherever it is open.

A ClickHouse server is queried directly. The embedded warehouse (chdb) can be open in
one process only; when a worker has it, the query goes to that worker's web server.
"""

from __future__ import annotations

from touchpoint.exceptions import WarehouseError, WarehouseUnavailable
from touchpoint.settings import Settings
from touchpoint.sinks.clickhouse import QueryResult, connect
from touchpoint.worker_api import WorkerAPI, WorkerRefused, WorkerUnreachable

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
    api = WorkerAPI(settings)
    try:
        body = api.call("/warehouse/query", data=sql.encode(), timeout=timeout)
    except WorkerRefused as exc:
        if exc.status == 401:
            raise WarehouseError(
                f"the worker refused the query: {exc} (set TOUCHPOINT_API_TOKEN to a token "
                "the worker knows)") from None
        raise WarehouseError(f"the worker refused the query: {exc}") from None
    except WorkerUnreachable as exc:
        raise WarehouseUnavailable(
            f"the embedded warehouse is open in another process, and {exc}: set "
            "TOUCHPOINT_WEB_PORT to that worker's port, or stop it"
        ) from None
    return QueryResult(tuple(body["columns"]), tuple(body["types"]),
                       [tuple(row) for row in body["rows"]])
