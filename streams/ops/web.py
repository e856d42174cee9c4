"""The worker's web views: status, customer lookup, signals and people's SQL.

chdb lets one process open a data folder, and while a worker runs that process is the
worker; ``touchpoint query`` and the tests ask it here. Every view here needs an API
token (:mod:`touchpoint.streams.ops.access`); SQL is served only as one checked SELECT of
the project's tables, run read-only within limits (:mod:`touchpoint.sinks.query_guard`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable

from touchpoint.exceptions import QueryRefused, WarehouseError, WarehouseUnavailable
from touchpoint.schemas.contract import hash_pii, normalize_email, normalize_phone
from touchpoint.signals_view import SignalFilter, list_signals
from touchpoint.sinks import tables
from touchpoint.sinks.clickhouse import Warehouse, quote_literal
from touchpoint.sinks.query_guard import checked_select
from touchpoint.streams.ops import access
from touchpoint.streams.rules.identity import IdentityGraph, own_id
from touchpoint.streams.stages.identity import TABLE as IDENTITY_TABLE

__all__ = ["Identify", "QueryLimits", "register", "register_customers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryLimits:
    """How long a query over HTTP may run, and how many rows it may return."""

    timeout_s: float
    max_rows: int


def register(app: faust.App, *, status: Callable[[], dict[str, Any]],
             warehouse: Warehouse, reader: Warehouse, limits: QueryLimits) -> None:
    """Add ``/status``, ``/warehouse/query`` and ``/signals`` to the worker's web server.

    People's SQL is read through ``reader`` (:func:`~touchpoint.sinks.query_guard.open_reader`),
    the worker's own figures through ``warehouse``.
    """
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
        """Run one SELECT of the project's tables: POST the SQL as the body.

        The SQL is checked (:func:`~touchpoint.sinks.query_guard.checked_select`) and run
        read-only within the time and row limits (``TOUCHPOINT_QUERY_*``). Not a GET: SQL
        does not belong in URLs, which proxies and browsers' histories keep.
        """

        async def post(self, request: Request) -> Response:
            sql = await request.text()
            client = access.client_of(request)
            try:
                checked = checked_select(sql, database=reader.database)
            except QueryRefused as exc:
                log.info("SQL over HTTP by %r refused (%s)", client, exc.code)
                return self.json({"error": str(exc), "code": exc.code}, status=400)
            log.info("SQL over HTTP by %r: %d characters", client, len(sql))
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    None, partial(reader.read, checked, timeout_s=limits.timeout_s,
                                  max_rows=limits.max_rows))
            except WarehouseUnavailable as exc:
                return self.json({"error": str(exc)}, status=503)
            except WarehouseError as exc:
                return self.json({"error": str(exc)}, status=400)
            return self.json({
                "columns": list(result.columns), "types": list(result.types),
                "rows": [[_jsonable(v) for v in row] for row in result.rows],
            })

    @app.page("/signals")
    class Signals(View):
        """Complaint signals, as `touchpoint signals` lists them, as JSON.

        Filters: ?status= &severity= &customer= &reason= &channel= &limit= (status open
        and severity watch or above by default).
        """

        async def get(self, request: Request) -> Response:
            query = request.query
            try:
                which = SignalFilter(
                    status=query.get("status", "open"),
                    min_severity=query.get("severity", "watch"),
                    customer=query.get("customer") or None, reason=query.get("reason") or None,
                    channel=query.get("channel") or None, limit=int(query.get("limit", "50")))
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            try:
                now, signals = await asyncio.get_running_loop().run_in_executor(
                    None, list_signals, warehouse.query, which)
            except WarehouseError as exc:
                return self.json({"error": str(exc)}, status=503)
            return self.json({"now": _jsonable(now),
                              "signals": [{k: _jsonable(v) for k, v in s.items()}
                                          for s in signals]})


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class Identify:
    """Turns what an agent types (phone, e-mail, customer or cookie id) into identifiers."""

    _PHONE = re.compile(r"^\+?[\d\s\-().]{7,}$")

    def __init__(self, pii_salt: str, phone_region: str) -> None:
        self._salt = pii_salt.encode()
        self._region = phone_region

    def candidates(self, text: str) -> list[str]:
        """Identifiers ``text`` may be, most specific first."""
        text = text.strip()
        found = []
        if "@" in text:
            email = normalize_email(text)
            if email:
                found.append(f"email:{hash_pii(email, self._salt)}")
        if self._PHONE.match(text):
            phone = normalize_phone(text, self._region)
            if phone:
                found.append(f"phone:{hash_pii(phone, self._salt)}")
        found += [f"customer_id:{text}", f"anonymous_id:{text}"]
        return found


def register_customers(app: faust.App, *, graph: IdentityGraph, profiles: Any,
                       lookup: Callable[[str], dict[str, Any] | None], warehouse: Warehouse,
                       identify: Identify) -> None:
    """Add ``/customers/{identifier}`` and ``/profiles/{customer_id}`` (table-routed)."""
    owner_table = app.tables[IDENTITY_TABLE]

    async def recent_touchpoints(customer_id: str) -> list[dict[str, Any]]:
        sql = (
            "SELECT occurred_at, channel, type, category, stage, store_id, campaign_id, amount,"
            f" queue_wait_s, score, outcome, reason, event_id FROM {tables.EVENTS}"
            f" WHERE customer_id = {quote_literal(customer_id)}"
            " ORDER BY occurred_at DESC, event_id LIMIT 20"
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, warehouse.query, sql)
        except WarehouseError as exc:
            return [{"error": f"touchpoints unavailable: {exc}"}]
        return [{k: _jsonable(v) for k, v in row.items()} for row in result.dicts()]

    async def profile_of(customer_id: str, authorization: str) -> dict[str, Any] | None:
        url = app.router.key_store(profiles.name, customer_id)
        if str(url).rstrip("/") == str(app.conf.canonical_url).rstrip("/"):
            return lookup(customer_id)
        # the other worker asks who is asking too: pass the caller's token on
        headers = {"Authorization": authorization}
        async with app.http_client.get(f"{url}/profiles/{quote(customer_id, safe='')}",
                                       headers=headers) as rsp:
            return await rsp.json() if rsp.status == 200 else None

    async def elsewhere(view: View, table: str, key: str, request: Request) -> Response | None:
        """The answer of the worker that holds ``key`` of ``table``; None if it is this one.

        503 while no worker can be named (Faust's ``table_route`` would answer 500: its
        router raises TypeError when aiokafka has no metadata for the changelog yet).
        """
        try:
            return await app.router.route_req(table, key, view.web, request)
        except SameNode:
            return None
        except (KeyError, ServiceUnavailable, TypeError):
            return view.json({"error": "the worker is starting or rebalancing; retry"},
                             status=503)

    @app.page("/customers/{identifier}")
    class Customer(View):
        """Who this is: profile, identifiers (hashed) and the last 20 touchpoints."""

        async def get(self, request: Request, identifier: str) -> Response:
            # the identity graph has one partition; its owner answers
            routed = await elsewhere(self, owner_table.name, "graph", request)
            if routed is not None:
                return routed
            authorization = request.headers["Authorization"]
            candidates = identify.candidates(identifier)
            customer_id = next((c for c in map(graph.lookup, candidates) if c), None)
            if customer_id is None and identifier in graph.members:
                customer_id = identifier  # a customer id, generated or CRM
            members = graph.members.get(customer_id or "") or {"identifiers": [],
                                                               "aliases": []}
            profile = None
            try:
                if customer_id is None:
                    # Never linked to another identifier, so not in the graph: the
                    # customer is the identifier's own id (or the id given), if it has a
                    # profile.
                    for candidate in (*candidates, None):
                        own = identifier if candidate is None else own_id(candidate)
                        profile = await profile_of(own, authorization)
                        if profile is not None:
                            customer_id = own
                            members = {"identifiers": [candidate] if candidate else [],
                                       "aliases": []}
                            break
                else:
                    profile = await profile_of(customer_id, authorization)
            except (KeyError, ServiceUnavailable, TypeError, aiohttp.ClientError):
                # the profiles' partitions are not assigned yet, or their worker is away
                return self.json({"error": "the worker is starting or rebalancing; retry"},
                                 status=503)
            if customer_id is None:
                return self.json({"error": f"no customer known by {identifier!r}"}, status=404)
            return self.json({
                "customer_id": customer_id,
                "identifiers": sorted(members["identifiers"]),
                "merged_ids": sorted(members["aliases"]),
                "profile": profile,
                "touchpoints": await recent_touchpoints(customer_id),
            })

    @app.page("/profiles/{customer_id}")
    class Profile(View):
        """The profile of one customer, answered by the worker that holds it."""

        async def get(self, request: Request, customer_id: str) -> Response:
            routed = await elsewhere(self, profiles.name, customer_id, request)
            if routed is not None:
                return routed
            found = lookup(customer_id)
            if found is None:
                return self.json({"error": f"no profile for {customer_id!r}"}, status=404)
            return self.json(found)
