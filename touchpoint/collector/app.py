"""The collector's HTTP surface (Starlette): ``POST /v1/events``, the tracker, health, metrics.

A request to ``POST /v1/events`` passes, in this order: the body's encoding and size
(415, 413), the write key (header ``Authorization: Bearer``, or ``write_key`` in the
body for ``sendBeacon``; 401), the browser origin the key allows (403), the key's rate
(429), then a verdict per event (``batch.judge``, ingest's checks) and Kafka's
acknowledgement of the accepted ones (503 while Kafka is unreachable). The answer, 200,
lists every event as accepted or refused with ingest's code and reason. The browser
tracker (``static/tracker.js``) is served at ``GET /v1/tracker.js``. The process keeps
nothing a request needs from an earlier one except the rate buckets, so any number of
them can stand behind a load balancer. Reasoning: docs/design/collector.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from touchpoint.collector.batch import MAX_BATCH_EVENTS, MAX_BODY_BYTES, judge, read_body
from touchpoint.collector.keys import KeyFile, WriteKey
from touchpoint.collector.limits import RateLimiter
from touchpoint.collector.metrics import CollectorMetrics
from touchpoint.collector.sender import RETRY_AFTER_SECONDS, KafkaSender
from touchpoint.exceptions import KafkaUnavailable
from touchpoint.schemas.contract import CHANNELS, Rejection
from touchpoint.settings import Settings, load_settings
from touchpoint.streams.topics import TopicNames

__all__ = ["BODY_TIMEOUT_SECONDS", "create_app", "from_environment"]

log = logging.getLogger(__name__)

#: Longest a request's body may take to arrive.
BODY_TIMEOUT_SECONDS: Final = 30
_BODY_TYPES: Final = frozenset({"application/json", "text/plain", ""})
_PREFLIGHT_MAX_AGE: Final = "600"


class _Refused(Exception):
    """A request refused whole: its status, code, reason and extra headers."""

    def __init__(self, status: int, code: str, reason: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.headers = dict(headers or {})


class Collector:
    """The views, and what they share: keys, rate buckets, the Kafka sender, metrics."""

    def __init__(self, settings: Settings, *, sender: Any, keys: KeyFile) -> None:
        self.region = settings.phone_region
        self.topics = TopicNames.of(settings)
        self.sender = sender
        self.keys = keys
        self.limiter = RateLimiter(rate=settings.collect_rate_per_key,
                                   capacity=max(settings.collect_rate_per_key, MAX_BATCH_EVENTS))
        self.metrics = CollectorMetrics()
        self._outage_logged = float("-inf")
        self._outage_answers = 0
        tracker = resources.files("touchpoint.collector").joinpath("static/tracker.js")
        self._tracker = tracker.read_bytes()

    async def events(self, request: Request) -> Response:
        """``POST /v1/events``: check, send and answer a batch (or one event)."""
        started = time.perf_counter()
        origin = request.headers.get("origin")
        try:
            response = await self._collect(request, origin)
        except _Refused as refused:
            response = JSONResponse(
                {"error": {"code": refused.code, "reason": refused.reason}},
                status_code=refused.status, headers=refused.headers)
        # a page may read every answer its key earned, a 429 or 503 too, so it can wait
        key: WriteKey | None = getattr(request.state, "key", None)
        if key is not None and origin is not None and key.allows_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        self.metrics.requests.labels(str(response.status_code)).inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return response

    async def _collect(self, request: Request, origin: str | None) -> Response:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _Refused(415, "unsupported_encoding",
                           f"Content-Encoding {encoding[:40]!r} is not taken: send the body "
                           "uncompressed")
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media not in _BODY_TYPES:
            raise _Refused(415, "unsupported_media_type",
                           f"Content-Type {media[:60]!r}: send application/json (or "
                           "text/plain, as sendBeacon does)")
        header_key = _bearer(request.headers.get("authorization"))
        key = None
        if header_key is not None:  # refused before the body is read
            key = self._authenticate(header_key)
        body = await _read_capped(request, MAX_BODY_BYTES)
        batch = read_body(body)
        if isinstance(batch, Rejection):
            raise _Refused(413 if batch.code == "too_large" else 400, batch.code, batch.reason)
        if key is None:
            key = self._authenticate(batch.write_key)
        request.state.key = key
        if not key.allows_origin(origin):
            raise _Refused(403, "origin_not_allowed",
                           f"this write key is not for pages of {str(origin)[:100]!r}: add the "
                           "origin to the key (touchpoint keys create --origin)")
        wait = self.limiter.take(key.key_id, len(batch.events))
        if wait:
            raise _Refused(429, "rate_limited",
                           f"write key {key.key_id} is over its rate of "
                           f"{self.limiter.rate:,.0f} events a second: send again later",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        verdicts = judge(batch.events, channels=key.channels, region=self.region,
                         topics=self.topics)
        records = [v.record for v in verdicts if v.record is not None]
        try:
            await self.sender.send(records)
        except KafkaUnavailable as exc:
            self._note_outage(key, exc)
            raise _Refused(503, "kafka_unavailable",
                           "the events could not be stored now; send the same batch again "
                           "(with the same event_ids) later",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        for verdict in verdicts:
            if verdict.refusal is None:
                self.metrics.accepted.labels(verdict.channel).inc()
            else:
                self.metrics.refused.labels(verdict.refusal.code).inc()
        answer = {"accepted": len(records), "refused": len(verdicts) - len(records),
                  "events": [v.as_json() for v in verdicts]}
        return Response(json.dumps(answer, ensure_ascii=False), media_type="application/json")

    def _note_outage(self, key: WriteKey, exc: Exception) -> None:
        # once per 10 s at most: an outage under load would otherwise log every request
        self._outage_answers += 1
        now = time.monotonic()
        if now - self._outage_logged >= 10:
            log.warning("answered 503 to %d request(s), the last of write key %s: %s",
                        self._outage_answers, key.key_id, exc)
            self._outage_logged, self._outage_answers = now, 0

    def _authenticate(self, secret: str | None) -> WriteKey:
        key = self.keys.authenticate(secret)
        if key is None:
            raise _Refused(401, "unauthorized",
                           "a valid write key is required: send `Authorization: Bearer <key>` "
                           "or \"write_key\" in the body",
                           headers={"WWW-Authenticate": 'Bearer realm="touchpoint-collect"'})
        return key

    async def preflight(self, request: Request) -> Response:
        """``OPTIONS /v1/events``: a browser asks whether its page may post events."""
        origin = request.headers.get("origin")
        # The preflight carries no key, so any origin some key allows may ask; the request
        # itself is then held to its own key's origins.
        if origin is None or origin.lower() not in self.keys.origins():
            return Response(status_code=403, headers={"Vary": "Origin"})
        return Response(status_code=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
            "Vary": "Origin",
        })

    async def tracker(self, request: Request) -> Response:
        """``GET /v1/tracker.js``: the browser tracker (docs/design/collector.md)."""
        return Response(self._tracker, media_type="application/javascript", headers={
            "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})

    async def health(self, request: Request) -> Response:
        """``GET /health``: the process answers."""
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """``GET /ready``: 200 when Kafka answers and has every channel topic, else 503."""
        if await self.sender.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": "Kafka is not reachable or lacks "
                             "the channel topics"}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def metrics_view(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text format."""
        return Response(self.metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        # isdigit() alone takes "²", which int() refuses
        if not (declared.strip().isascii() and declared.strip().isdigit()):
            raise _Refused(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise _Refused(413, "too_large", f"body of {int(declared):,} bytes, more than the "
                                             f"{limit:,} a request may take: split the batch")
    chunks: list[bytes] = []
    size = 0
    try:
        # a client that trickles its body must not hold a connection for long
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:  # no or a false Content-Length: stop reading at the limit
                    raise _Refused(413, "too_large", f"body of more than {limit:,} bytes, the "
                                                     "most a request may take: split the batch")
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(408, "body_timeout", f"the body took more than {BODY_TIMEOUT_SECONDS} "
                                            "s to arrive: send it again") from None
    return b"".join(chunks)


def create_app(settings: Settings | None = None, *, sender: Any = None,
               keys: KeyFile | None = None) -> Starlette:
    """The collector app; settings from the environment unless given (uvicorn's factory).

    ``sender`` replaces the Kafka sender (unit tests); ``keys`` the key file.
    """
    settings = settings or load_settings()
    topics = TopicNames.of(settings)
    if sender is None:
        sender = KafkaSender(bootstrap_servers=settings.kafka_servers,
                             topics=[topics.channel(c) for c in CHANNELS])
    collector = Collector(settings, sender=sender,
                          keys=keys or KeyFile(settings.collect_keys_path))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.sender.start()
        try:
            yield
        finally:
            await collector.sender.stop()

    routes = [
        Route("/v1/events", collector.events, methods=["POST"]),
        Route("/v1/events", collector.preflight, methods=["OPTIONS"]),
        Route("/v1/tracker.js", collector.tracker, methods=["GET"]),
        Route("/health", collector.health, methods=["GET"]),
        Route("/ready", collector.ready, methods=["GET"]),
        Route("/metrics", collector.metrics_view, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.collector = collector
    return app


def from_environment() -> Starlette:
    """The app as ``touchpoint collect`` serves it in each process: settings, logging, app."""
    from touchpoint.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
