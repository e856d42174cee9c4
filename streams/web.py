"""The worker's web views: status counters, and warehouse queries for the embedded engine.

chdb lets one process open a data folder, and while a worker runs that process is the
worker; ``touchpoint query`` and the tests ask it here. Only read statements are served.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from touchpoint.exceptions import WarehouseError
from touchpoint.sinks.clickhouse import Warehouse

__all__ = ["READ_ONLY", "register"]

READ_ONLY = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS)\b", re.IGNORECASE)


def register(app: faust.App, *, status: Callable[[], dict[str, Any]],
             warehouse: Warehouse) -> None:
    """Add ``/status`` and ``/warehouse/query`` to the worker's web server."""
    started = time.time()

    @app.page("/status")
    class Status(View):
        """Counters of this worker: ingested, rejected, stored, retries."""

        async def get(self, request: Request) -> Response:
            body = status()
            body["uptime_s"] = round(time.time() - started, 1)
            return self.json(body)

    @app.page("/warehouse/query")
    class Query(View):
        """Run one read-only SQL statement: POST the SQL as the body, or GET ?sql=."""

        async def get(self, request: Request) -> Response:
            return await self._run(request.query.get("sql", ""))

        async def post(self, request: Request) -> Response:
            return await self._run(await request.text())

        async def _run(self, sql: str) -> Response:
            if not READ_ONLY.match(sql) or ";" in sql.strip().rstrip(";"):
                return self.json(
                    {"error": "one read-only statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS)"},
                    status=400,
                )
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    None, warehouse.query, sql
                )
            except WarehouseError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({
                "columns": list(result.columns), "types": list(result.types),
                "rows": [[_jsonable(v) for v in row] for row in result.rows],
            })


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
