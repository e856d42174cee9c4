"""The operations dashboard, /metrics and /health on real services, and in a real browser."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from touchpoint.publish import Publisher
from touchpoint.schemas.contract import parse_occurred_at
from touchpoint.sim.simulate import SimEvent, Simulator, run
from touchpoint.streams.ops.lag import consumed_topics
from touchpoint.streams.topics import TopicNames

from .conftest import ARTIFACTS, Worker, WorkerFactory

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000  # 2026-11-18 07:46:40 UTC: the newest event time of the planted data
M = 60_000
H = 3_600_000


def _get(worker: Worker, path: str) -> tuple[int, bytes]:
    return worker.get(path)


def _data(worker: Worker) -> dict[str, Any]:
    status, body = _get(worker, "/dashboard/data")
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def _until(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    """Poll ``probe`` until it returns something truthy; fail saying ``what`` was awaited."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {timeout}s (last: {value!r})", pytrace=False)


def _call(eid: str, cid: str, at: int, *, outcome: str, wait: int,
          transfers: int = 0) -> tuple[str, dict[str, Any]]:
    return "callcenter", {"event_id": eid, "type": "call_ended", "occurred_at": at,
                          "customer_id": cid, "call_id": eid, "agent_id": "A1",
                          "queue_wait_s": wait, "talk_s": 200, "transfers": transfers,
                          "reason": "delivery", "outcome": outcome}


def _served(eid: str, store: str, at: int, wait: int) -> tuple[str, dict[str, Any]]:
    return "store", {"event_id": eid, "type": "served", "occurred_at": at,
                     "customer_id": f"{eid}-c", "store_id": store, "queue_wait_s": wait}


def trouble(run_id: str, cid: str, at: int) -> list[tuple[str, dict[str, Any]]]:
    """Two unresolved calls, the second after a 20-minute wait, then an escalation."""
    return [
        _call(f"{run_id}-u1", cid, at, outcome="unresolved", wait=40),
        _call(f"{run_id}-u2", cid, at + 10 * M, outcome="unresolved", wait=1200),
        _call(f"{run_id}-u3", cid, at + 20 * M, outcome="escalated", wait=60, transfers=3),
    ]


def planted(run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A small day whose every dashboard figure is known."""
    def campaign(n: int, kind: str) -> tuple[str, dict[str, Any]]:
        return "campaign", {"event_id": f"{run_id}-k{kind}{n}", "type": kind,
                            "occurred_at": T0 - H + n * M, "customer_id": f"{run_id}-r{n}",
                            "campaign_id": f"{run_id}-CMP", "medium": "email"}

    return [
        _served(f"{run_id}-s1", "S-A", T0 - 10 * M, 1000),
        _served(f"{run_id}-s2", "S-A", T0 - 5 * M, 100),
        _served(f"{run_id}-s3", "S-B", T0 - M, 50),
        _served(f"{run_id}-s4", "S-C", T0 - 2 * H, 2000),  # today, not in the last hour
        *trouble(run_id, f"{run_id}-caller", T0 - 50 * M),
        ("feedback", {"event_id": f"{run_id}-f1", "type": "csat", "occurred_at": T0 - 20 * M,
                      "customer_id": f"{run_id}-fb", "score": 1}),
        ("feedback", {"event_id": f"{run_id}-f2", "type": "nps", "occurred_at": T0 - 15 * M,
                      "customer_id": f"{run_id}-fb", "score": 5}),
        ("feedback", {"event_id": f"{run_id}-f3", "type": "review",
                      "occurred_at": T0 - 14 * M, "customer_id": f"{run_id}-fb2", "score": 4}),
        campaign(1, "sent"), campaign(2, "sent"), campaign(3, "sent"),
        campaign(1, "opened"), campaign(2, "opened"), campaign(1, "clicked"),
        ("web", {"event_id": f"{run_id}-w1", "type": "error", "occurred_at": T0 - 10 * M,
                 "customer_id": f"{run_id}-web", "session_id": f"{run_id}-ws",
                 "url": "/checkout", "error_code": "500"}),
        ("web", {"event_id": f"{run_id}-w2", "type": "page_view", "occurred_at": T0,
                 "customer_id": f"{run_id}-web", "session_id": f"{run_id}-ws", "url": "/"}),
    ]


@pytest.fixture(scope="module")
def figures(worker: Worker) -> tuple[str, dict[str, Any]]:
    """The planted day published to the module's worker, and the dashboard once it is in."""
    run_id = f"dash-{uuid.uuid4().hex[:6]}"
    events = planted(run_id)
    for channel, event in events:
        worker.publisher.publish(channel, event)
    worker.publisher.send_raw("web", b"not an avro record")
    worker.publisher.flush()
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run_id}-%'",
                    len(events), timeout=120)

    def settled() -> dict[str, Any] | None:
        data = _data(worker)
        raised = {s["customer_id"] for s in data["signals"]["feed"]}
        done = (raised == {f"{run_id}-{who}" for who in ("caller", "s1-c", "s4-c", "fb")}
                and data["deadletters"]["by_reason"]
                and data["kafka"]["ok"] and data["kafka"]["members"] == 1
                and sum(r["lag"] for r in data["kafka"]["lag"]) == 0)
        return data if done else None

    return run_id, _until("the planted day on the dashboard", settled, timeout=120)


def test_the_dashboard_shows_the_planted_day(worker: Worker,
                                             figures: tuple[str, dict[str, Any]]) -> None:
    run_id, data = figures
    assert data["event_time_now"] == T0 // 1000
    assert data["errors"] == {}
    assert [(w["where"], w["waits"], w["avg_s"], w["p90_s"], w["max_s"], w["long_waits"],
             w["abandoned"]) for w in data["waits"]] == [
        ("call center", 3, 433.3, 972.0, 1200, 1, 0),
        ("S-A", 2, 550.0, 910.0, 1000, 1, None),
        ("S-B", 1, 50.0, 50.0, 50, 0, None),
    ]
    assert [(s["touchpoint"], s["contacts"], s["negative"]) for s in data["scorecard"]] == [
        ("callcenter · call_ended", 3, 3), ("store · served", 4, 2),
        ("feedback · csat", 1, 1), ("feedback · nps", 1, 1), ("web · error", 1, 1),
    ]
    assert data["scorecard"][0]["reasons"] == {
        "long_wait": 1, "bad_outcome": 3, "low_rating": 0, "negative_text": 0, "web_error": 0}
    campaigns = data["campaigns"]
    assert campaigns["source"] in ("touchpoint_events", "campaign_response")
    assert [(r["campaign_id"], r["sent"], r["opened"], r["clicked"])
            for r in campaigns["rows"]] == [(f"{run_id}-CMP", 3, 2, 1)]
    assert data["deadletters"]["by_reason"] == [{"reason_code": "undecodable", "records": 1}]
    assert data["deadletters"]["latest"][0]["reason_code"] == "undecodable"
    [signal] = [s for s in data["signals"]["feed"] if s["customer_id"] == f"{run_id}-caller"]
    assert signal["status"] == "open"
    assert {"unresolved", "long_wait"} <= set(signal["reasons"])
    assert signal["age_s"] == 50 * 60  # raised by the first call, 50 minutes before T0
    # the caller, two long store queues, one unhappy rating
    assert {s["customer_id"] for s in data["signals"]["feed"]} == {
        f"{run_id}-{who}" for who in ("caller", "s1-c", "s4-c", "fb")}
    assert data["signals"]["open_total"] == sum(data["signals"]["counts"]["open"].values()) == 4


def test_kafka_figures_cover_every_partition_of_the_group(
        worker: Worker, figures: tuple[str, dict[str, Any]]) -> None:
    kafka = figures[1]["kafka"]
    partitions = worker.settings.topic_partitions
    expected = {(f"touchpoints.{c}", p) for c in
                ("web", "store", "callcenter", "campaign", "feedback", "deadletter")
                for p in range(partitions)}
    expected |= {(t, p) for t in (f"{worker.settings.app_id}-resolved", "signals.complaints",
                                  "touchpoints.unresolved")
                 for p in range(partitions)}
    expected |= {(f"{worker.settings.app_id}-links", 0)}  # the graph's links: one partition
    assert {(r["topic"], r["partition"]) for r in kafka["lag"]} == expected
    assert kafka["members"] == 1 and kafka["group"] == worker.settings.app_id
    assert set(kafka["rates"]["channels"]) == {"web", "store", "callcenter", "campaign",
                                               "feedback"}
    assert all(len(s) == len(kafka["rates"]["t"]) for s in kafka["rates"]["channels"].values())


def _consumed_partitions(worker: Worker) -> int:
    """How many partitions the worker's group reads (every topic but the changelogs)."""
    topics = TopicNames.of(worker.settings)
    return sum(topics.partitions(name, worker.settings.topic_partitions)
               for name in consumed_topics(topics))


def _samples(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_count_the_planted_day(worker: Worker,
                                       figures: tuple[str, dict[str, Any]]) -> None:
    status, body = _get(worker, "/metrics")
    assert status == 200
    metrics = _samples(body.decode())
    prefix = worker.settings.topic_prefix
    ingested = {c: metrics[f'touchpoint_events_ingested_total{{channel="{c}"}}']
                for c in ("store", "callcenter", "feedback", "campaign", "web")}
    assert ingested == {"store": 4, "callcenter": 3, "feedback": 3, "campaign": 6, "web": 2}
    assert metrics['touchpoint_deadletters_total{reason="undecodable"}'] == 1
    inbound = [f'touchpoint_messages_in_total{{topic="{prefix}touchpoints.{c}"}}'
               for c in ("web", "store", "callcenter", "campaign", "feedback")]
    assert sum(metrics.get(name, 0) for name in inbound) == 19  # 18 events, 1 broken
    assert metrics[f'touchpoint_messages_out_total{{topic="{prefix}touchpoints.deadletter"}}'] \
        == 1
    assert metrics['touchpoint_sink_rows_total{table="touchpoint_events_raw"}'] == 18
    assert metrics["touchpoint_event_to_stored_seconds_count"] == 18
    assert metrics["touchpoint_ingest_to_stored_seconds_count"] == 18
    # planted event times are in the past: every one took longer than a minute to store
    assert metrics['touchpoint_event_to_stored_seconds_bucket{le="60.0"}'] == 0
    assert metrics['touchpoint_sink_batch_rows_count{table="touchpoint_events_raw"}'] >= 1
    assert metrics["touchpoint_sink_retries_total"] == 0
    assert sum(v for k, v in metrics.items()
               if k.startswith("touchpoint_signal_states_total")) >= 1
    # one worker owns every partition; the offsets monitor lists a topic's partitions
    # from broker metadata it refreshes every 30 s, so a partition may join a little late
    deadline = time.monotonic() + 45
    while True:
        lag = {k: v for k, v in metrics.items() if k.startswith("touchpoint_consumer_lag{")}
        if len(lag) == _consumed_partitions(worker) or time.monotonic() > deadline:
            break
        time.sleep(1)
        metrics = _samples(_get(worker, "/metrics")[1].decode())
    assert len(lag) == _consumed_partitions(worker) and set(lag.values()) == {0.0}


def test_health_says_ready(worker: Worker) -> None:
    status, body = _get(worker, "/health")
    assert (status, json.loads(body)) == (200, {"ready": True, "tables_recovered": True,
                                                "rebalancing": False, "in_recovery": False})


def test_the_page_and_its_assets_are_served(worker: Worker) -> None:
    status, page = _get(worker, "/")
    assert status == 200 and b"Touchpoint" in page and b"plotly.min.js?v=" in page
    status, script = _get(worker, "/dashboard/static/plotly.min.js")
    assert status == 200 and b"plotly.js v" in script[:200]
    assert _get(worker, "/dashboard/static/app.py")[0] == 404


# --- several workers, one picture ------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_show_the_whole_group(worker_factory: WorkerFactory) -> None:
    first = worker_factory("clickhouse")
    same_group = {"TOUCHPOINT_TOPIC_PREFIX": first.settings.topic_prefix,
                  "TOUCHPOINT_APP_ID": first.settings.app_id,
                  "TOUCHPOINT_CLICKHOUSE_URL": first.env["TOUCHPOINT_CLICKHOUSE_URL"]}
    second = worker_factory("clickhouse", **same_group)
    run_id = f"pair-{uuid.uuid4().hex[:6]}"
    for channel, event in trouble(run_id, f"{run_id}-caller", T0):
        first.publisher.publish(channel, event)
    first.publisher.flush()

    def both_see_it() -> list[dict[str, Any]] | None:
        seen = [_data(w) for w in (first, second)]
        ok = all(d["kafka"]["members"] == 2 and any(
            s["customer_id"] == f"{run_id}-caller" for s in d["signals"]["feed"])
            and sum(r["lag"] for r in d["kafka"]["lag"]) == 0 for d in seen)
        return seen if ok else None

    one, two = _until("both dashboards show both workers and the signal", both_see_it)
    assert one["signals"]["counts"] == two["signals"]["counts"]
    assert one["waits"] == two["waits"]
    # Prometheus: each worker reports the lag of its own partitions; together, all of them.
    # A worker samples offsets once someone scrapes it, so its first answer may be empty.
    def lag_series() -> list[set[str]] | None:
        owned = []
        for w in (first, second):
            metrics = _samples(_get(w, "/metrics")[1].decode())
            owned.append({k for k in metrics if k.startswith("touchpoint_consumer_lag{")})
        return (owned if owned[0] and owned[1]
                and len(owned[0] | owned[1]) == _consumed_partitions(first) else None)

    owned = _until("both workers report the lag of their own partitions", lag_series,
                   timeout=30)
    assert not owned[0] & owned[1]


# --- in a browser -----------------------------------------------------------------------------

class _Stopped(Exception):
    pass


class Traffic:
    """The simulator publishing into a worker's topics from a thread, until stopped."""

    def __init__(self, settings: Any, *, rate: float, start_ms: int) -> None:
        self.publisher = Publisher.from_settings(settings)
        self.simulator = Simulator(seed=7, customers=800, start_ms=start_ms)
        self.rate = rate
        self.latest_ms = start_ms
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)

    def _send(self, sim: SimEvent) -> None:
        if self._stop.is_set():
            raise _Stopped
        self.publisher.publish(sim.channel, sim.event)
        occurred = parse_occurred_at(sim.event["occurred_at"])
        if isinstance(occurred, int):
            self.latest_ms = max(self.latest_ms, occurred)

    def _run(self) -> None:
        with contextlib.suppress(_Stopped):
            self.sent = run(self.simulator, self._send, rate=self.rate, duration=600)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.publisher.close()


def _page(driver: Any, script: str) -> Any:
    return driver.execute_script(script)


@pytest.mark.slow
def test_the_dashboard_in_a_browser(worker_factory: WorkerFactory, browser: Any) -> None:
    worker = worker_factory("chdb")
    # business hours (China), so stores are open and queues form
    start = int(datetime(2026, 11, 18, 1, 30, tzinfo=UTC).timestamp() * 1000)
    with Traffic(worker.settings, rate=50, start_ms=start) as traffic:
        _until("simulated events in the warehouse",
               lambda: worker.scalar("SELECT count() FROM touchpoint_events") > 200)
        browser.get(f"http://127.0.0.1:{worker.settings.web_port}/")
        # the page asks for the API token before it shows any figure
        _until("the token form", lambda: _page(
            browser, "return !document.getElementById('token-form').hidden"))
        _page(browser, f"document.getElementById('token-input').value = "
                       f"{json.dumps(worker.settings.api_token)};"
                       "document.getElementById('token-form').requestSubmit();")
        _until("the first update of the page",
               lambda: _page(browser, "return window.touchpointDashboard.updates") >= 1)

        def figures() -> dict[str, Any]:
            return _page(browser, """
                const d = window.touchpointDashboard;
                return {updates: d.updates, generated: d.last.generated_at,
                        points: document.getElementById('chart-rates').data[0].x.length,
                        stored: document.getElementById('kpi-stored').textContent,
                        rate: document.getElementById('kpi-rate').textContent,
                        signals: document.getElementById('kpi-signals').textContent,
                        status: document.getElementById('status').textContent};""")

        before = figures()
        time.sleep(8)
        after = figures()
        # live: several updates in 8 s (one a second when the machine keeps up), new samples
        # on the chart, and the figures moved with the traffic
        assert after["updates"] - before["updates"] >= 4, (before, after)
        assert after["generated"] > before["generated"]
        assert after["points"] > before["points"], (before, after)
        assert (after["stored"], after["rate"]) != (before["stored"], before["rate"])
        assert float(after["rate"].replace(",", "")) > 0
    # The traffic stops (on a busy machine the worker may be behind it, and the planted
    # events queue behind every earlier one on the identity stage's single partition).

    # a customer in trouble, at the newest event time: the feed shows the signal on top
    run_id = f"live-{uuid.uuid4().hex[:6]}"
    customer = f"{run_id}-caller"
    with Publisher.from_settings(worker.settings) as planter:
        for channel, event in trouble(run_id, customer, traffic.latest_ms + 1000):
            planter.publish(channel, event)
    selector = f'#feed li[data-customer="{customer}"]'
    item = _until("the planted signal in the feed", lambda: _page(
        browser, f"const li = document.querySelector('{selector}');"
                 "return li && {cls: li.className, text: li.textContent};"), timeout=180)
    assert _page(browser, "return document.querySelector('#feed li').dataset.customer") \
        == customer  # the newest
    assert item["cls"] in ("watch", "high", "critical")
    assert "unresolved" in item["text"] and customer in item["text"]
    # the filter finds it among the rest
    _page(browser, f"const f = document.getElementById('feed-filter'); f.value = "
                   f"'{customer}'; f.dispatchEvent(new Event('input'));")
    shown = _page(browser, "return [...document.querySelectorAll('#feed li')]"
                           ".map(li => li.dataset.customer);")
    assert shown == [customer]
    _page(browser, "const f = document.getElementById('feed-filter'); f.value = '';"
                   "f.dispatchEvent(new Event('input'));")

    time.sleep(2)  # one more round of figures, then the picture: the whole page
    ARTIFACTS.mkdir(exist_ok=True)
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    picture = browser.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"],
                 "scale": 1}})
    shot = ARTIFACTS / "dashboard.png"
    shot.write_bytes(base64.b64decode(picture["data"]))
    assert shot.stat().st_size > 50_000
    errors = [e for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert errors == []
    assert _page(browser, "return document.getElementById('errors').textContent") == ""


# --- the Grafana dashboard's warehouse panels ------------------------------------------------

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / \
    "touchpoint.json"


def _grafana_sql() -> list[tuple[str, str]]:
    panels = json.loads(GRAFANA.read_text())["panels"]
    return [(p["title"], t["rawSql"]) for p in panels for t in p.get("targets", [])
            if "rawSql" in t]


def test_the_grafana_warehouse_panels_run_on_this_backend(
        worker: Worker, figures: tuple[str, dict[str, Any]]) -> None:
    run_id = figures[0]
    answers = {}
    for title, sql in _grafana_sql():
        # the plugin's macro, as it expands it for a day around the planted events
        sql = sql.replace("$__timeFilter(ingested_at)", "ingested_at >= toDateTime(0)")
        sql = sql.replace("$__timeFilter(rejected_at)", "rejected_at >= toDateTime(0)")
        assert "$__" not in sql, title
        answers[title] = worker.query(sql).dicts()
    assert len(answers) == 7
    waits = {r["place"]: (r["waits"], r["long_waits"])
             for r in answers["Queue and wait times, last hour of event time"]}
    assert waits == {"call center": (3, 1), "S-A": (2, 1), "S-B": (1, 0)}
    losing = answers["Touchpoints losing most points today"]
    assert [(r["touchpoint"], r["negative"]) for r in losing][:2] == [
        ("callcenter · call_ended", 3), ("store · served", 2)]
    campaigns = answers["Today's campaign response"]
    assert [(r["campaign_id"], r["sent"], r["opened"], r["clicked"]) for r in campaigns] == [
        (f"{run_id}-CMP", 3, 2, 1)]
    assert {r["customer_id"] for r in answers["Open complaint signals, newest first"]} == {
        f"{run_id}-{who}" for who in ("caller", "s1-c", "s4-c", "fb")}
    assert answers["Dead letters by reason (dashboard time range)"][0]["reason_code"] == \
        "undecodable"
