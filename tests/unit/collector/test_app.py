"""The collector's HTTP answers (touchpoint/collector/app.py), in memory with a kept sender."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from touchpoint.collector.app import create_app
from touchpoint.collector.batch import MAX_BODY_BYTES
from touchpoint.collector.keys import KeyFile
from touchpoint.collector.limits import RateLimiter
from touchpoint.publish import encode_event

from .conftest import SHOP, KeptSender

T0 = 1_795_000_000_000


def web(event_id: str = "e1", **fields: Any) -> dict[str, Any]:
    return {"channel": "web", "event_id": event_id, "type": "page_view", "occurred_at": T0,
            "anonymous_id": "ck-1", **fields}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(client: TestClient, body: Any, key: str | None = None, **headers: str) -> Any:
    sent = {**(auth(key) if key else {}), **headers}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent.setdefault("Content-Type", "application/json")
    return client.post("/v1/events", content=data, headers=sent)


def test_a_batch_is_answered_event_by_event_after_kafka_took_the_accepted(
        client: TestClient, sender: KeptSender, web_key: str) -> None:
    events = [web("e1"), web("e2", email="not-an-email-address"), web("e3", customer_id="C7")]
    response = post(client, {"events": events}, web_key)
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "refused": 1, "events": [
        {"index": 0, "event_id": "e1", "status": "accepted"},
        {"index": 1, "event_id": "e2", "status": "refused", "code": "bad_field",
         "reason": "email is not an e-mail address (name@domain)"},
        {"index": 2, "event_id": "e3", "status": "accepted"},
    ]}
    expected = [encode_event("web", {k: v for k, v in e.items() if k != "channel"}, region="CN")
                for e in (events[0], events[2])]
    assert [(r.topic, r.value, r.key) for r in sender.records] == [
        ("touchpoints.web", value, key) for value, key in expected]


def test_one_event_without_a_batch(client: TestClient, sender: KeptSender,
                                   server_key: str) -> None:
    call = {"channel": "callcenter", "event_id": "c1", "type": "call_ended",
            "occurred_at": "2026-11-22T10:15:00+08:00", "phone": "+86 138 0013 8000",
            "queue_wait_s": 300, "outcome": "unresolved"}
    response = post(client, call, server_key)
    assert (response.status_code, response.json()["events"]) == (
        200, [{"index": 0, "event_id": "c1", "status": "accepted"}])
    assert [r.topic for r in sender.records] == ["touchpoints.callcenter"]


def test_a_beacon_carries_its_key_in_a_text_plain_body(client: TestClient, sender: KeptSender,
                                                        web_key: str) -> None:
    response = post(client, {"write_key": web_key, "events": [web()]},
                    **{"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert len(sender.records) == 1


@pytest.mark.parametrize("key", [None, "tpk_000000000000_" + "x" * 43, "Basic dXNlcjpwYXNz"])
def test_no_valid_key_no_events(client: TestClient, sender: KeptSender, key: str | None) -> None:
    headers = {"Authorization": key} if key and key.startswith("Basic") else (
        auth(key) if key else {})
    response = post(client, {"events": [web()]}, **headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="touchpoint-collect"'
    assert sender.sent == []


def test_a_key_only_sends_its_channels(client: TestClient, sender: KeptSender,
                                       web_key: str) -> None:
    store = {**web(), "channel": "store", "type": "visit", "store_id": "S1"}
    response = post(client, {"events": [store]}, web_key)
    assert response.json()["events"][0]["code"] == "channel_not_allowed"
    assert sender.records == []


def test_a_browser_key_is_held_to_its_origins(client: TestClient, sender: KeptSender,
                                              web_key: str, server_key: str) -> None:
    evil = post(client, {"events": [web()]}, web_key, Origin="https://evil.example")
    assert evil.status_code == 403
    assert evil.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in evil.headers
    # a server-side key names no origin: no browser page may use it
    page = post(client, {"write_key": server_key, "events": [web()]}, Origin=SHOP)
    assert page.status_code == 403
    assert sender.sent == []
    preflight = client.options("/v1/events", headers={
        "Origin": SHOP, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 204
    assert (preflight.headers["Access-Control-Allow-Origin"],
            preflight.headers["Access-Control-Allow-Headers"]) == (
        SHOP, "Authorization, Content-Type")
    other = client.options("/v1/events", headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    assert "Access-Control-Allow-Origin" not in other.headers


def test_bodies_over_the_limit_get_413_declared_or_not(client: TestClient, sender: KeptSender,
                                                      web_key: str) -> None:
    declared = post(client, b"{" + b" " * MAX_BODY_BYTES + b"}", web_key)
    assert (declared.status_code, declared.json()["error"]["code"]) == (413, "too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: read until the limit, no further
        yield b'{"events": ['
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b" " * 65536

    streamed = client.post("/v1/events", content=chunks(), headers=auth(web_key))
    assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "too_large")
    many = post(client, {"events": [web(f"e{i}") for i in range(501)]}, web_key)
    assert (many.status_code, many.json()["error"]["reason"]) == (
        413, "501 events in one request, more than 500: split the batch")
    assert sender.sent == []


@pytest.mark.parametrize(("body", "headers", "status", "code"), [
    (b"\xff{}", {}, 400, "bad_json"),
    (b"[" * 100 + b"]" * 100, {}, 400, "too_deep"),
    (b'{"events": [1', {}, 400, "bad_json"),
    (b"{}", {"Content-Encoding": "gzip"}, 415, "unsupported_encoding"),
    (b"{}", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type"),
    (b"{}", {"Content-Length": "-1"}, 400, "bad_request"),
])
def test_unreadable_bodies_are_refused_whole(client: TestClient, sender: KeptSender,
                                             web_key: str, body: bytes, headers: dict[str, str],
                                             status: int, code: str) -> None:
    response = post(client, body, web_key, **headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert sender.sent == []


def test_over_the_rate_a_key_gets_429_and_its_events_are_not_sent(
        client: TestClient, sender: KeptSender, web_key: str, server_key: str) -> None:
    # The clock stands still: on a slow machine a third of a second between the two
    # requests refills 200 tokens, and the second would pass.
    collector = client.app.state.collector
    collector.limiter = RateLimiter(rate=collector.limiter.rate,
                                    capacity=collector.limiter.capacity, clock=lambda: 1000.0)
    batch = {"events": [web(f"e{i}") for i in range(400)]}
    assert post(client, batch, web_key).status_code == 200
    refused = post(client, batch, web_key)  # the bucket holds 600 (the rate, a second's worth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) == 1
    assert len(sender.records) == 400
    call = {"channel": "feedback", "event_id": "f1", "type": "complaint", "occurred_at": T0,
            "customer_id": "C1"}
    assert post(client, call, server_key).status_code == 200  # another key, its own bucket


def test_kafka_unreachable_is_503_with_retry_after_and_counts_nothing(
        client: TestClient, sender: KeptSender, web_key: str) -> None:
    sender.down = True
    response = post(client, {"events": [web()]}, web_key, Origin=SHOP)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Access-Control-Allow-Origin"] == SHOP  # the page may read it
    assert "send the same batch again" in response.json()["error"]["reason"]
    metrics = client.get("/metrics").text
    assert 'touchpoint_collect_requests_total{status="503"} 1.0' in metrics
    assert "touchpoint_collect_events_accepted_total{" not in metrics
    sender.down = False
    assert post(client, {"events": [web()]}, web_key).status_code == 200


def test_health_readiness_and_metrics(client: TestClient, sender: KeptSender,
                                      web_key: str) -> None:
    assert (client.get("/health").status_code, client.get("/ready").status_code) == (200, 200)
    sender.is_ready = False
    assert client.get("/ready").status_code == 503
    post(client, {"events": [web("e1"), web("e2", phone="call me maybe"),
                             web("e3", phone="12")]}, web_key)
    metrics = client.get("/metrics").text
    assert 'touchpoint_collect_events_accepted_total{channel="web"} 1.0' in metrics
    assert 'touchpoint_collect_events_refused_total{code="bad_field"} 2.0' in metrics
    assert 'touchpoint_collect_requests_total{status="200"} 1.0' in metrics
    assert "touchpoint_collect_request_seconds_count 1.0" in metrics


def test_secrets_and_pii_stay_out_of_the_logs(client: TestClient, sender: KeptSender,
                                              web_key: str, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    caplog.set_level(logging.DEBUG)
    post(client, {"events": [web(email="ann@example.com")]}, web_key)
    post(client, {"events": [web()]}, web_key[:-2] + "zz")
    sender.down = True
    post(client, {"events": [web(email="ann@example.com")]}, web_key)
    assert "answered 503 to 1 request(s), the last of write key" in caplog.text  # by id
    assert web_key not in caplog.text
    assert web_key[-20:] not in caplog.text
    assert "ann@example.com" not in caplog.text


def test_the_tracker_is_served_as_javascript(client: TestClient) -> None:
    response = client.get("/v1/tracker.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # what the tracker relies on: the key in the body, a text/plain body, sendBeacon
    assert all(part in response.text for part in (
        "write_key: key", '"Content-Type": "text/plain"', "navigator.sendBeacon"))


def test_a_content_length_of_a_non_ascii_digit_is_a_bad_request(
        settings: Any, sender: KeptSender, web_key: str) -> None:
    # "²" is a digit to str.isdigit() but not to int(). HTTP clients will not send it, so
    # the request goes to the app as a server would hand it over (ASGI, latin-1 bytes).
    app = create_app(settings, sender=sender, keys=KeyFile(settings.collect_keys_path))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events",
             "query_string": b"", "root_path": "", "server": ("collector.test", 80),
             "client": ("127.0.0.1", 5000),
             "headers": [(b"host", b"collector.test"), (b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {web_key}".encode()),
                         (b"content-length", b"\xb2")]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 400, body
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert sender.sent == []
