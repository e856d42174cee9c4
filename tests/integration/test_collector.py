"""The HTTP collector against a real broker and a real worker: what it accepts is stored once.

Each test runs ``touchpoint collect`` as a subprocess in front of the worker's topics,
with write keys made by the ``touchpoint keys`` command.
"""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import Worker, WorkerFactory, free_port

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000


@dataclass
class Collector:
    """A ``touchpoint collect`` subprocess."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int = 1, timeout: float = 60, *, connected: bool = True) -> None:
        """Start ``workers`` processes; with ``connected``, until each has reached Kafka.

        /health answers before a process's producer has connected, and a process that
        has not yet rightly answers 503: the tests that expect 200 wait for every one.
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchpoint.cli", "collect", "--workers", str(workers)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"collector exited at start:\n{self.log()}", pytrace=False)
            try:
                healthy = self.request("GET", "/health")[0] == 200
            except OSError:
                healthy = False
            if healthy and (not connected or
                            self.log().count("collector connected to Kafka") >= workers):
                return
            time.sleep(0.2)
        pytest.fail(f"collector did not answer within {timeout}s:\n{self.log()}", pytrace=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None, key: str | None = None
                ) -> tuple[int, Any, bytes]:
        """Status, headers (names case-insensitive) and body of one request."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def post(self, body: Any, key: str) -> tuple[int, dict[str, Any]]:
        status, _, raw = self.request("POST", "/v1/events", body, key)
        return status, json.loads(raw)

    def keys(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "touchpoint.cli", "keys", *args],
                              env=self.env, capture_output=True, text=True, timeout=60,
                              check=True)


def make_collector(env: dict[str, str], folder: Path, **overrides: str) -> Collector:
    port = free_port()
    env = {**env, "TOUCHPOINT_COLLECT_PORT": str(port),
           "TOUCHPOINT_COLLECT_KEYS": str(folder / "collect_keys.json"), **overrides}
    return Collector(env, port, folder / f"collector-{port}.log")


@pytest.fixture(scope="module")
def worker(worker_factory: WorkerFactory) -> Worker:
    """One worker (embedded warehouse) behind every collector of the module."""
    return worker_factory("chdb")


@pytest.fixture
def collector(worker: Worker, tmp_path: Path) -> Iterator[Collector]:
    found = make_collector(worker.env, tmp_path)
    found.start()
    yield found
    found.stop()


def secret_of(created: subprocess.CompletedProcess[str]) -> str:
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"tpk_[0-9a-f]{12}_\S+", lines[0]), created.stdout
    return lines[0]


def web(event_id: str, customer: str, **fields: Any) -> dict[str, Any]:
    return {"channel": "web", "event_id": event_id, "type": "page_view",
            "occurred_at": T0 + 1000 * len(event_id), "customer_id": customer, **fields}


def test_a_retried_batch_is_stored_and_counted_once(worker: Worker,
                                                    collector: Collector) -> None:
    key = secret_of(collector.keys("create", "shop", "-c", "web"))
    tag = uuid.uuid4().hex[:8]
    customer = f"C-{tag}"
    batch = [web(f"{tag}-{i}", customer) for i in range(8)]
    batch.append(web(f"{tag}-buy", customer, type="purchase", amount=100.0, currency="CNY"))
    batch.append(web(f"{tag}-bad", customer, email="not-an-email-address"))
    ingested_before = (worker.status() or {})["ingested"].get("web", 0)

    first = collector.post({"events": batch}, key)
    retry = collector.post({"events": batch}, key)  # the client did not see the first answer
    assert first == retry
    assert first[0] == 200
    assert (first[1]["accepted"], first[1]["refused"]) == (9, 1)
    assert first[1]["events"][9] == {
        "index": 9, "event_id": f"{tag}-bad", "status": "refused", "code": "bad_field",
        "reason": "email is not an e-mail address (name@domain)"}
    # One customer's events share a key, so a partition, in order: once this one counts,
    # both copies before it have been through the pipeline.
    marker = collector.post(web(f"{tag}-last", customer), key)
    assert (marker[0], marker[1]["accepted"]) == (200, 1)

    worker.wait_for(f"SELECT max(contacts_web) FROM customer_profiles "
                    f"WHERE customer_id = '{customer}'", 10)
    profile = worker.query(f"SELECT orders, total_spend FROM customer_profiles "
                           f"WHERE customer_id = '{customer}'").rows
    assert profile == [(1, 100.0)]
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{tag}-%'", 10)
    assert worker.scalar(f"SELECT count() FROM touchpoint_events "
                         f"WHERE event_id = '{tag}-bad'") == 0
    # Both copies did reach ingest: the duplicates were real, and collapsed downstream.
    assert (worker.status() or {})["ingested"]["web"] - ingested_before == 9 + 9 + 1


def test_kafka_unreachable_is_503_with_retry_after(worker: Worker, tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    collector = make_collector(worker.env, tmp_path, TOUCHPOINT_KAFKA_BOOTSTRAP=nowhere)
    key = secret_of(collector.keys("create", "shop", "-c", "web"))
    collector.start(connected=False)  # it never will
    try:
        status, headers, body = collector.request(
            "POST", "/v1/events", {"events": [web("e1", "C-1")]}, key)
        assert (status, headers["Retry-After"], json.loads(body)["error"]["code"]) == (
            503, "5", "kafka_unavailable")
        assert collector.request("GET", "/ready")[0] == 503
        assert collector.request("GET", "/health")[0] == 200
    finally:
        collector.stop()
    assert key not in collector.log()


def test_keys_are_shown_once_and_a_revoked_key_stops_working(collector: Collector) -> None:
    key = secret_of(collector.keys("create", "callvendor", "-c", "callcenter"))
    key_id = key.split("_")[1]
    listed = collector.keys("list").stdout
    assert key_id in listed and "callvendor" in listed and key not in listed
    call = {"channel": "callcenter", "event_id": f"c-{uuid.uuid4().hex[:8]}",
            "type": "call_ended", "occurred_at": T0, "phone": "+86 138 0013 8000"}
    assert collector.post(call, key)[0] == 200
    assert collector.keys("revoke", key_id).stdout == f"revoked write key {key_id} (callvendor)\n"
    deadline = time.monotonic() + 10  # collectors look at the file every 2 s
    while collector.post(call, key)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    status, answer = collector.post(call, key)
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    assert key not in collector.log()


def test_several_processes_serve_one_port_and_one_metrics_view(worker: Worker,
                                                              tmp_path: Path) -> None:
    collector = make_collector(worker.env, tmp_path)
    key = secret_of(collector.keys("create", "shop", "-c", "web"))
    collector.start(workers=2)
    try:
        tag = uuid.uuid4().hex[:8]
        for i in range(20):
            status, answer = collector.post({"events": [web(f"{tag}-{i}-a", f"C-{tag}"),
                                                        web(f"{tag}-{i}-b", f"C-{tag}")]}, key)
            assert (status, answer["accepted"]) == (200, 2)
        # whichever process answers the scrape, it reports every process's events
        for _ in range(5):
            metrics = collector.request("GET", "/metrics")[2].decode()
            assert 'touchpoint_collect_events_accepted_total{channel="web"} 40.0' in metrics
        assert collector.log().count("collector connected to Kafka") == 2  # one per process
    finally:
        collector.stop()


# --- the browser tracker ----------------------------------------------------------------------

SHOP_PAGE = """<!doctype html><html><head><title>shop</title>
<script src="http://127.0.0.1:{collector}/v1/tracker.js" data-key="{key}"
        data-customer-id="{customer}"></script></head><body>
<form data-tp-search onsubmit="return false"><input name="q" value="red shoes">
  <button id="search">search</button></form>
<button id="cart" data-tp-event="add_to_cart" data-tp-amount="59.5" data-tp-currency="CNY"
        data-tp-attr-sku="SKU-1">add to cart</button>
<button id="checkout" data-tp-event="checkout_started">checkout</button>
<a id="leave" href="/bye.html">leave</a>
</body></html>"""
# Its page view waits a minute to be batched: only sendBeacon, as the page goes, sends it.
BYE_PAGE = """<!doctype html><html><head><title>bye</title>
<script src="http://127.0.0.1:{collector}/v1/tracker.js" data-key="{key}"
        data-batch-ms="60000"></script></head><body>bye</body></html>"""


@contextmanager
def shop_site(pages: dict[str, str]) -> Iterator[int]:
    """A web shop's pages on a port of their own (another origin than the collector)."""

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            self.send_response(200 if page else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write((page or "").encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_the_tracker_sends_a_browser_session_to_the_warehouse_and_the_profile(
        worker: Worker, collector: Collector, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    tag = uuid.uuid4().hex[:8]
    customer = f"C-{tag}"
    pages: dict[str, str] = {}
    with shop_site(pages) as port:
        key = secret_of(collector.keys("create", "shop", "-c", "web",
                                       "--origin", f"http://127.0.0.1:{port}"))
        values = {"collector": collector.port, "key": key, "customer": customer}
        pages["/shop.html"] = SHOP_PAGE.format(**values)
        pages["/bye.html"] = BYE_PAGE.format(**values)
        browser.get(f"http://127.0.0.1:{port}/shop.html")
        for element in ("cart", "checkout", "search", "leave"):
            browser.find_element(By.ID, element).click()
        assert browser.title == "bye"
        cookie = browser.get_cookie("tp_aid")
        browser.get("about:blank")  # the bye page goes: its page view leaves by beacon

        # shop: page view, cart, checkout, search, all with the customer id and the cookie;
        # bye: a page view with the cookie alone, the customer's once the cookie is linked
        worker.wait_for(f"SELECT count() FROM touchpoint_events "
                        f"WHERE customer_id = '{customer}'", 5, timeout=90)
    assert cookie is not None and re.fullmatch(r"[0-9a-f-]{32,36}", cookie["value"])
    rows = worker.query(f"SELECT type, amount FROM touchpoint_events "
                        f"WHERE customer_id = '{customer}' ORDER BY occurred_at").rows
    assert rows == [("page_view", None), ("add_to_cart", 59.5), ("checkout_started", None),
                    ("search", None), ("page_view", None)]
    worker.wait_for(f"SELECT max(contacts_web) FROM customer_profiles "
                    f"WHERE customer_id = '{customer}'", 5, timeout=60)
