"""Publishing for channel systems: check, encode, key and send touchpoint events.

    from touchpoint.publish import Publisher
    with Publisher.from_settings(load_settings()) as publisher:
        publisher.publish("web", {"event_id": "e1", "type": "page_view", ...})

Every event is checked against the contract before it is sent, so a channel system
learns of a mistake at once instead of from the dead-letter topic. Events are keyed by
the customer's strongest identifier, so one customer's events keep their order.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from touchpoint.exceptions import ContractError, PublishError
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS, check, routing_key
from touchpoint.settings import Settings
from touchpoint.streams.topics import TopicNames, ensure_topics

__all__ = ["LineError", "PublishReport", "Publisher", "publish_lines"]

log = logging.getLogger(__name__)


class Publisher:
    """Sends touchpoint events to the channel topics (kafka-python producer)."""

    def __init__(self, *, bootstrap_servers: list[str], topics: TopicNames | None = None,
                 phone_region: str = "CN", producer_config: Mapping[str, Any] | None = None
                 ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topics = topics or TopicNames()
        self._region = phone_region
        self._codecs = {channel: codec_for(channel) for channel in CHANNELS}
        config: dict[str, Any] = {
            "acks": "all", "linger_ms": 20, "retries": 5,
            "max_in_flight_requests_per_connection": 1,  # retries keep per-key order
            "batch_size": 256 * 1024, "compression_type": None,
        }
        config.update(producer_config or {})
        try:
            self._producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
        except KafkaError as exc:
            raise PublishError(
                f"cannot reach Kafka at {','.join(bootstrap_servers)} ({exc}): start it with "
                "`touchpoint services start` or set TOUCHPOINT_KAFKA_BOOTSTRAP"
            ) from exc
        self._failures: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, create_topics: bool = True,
                      producer_config: Mapping[str, Any] | None = None) -> Publisher:
        """A publisher for the configured cluster; creates missing topics first."""
        if create_topics:
            ensure_topics(settings)
        return cls(bootstrap_servers=settings.kafka_servers,
                   topics=TopicNames(settings.topic_prefix), phone_region=settings.phone_region,
                   producer_config=producer_config)

    def publish(self, channel: str, event: Mapping[str, Any]) -> None:
        """Check, encode and send one event (asynchronously; see :meth:`flush`).

        Raises :class:`ContractError` when the event breaks the contract; nothing is sent.
        """
        value, key = self.encode(channel, event)
        self.send_raw(channel, value, key)

    def encode(self, channel: str, event: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """Check and encode one event as :meth:`publish` sends it: (value, message key).

        For senders that prepare records ahead and send them another way. Raises
        :class:`ContractError` when the event breaks the contract.
        """
        problem = check(channel, event, strict=True)
        if problem is not None:
            raise ContractError(problem.reason, problem.code)
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
        record["attributes"] = dict(event.get("attributes") or {})
        return self._codecs[channel].encode(record), routing_key(event, self._region)

    def send_raw(self, channel: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are to a channel's topic, unchecked (bridges and tests)."""
        future = self._producer.send(self.topics.channel(channel), key=key or None, value=value)
        future.add_errback(self._on_error)

    def _on_error(self, exc: BaseException) -> None:
        self._failures.append(str(exc))

    def flush(self, timeout: float | None = 60.0) -> None:
        """Wait until everything sent so far is acknowledged by Kafka.

        Raises :class:`PublishError` when any send failed since the last flush.
        """
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise PublishError(f"Kafka did not acknowledge every event: {exc}") from exc
        if self._failures:
            failures, self._failures = self._failures, []
            raise PublishError(
                f"{len(failures)} event(s) were not delivered; first error: {failures[0]}"
            )

    def close(self) -> None:
        """Flush and close."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LineError:
    """One input line that was not published, and why."""

    line: int
    code: str
    reason: str


@dataclass
class PublishReport:
    """What ``touchpoint publish`` did with its input."""

    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[LineError] = field(default_factory=list)

    def reject(self, line: int, code: str, reason: str) -> None:
        """Count one refused line."""
        self.rejected += 1
        self.reasons[code] += 1
        self.errors.append(LineError(line, code, reason))


def publish_lines(publisher: Publisher | None, channel: str, lines: Iterable[str], *,
                  progress: Callable[[int], None] | None = None) -> PublishReport:
    """Publish JSON Lines; each bad line is reported with its number and reason.

    With ``publisher=None`` lines are only checked (a dry run).
    """
    if channel not in CHANNELS:
        raise ContractError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
    report = PublishReport()
    for number, line in enumerate(lines, start=1):
        if progress is not None:
            progress(number)
        text = line.strip()
        if not text:
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            report.reject(number, "bad_json", f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(event, dict):
            report.reject(number, "bad_json", "a line must be one JSON object")
            continue
        if publisher is None:
            problem = check(channel, event, strict=True)
            if problem is not None:
                report.reject(number, problem.code, problem.reason)
                continue
        else:
            try:
                publisher.publish(channel, event)
            except ContractError as exc:
                report.reject(number, exc.code, str(exc))
                continue
        report.accepted += 1
    return report
