"""The live operations dashboard: the page at ``/`` and the figures it polls every second.

Figures come from what every worker of a group shares, never from one worker's memory:

* Kafka (:mod:`touchpoint.streams.ops.lag`): arrivals per second on each channel topic and the
  dead-letter topic, the group's lag per topic and partition, how many workers are in it;
* the warehouse, aggregated in SQL: complaint signals, dead-letter reasons, queue and
  wait times, the touchpoints losing most points, today's campaign response.

So any worker's dashboard shows the whole deployment. One snapshot is computed at most
once a second however many browsers watch, in a thread of its own; the signal feed is
capped (``feed_limit``) while its counts cover every signal. Event-time windows ("the
last hour", "today") are measured from the newest event time in the warehouse, as
``touchpoint signals`` does, so a replay or the demo's accelerated traffic reads right.
The SQL runs on ClickHouse 18.16 and on chdb alike (no window functions, no newer
syntax).
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import faust
from faust.web import Request, Response, View

from touchpoint.exceptions import WarehouseError
from touchpoint.schemas.contract import CHANNELS
from touchpoint.sinks.clickhouse import QueryResult, Warehouse, connect, quote_literal
from touchpoint.sinks.tables import (
    CAMPAIGN_RESPONSE,
    COMPLAINT_SIGNALS,
    COMPLAINT_SIGNALS_RAW,
    DEADLETTER,
    DEADLETTER_RAW,
    EVENTS,
    EVENTS_RAW,
)
from touchpoint.streams.ops.lag import OffsetMonitor, consumed_topics, partition_lag, rates
from touchpoint.streams.topics import TopicNames

__all__ = [
    "Dashboard",
    "StaticFiles",
    "Windows",
    "campaign_events_sql",
    "campaign_view_sql",
    "dashboard_query",
    "register",
    "scorecard_sql",
    "waits_sql",
]

log = logging.getLogger(__name__)

STORE_LONG_WAIT_S = 900
CALL_LONG_WAIT_S = 300

# --- SQL (ClickHouse 18.16 and chdb) -----------------------------------------------------

def activity_sql(window_s: int) -> str:
    """Per channel: newest event time, and events stored in the last ``window_s`` seconds.

    The newest event time over all channels is the dashboard's event-time "now".
    """
    return ("SELECT channel, toUnixTimestamp(max(occurred_at)) AS newest, "
            f"countIf(ingested_at >= now() - {int(window_s)}) AS stored "
            f"FROM {EVENTS_RAW} GROUP BY channel")


def signal_feed_sql(limit: int) -> str:
    """Open signals, the most recently raised or escalated first."""
    return (
        "SELECT signal_id, customer_id, severity, status, round(score, 1) AS score, reasons, "
        "channels, toUnixTimestamp(detected_at) AS detected, "
        "toUnixTimestamp(ifNull(escalated_at, detected_at)) AS escalated, "
        "toUnixTimestamp(due_at) AS due "
        f"FROM {COMPLAINT_SIGNALS} WHERE status = 'open' "
        "ORDER BY greatest(detected_at, ifNull(escalated_at, detected_at)) DESC, signal_id "
        f"LIMIT {int(limit)}"
    )


SIGNAL_COUNTS_SQL = ("SELECT status, severity, count() AS signals "
                     f"FROM {COMPLAINT_SIGNALS_RAW} FINAL GROUP BY status, severity")


def waits_sql(now_s: int, window_s: int) -> str:
    """Queue waits per store, and the call center's, over the last ``window_s`` of event time."""
    return (
        "SELECT channel, store_id, count() AS waits, round(avg(wait), 1) AS avg_s, "
        "round(quantile(0.9)(wait), 1) AS p90_s, max(wait) AS max_s, "
        f"countIf(wait > if(channel = 'store', {STORE_LONG_WAIT_S}, {CALL_LONG_WAIT_S})) "
        "AS long_waits, countIf(outcome = 'abandoned') AS abandoned "
        "FROM (SELECT channel, store_id, outcome, assumeNotNull(queue_wait_s) AS wait "
        f"FROM {EVENTS_RAW} FINAL "
        "WHERE channel IN ('store', 'callcenter') AND isNotNull(queue_wait_s) "
        f"AND occurred_at > toDateTime({int(now_s) - int(window_s)})) "
        "GROUP BY channel, store_id ORDER BY channel, store_id"
    )


# Each negative experience at a touchpoint loses it a point; an event loses at most one.
NEGATIVE_REASONS = {
    "long_wait": (f"(channel = 'store' AND ifNull(queue_wait_s, 0) > {STORE_LONG_WAIT_S}) "
                  f"OR (channel = 'callcenter' AND ifNull(queue_wait_s, 0) > {CALL_LONG_WAIT_S})"),
    "bad_outcome": ("channel = 'callcenter' "
                    "AND outcome IN ('unresolved', 'escalated', 'abandoned')"),
    "low_rating": ("channel = 'feedback' AND ((type IN ('csat', 'review') "
                   "AND ifNull(score, 5) <= 2) OR (type = 'nps' AND ifNull(score, 10) <= 6))"),
    "negative_text": "ifNull(sentiment, 0) <= -0.2",
    "web_error": "channel = 'web' AND type = 'error'",
}


def scorecard_sql(now_s: int, limit: int = 10) -> str:
    """Event types losing most points today (event time): contacts, negatives by reason."""
    flags = ", ".join(f"toUInt8({cond}) AS n_{name}" for name, cond in NEGATIVE_REASONS.items())
    sums = ", ".join(f"sum(n_{name}) AS {name}" for name in NEGATIVE_REASONS)
    any_negative = " OR ".join(f"n_{name}" for name in NEGATIVE_REASONS)
    return (
        f"SELECT channel, type, count() AS contacts, sum(toUInt8({any_negative})) AS negative, "
        f"{sums} FROM (SELECT channel, type, {flags} FROM {EVENTS_RAW} FINAL "
        f"WHERE occurred_at >= toStartOfDay(toDateTime({int(now_s)}))) "
        "GROUP BY channel, type HAVING negative > 0 "
        f"ORDER BY negative DESC, contacts DESC, channel, type LIMIT {int(limit)}"
    )


def campaign_view_sql(now_s: int, limit: int = 12) -> str:
    """Today's response per campaign from the ``campaign_response`` view (attribution)."""
    return (
        "SELECT campaign_id, sum(exposed) AS sent, sum(delivered) AS delivered, "
        "sum(opened) AS opened, sum(clicked) AS clicked, sum(responded) AS responded, "
        f"sum(converted) AS converted FROM {CAMPAIGN_RESPONSE} "
        f"WHERE day = toDate(toDateTime({int(now_s)})) "
        f"GROUP BY campaign_id ORDER BY sent DESC, campaign_id LIMIT {int(limit)}"
    )


def campaign_events_sql(now_s: int, limit: int = 12) -> str:
    """Today's campaign events per campaign, counted from ``touchpoint_events``."""
    return (
        "SELECT campaign_id, countIf(type = 'sent') AS sent, "
        "countIf(type = 'delivered') AS delivered, countIf(type = 'opened') AS opened, "
        "countIf(type = 'clicked') AS clicked, countIf(type = 'unsubscribed') AS unsubscribed "
        f"FROM {EVENTS_RAW} FINAL WHERE channel = 'campaign' "
        f"AND occurred_at >= toStartOfDay(toDateTime({int(now_s)})) "
        f"GROUP BY campaign_id ORDER BY sent DESC, campaign_id LIMIT {int(limit)}"
    )


def view_exists_sql(name: str) -> str:
    """Whether a table or view ``name`` exists in the current database."""
    return ("SELECT count() FROM system.tables WHERE database = currentDatabase() "
            f"AND name = {quote_literal(name)}")


def deadletters_sql(limit: int) -> str:
    """The newest dead letters."""
    return (
        "SELECT toUnixTimestamp(rejected_at) AS at, source_topic, source_partition, "
        f"source_offset, reason_code, reason, event_id FROM {DEADLETTER} "
        f"ORDER BY rejected_at DESC, source_offset DESC LIMIT {int(limit)}"
    )


def deadletter_reasons_sql(window_s: int) -> str:
    """Dead letters per reason code over the last ``window_s`` seconds (wall clock)."""
    return (
        f"SELECT reason_code, count() AS records FROM {DEADLETTER_RAW} FINAL "
        f"WHERE rejected_at >= now() - {int(window_s)} "
        "GROUP BY reason_code ORDER BY records DESC, reason_code"
    )


# --- the snapshot ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Windows:
    """How much each panel covers."""

    feed_limit: int = 200
    wait_window_s: int = 3600
    deadletter_window_s: int = 3600
    latest_deadletters: int = 5
    scorecard_rows: int = 10
    campaigns: int = 12
    stored_window_s: int = 60


class Dashboard:
    """Builds the dashboard's snapshot from the warehouse and Kafka, at most once a second.

    ``query`` runs one statement on the warehouse (blocking; it is called from a thread
    of the dashboard's own). ``monitor`` samples Kafka offsets; without one the Kafka
    panels say so. While someone watches (a request within ``idle_after`` seconds) the
    figures are computed again every ``max_age`` seconds in the background, so a request
    answers at once with figures at most about a second old; ``spawn`` starts that
    background task (the worker passes its app's, which ends it when the worker stops).
    """

    def __init__(self, query: Callable[[str], QueryResult], topics: TopicNames,
                 monitor: OffsetMonitor | None, *, windows: Windows | None = None,
                 max_age: float = 1.0, slow_max_age: float = 2.0, idle_after: float = 15.0,
                 clock: Callable[[], float] = time.time,
                 spawn: Callable[[Coroutine[Any, Any, None]], Any] | None = None) -> None:
        self.query = query
        self.topics = topics
        self.monitor = monitor
        self.windows = windows or Windows()
        self.max_age = max_age
        self.slow_max_age = slow_max_age
        self.idle_after = idle_after
        self.spawn = spawn or asyncio.ensure_future
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard")
        self._lock: asyncio.Lock | None = None
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0
        self._wanted_at = 0.0
        self._refreshing = False
        self._views: dict[str, tuple[bool, float]] = {}
        self._slow: dict[str, Any] | None = None
        self._slow_at = 0.0

    async def snapshot(self) -> dict[str, Any]:
        """The latest figures; the first request waits for them, later ones do not."""
        self._wanted_at = time.monotonic()
        if self.monitor is not None:
            self.monitor.watched()
        if not self._refreshing:
            self._refreshing = True
            self.spawn(self._refresh_while_watched())
        if self._cached is None:
            return await self._compute()
        return self._cached

    async def _refresh_while_watched(self) -> None:
        try:
            while time.monotonic() - self._wanted_at < self.idle_after:
                started = time.monotonic()
                try:
                    await self._compute()
                except Exception:  # a bug must not end the refreshing: log, go on
                    log.exception("dashboard figures failed")
                await asyncio.sleep(max(self.max_age - (time.monotonic() - started), 0.1))
        finally:
            self._refreshing = False

    async def _compute(self) -> dict[str, Any]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one computation at a time; the others wait for it
            if self._cached is not None and \
                    time.monotonic() - self._cached_at < self.max_age * 0.9:
                return self._cached
            figures = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.warehouse_figures)
            figures["kafka"] = self.kafka_figures()
            figures["channels"] = list(CHANNELS)  # the page draws these, in this order
            figures["generated_at"] = self._clock()
            self._cached, self._cached_at = figures, time.monotonic()
            return figures

    # -- Kafka ------------------------------------------------------------------------------

    def _short(self, topic: str) -> str:
        return topic[len(self.topics.prefix):] if topic.startswith(self.topics.prefix) else topic

    def kafka_figures(self) -> dict[str, Any]:
        """Arrival rates, lag and members from the offset monitor's samples (in memory)."""
        monitor = self.monitor
        if monitor is None:
            return {"ok": False, "error": "no Kafka offset monitor in this worker"}
        samples = list(monitor.samples)
        inbound = self.topics.inbound
        times, series = rates(samples, [*inbound, self.topics.deadletter])
        consumed = consumed_topics(self.topics)
        latest = samples[-1] if samples else None
        lag = [] if latest is None else partition_lag(latest, consumed)
        by_topic: dict[str, int] = {}
        for row in lag:
            row["topic"] = self._short(row["topic"])
            by_topic[row["topic"]] = by_topic.get(row["topic"], 0) + row["lag"]
        return {
            "ok": monitor.error is None and latest is not None,
            "error": monitor.error,
            "group": monitor.group,
            "members": None if latest is None else latest.members,
            "sampled_at": None if latest is None else latest.at,
            "rates": {
                "t": [round(t * 1000) for t in times],
                "channels": {inbound[topic]: series[topic] for topic in inbound},
                "deadletter": series[self.topics.deadletter],
            },
            "lag": lag,
            "lag_by_topic": by_topic,
        }

    # -- warehouse --------------------------------------------------------------------------

    def warehouse_figures(self) -> dict[str, Any]:
        """Every warehouse panel (blocking). A failing query fails its panel only.

        Signals, dead letters and the stored count are read every time; the panels over
        an hour or a day of event time (waits, scorecard, campaigns, dead-letter reasons)
        move slowly and are read again every ``slow_max_age`` seconds.
        """
        w = self.windows
        errors: dict[str, str] = {}
        run = partial(self._run, errors)
        activity = run("activity", activity_sql(w.stored_window_s)) or []
        now_s = max((int(r["newest"] or 0) for r in activity), default=0)
        event_now = now_s or None
        latest_dl = run("deadletters", deadletters_sql(w.latest_deadletters)) or []
        for row in latest_dl:
            row["source_topic"] = self._short(row["source_topic"])
        slow = self._slow
        if slow is None or time.monotonic() - self._slow_at >= self.slow_max_age \
                or (now_s and not slow["now"]):
            slow_errors: dict[str, str] = {}
            slow = {"now": now_s, "errors": slow_errors,
                    **self._slow_figures(partial(self._run, slow_errors), now_s)}
            self._slow, self._slow_at = slow, time.monotonic()
        return {
            "event_time_now": event_now,
            "stored": {"window_s": w.stored_window_s,
                       "by_channel": {r["channel"]: r["stored"] for r in activity}},
            "signals": self._signals(run, event_now),
            "deadletters": {"window_s": w.deadletter_window_s, "latest": latest_dl,
                            "by_reason": slow["deadletter_reasons"]},
            "waits": slow["waits"], "wait_window_s": w.wait_window_s,
            "scorecard": slow["scorecard"], "campaigns": slow["campaigns"],
            "errors": {**slow["errors"], **errors},
        }

    def _run(self, errors: dict[str, str], panel: str, sql: str
             ) -> list[dict[str, Any]] | None:
        try:
            return self.query(sql).dicts()
        except WarehouseError as exc:
            errors[panel] = str(exc).splitlines()[0][:300]
            log.debug("dashboard panel %s failed: %s", panel, exc)
            return None

    def _slow_figures(self, run: Callable[[str, str], list[dict[str, Any]] | None],
                      now_s: int) -> dict[str, Any]:
        w = self.windows
        reasons = run("deadletters", deadletter_reasons_sql(w.deadletter_window_s)) or []
        if not now_s:
            return {"deadletter_reasons": reasons, "waits": [], "scorecard": [],
                    "campaigns": {"source": None, "day_of": None, "rows": []}}
        return {
            "deadletter_reasons": reasons,
            "waits": self._waits(run("waits", waits_sql(now_s, w.wait_window_s))),
            "scorecard": self._scorecard(run("scorecard",
                                             scorecard_sql(now_s, w.scorecard_rows))),
            "campaigns": self._campaigns(run, now_s),
        }

    def _signals(self, run: Callable[[str, str], list[dict[str, Any]] | None],
                 now: int | None) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {}
        for row in run("signals", SIGNAL_COUNTS_SQL) or []:
            counts.setdefault(row["status"], {})[row["severity"]] = row["signals"]
        feed = run("signals", signal_feed_sql(self.windows.feed_limit)) or []
        for signal in feed:
            signal["reasons"], signal["channels"] = list(signal["reasons"]), \
                list(signal["channels"])
            signal["age_s"] = None if now is None else now - signal["detected"]
            due = signal.pop("due")
            signal["time_left_s"] = None if now is None or not due else due - now
        open_total = sum(counts.get("open", {}).values())
        return {"counts": counts, "open_total": open_total, "feed": feed,
                "feed_limit": self.windows.feed_limit}

    @staticmethod
    def _waits(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        waits = []
        for row in rows or []:
            call = row["channel"] == "callcenter"
            waits.append({
                "where": "call center" if call else (row["store_id"] or "(no store)"),
                "channel": row["channel"], "waits": row["waits"], "avg_s": row["avg_s"],
                "p90_s": row["p90_s"], "max_s": row["max_s"], "long_waits": row["long_waits"],
                "long_wait_s": CALL_LONG_WAIT_S if call else STORE_LONG_WAIT_S,
                "abandoned": row["abandoned"] if call else None,
            })
        # the call center first, then the stores with the longest waits
        waits.sort(key=lambda r: (r["channel"] != "callcenter", -(r["avg_s"] or 0), r["where"]))
        return waits

    @staticmethod
    def _scorecard(rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        card = []
        for row in rows or []:
            card.append({
                "touchpoint": f"{row['channel']} · {row['type']}", "channel": row["channel"],
                "type": row["type"], "contacts": row["contacts"], "negative": row["negative"],
                "share_lost": round(row["negative"] / row["contacts"], 4) if row["contacts"]
                else 0.0,
                "reasons": {name: row[name] for name in NEGATIVE_REASONS},
            })
        return card

    def _campaigns(self, run: Callable[[str, str], list[dict[str, Any]] | None],
                   now_s: int) -> dict[str, Any]:
        limit = self.windows.campaigns
        if self._view_exists(run, CAMPAIGN_RESPONSE):
            rows = run("campaigns", campaign_view_sql(now_s, limit))
            if rows:  # attribution runs: exposures and responses of today's campaigns
                return {"source": CAMPAIGN_RESPONSE, "day_of": now_s, "rows": rows}
        rows = run("campaigns", campaign_events_sql(now_s, limit)) or []
        return {"source": EVENTS, "day_of": now_s,
                "rows": [r for r in rows if r["campaign_id"]]}

    def _view_exists(self, run: Callable[[str, str], list[dict[str, Any]] | None],
                     name: str) -> bool:
        # Views come with migrations, which a newer worker may apply at any time: look
        # again every minute.
        known = self._views.get(name)
        if known is not None and time.monotonic() - known[1] < 60:
            return known[0]
        rows = run("campaigns", view_exists_sql(name))
        exists = bool(rows and rows[0]["count()"])
        self._views[name] = (exists, time.monotonic())
        return exists

    def close(self) -> None:
        """Stop the dashboard's thread."""
        self._executor.shutdown(wait=False)


# --- static files ----------------------------------------------------------------------------

PLOTLY_JS = "plotly.min.js"


class StaticFiles:
    """The page's own files (package data) and plotly.js from the installed ``plotly`` package.

    plotly.js is read from the ``plotly`` Python package's files at run time (nothing is
    copied into this repository) and kept gzipped in memory after its first request.
    """

    TYPES: ClassVar[dict[str, str]] = {
        ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".js": "text/javascript; charset=utf-8"}
    OWN = ("dashboard.html", "dashboard.css", "dashboard.js")

    def __init__(self) -> None:
        self._cache: dict[str, tuple[bytes, bytes]] = {}

    def content_type(self, name: str) -> str:
        """The Content-Type header for ``name``."""
        return self.TYPES[name[name.rindex("."):]]

    def read(self, name: str) -> tuple[bytes, bytes]:
        """(plain, gzipped) bytes of ``name``; KeyError for a name not served."""
        if name not in self.OWN and name != PLOTLY_JS:
            raise KeyError(name)
        cached = self._cache.get(name)
        if cached is None:
            if name == PLOTLY_JS:
                path = importlib.resources.files("plotly") / "package_data" / PLOTLY_JS
            else:
                path = importlib.resources.files("touchpoint.streams.ops") / "static" / name
            plain = path.read_bytes()
            cached = (plain, gzip.compress(plain, compresslevel=6))
            if name == PLOTLY_JS:  # ours are re-read, so an edited page shows at once
                self._cache[name] = cached
        return cached

    @staticmethod
    def plotly_version() -> str:
        """Version of the plotly.js bundle served (for cache-busting URLs)."""
        try:
            from plotly.offline import get_plotlyjs_version

            return str(get_plotlyjs_version())
        except ImportError:  # pragma: no cover - plotly is a dependency
            return "missing"


# --- web views --------------------------------------------------------------------------------

def dashboard_query(warehouse: Warehouse) -> Callable[[str], QueryResult]:
    """How the dashboard asks the warehouse.

    A ClickHouse server gets a connection of the dashboard's own (opened on first use), so
    its queries never wait behind the sink's inserts; the embedded engine has one session
    per process, shared under its lock.
    """
    if warehouse.url.backend == "chdb":
        return warehouse.query
    own: list[Warehouse] = []

    def query(sql: str) -> QueryResult:
        if not own:
            connection = connect(warehouse.url)
            connection.use_database()
            own.append(connection)
        try:
            return own[0].query(sql)
        except WarehouseError:
            own.pop().close()  # a fresh connection next time
            raise

    return query


def register(app: faust.App, *, warehouse: Warehouse, topics: TopicNames,
             monitor: OffsetMonitor | None, files: StaticFiles | None = None) -> Dashboard:
    """Add ``/`` (the page), ``/dashboard/data`` (its JSON) and ``/dashboard/static/...``."""
    dashboard = Dashboard(dashboard_query(warehouse), topics, monitor, spawn=app.add_future)
    static = files or StaticFiles()
    plotly_version = static.plotly_version()

    # Registered before Faust's own index blueprint is applied at server start, so this
    # view answers "/" (aiohttp serves the first route registered for a path).
    @app.page("/")
    class Page(View):
        """The dashboard page."""

        async def get(self, request: Request) -> Response:
            page = static.read("dashboard.html")[0].decode()
            page = page.replace("{{plotly_version}}", plotly_version)
            return self.html(page, headers={"Cache-Control": "no-cache"})

    @app.page("/dashboard/data")
    class Data(View):
        """Everything on the page, as JSON (the page polls it every second)."""

        async def get(self, request: Request) -> Response:
            return self.json(await dashboard.snapshot(), headers={"Cache-Control": "no-store"})

    @app.page("/dashboard/static/{name}")
    class Static(View):
        """The page's scripts and styles, and plotly.js."""

        async def get(self, request: Request, name: str) -> Response:
            try:
                plain, packed = static.read(name)
            except KeyError:
                return self.json({"error": f"no such file: {name}"}, status=404)
            headers = {"Content-Type": static.content_type(name),
                       "Cache-Control": "public, max-age=86400" if name == PLOTLY_JS
                       else "no-cache"}
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                headers["Content-Encoding"] = "gzip"
                return self.bytes(packed, headers=headers)
            return self.bytes(plain, headers=headers)

    return dashboard

