"""Publishing for channel systems: check, encode, key and send touchpoint events.

    from touchpoint.publish import Publisher
    with Publisher.from_settings(load_settings()) as publisher:
        publisher.publish("web", {"event_id": "e1", "type": "page_view", ...})

Every event is checked against the contract before it is sent, so a channel system
learns of a mistake at once instead of from the dead-letter topic. Events are keyed by
the customer's strongest identifier, so one customer's events keep their order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from touchpoint.exceptions import ContractError, EncodeError, PublishError
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import (
    CHANNELS,
    COMMON_FIELDS,
    MAX_JSON_LINE_BYTES,
    Rejection,
    check,
    check_size,
    parse_json_event,
    routing_key,
)
from touchpoint.settings import Settings
from touchpoint.streams.topics import TopicNames, ensure_topics

__all__ = ["LineError", "PublishReport", "Publisher", "encode_event", "publish_lines",
           "read_lines"]

log = logging.getLogger(__name__)


class Publisher:
    """Sends touchpoint events to the channel topics (kafka-python producer)."""

    def __init__(self, *, bootstrap_servers: list[str], topics: TopicNames | None = None,
                 phone_region: str = "CN", producer_config: Mapping[str, Any] | None = None,
                 producer: Any = None) -> None:
        """Connect to ``bootstrap_servers``; ``producer`` is a ready one to use instead."""
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topics = topics or TopicNames()
        self.phone_region = phone_region
        self._failures: list[str] = []
        if producer is not None:
            self._producer = producer
            return
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
        :class:`ContractError` when the event breaks the contract (see :func:`encode_event`).
        """
        return encode_event(channel, event, region=self.phone_region)

    def send_raw(self, channel: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are to a channel's topic, unchecked (bridges and tests)."""
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(self.topics.channel(channel), key=key or None,
                                         value=value)
        except KafkaError as exc:  # e.g. no metadata for the topic within max_block_ms
            raise PublishError(f"Kafka did not take the event: {exc}") from exc
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


def encode_event(channel: str, event: Mapping[str, Any], *, region: str) -> tuple[bytes, bytes]:
    """Check and encode one event as it is published: (value, message key).

    The checks are ingest's, in ingest's order: the size of the encoded record
    (``check_size``), then the contract (``check``, strict: unknown fields are refused),
    so a sender gets the answer ingest would give. Raises :class:`ContractError` with the
    rejection's code and reason; nothing else for a bad event.
    """
    spec = CHANNELS.get(channel)
    if spec is None or not isinstance(event, Mapping):
        problem = check(channel, event, region=region, strict=True)
        assert problem is not None  # check() refuses both
        raise ContractError(problem.reason, problem.code)
    record = {name: event.get(name) for name in (*COMMON_FIELDS, *spec.fields)}
    attributes = event.get("attributes")
    record["attributes"] = dict(attributes) if isinstance(attributes, Mapping) else (
        attributes if attributes is not None else {})
    try:
        value = codec_for(channel).encode(record)
    except EncodeError as exc:
        _refuse(check(channel, event, region=region, strict=True))
        # The contract took it and the schema did not: they disagree, a bug of ours.
        raise EncodeError(f"an event the contract accepts does not fit the '{channel}' "
                          f"schema: {exc}", field=exc.field) from exc
    _refuse(check_size(len(value)) or check(channel, event, region=region, strict=True))
    return value, routing_key(event, region)


def _refuse(problem: Rejection | None) -> None:
    if problem is not None:
        raise ContractError(problem.reason, problem.code)


def read_lines(stream: IO[bytes], *, limit: int = MAX_JSON_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a binary stream, none longer than ``limit + 1`` bytes.

    A longer line is cut there and the rest of it skipped unread into memory, so one
    huge line costs no more than ``limit``; its verdict is ``too_large``.
    """
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith(b"\n"):
                pass
        yield line


def publish_lines(publisher: Publisher | None, channel: str, lines: Iterable[str | bytes], *,
                  region: str | None = None,
                  progress: Callable[[int], None] | None = None) -> PublishReport:
    """Publish JSON Lines; every line gets a verdict, each bad one its number and reason.

    With ``publisher=None`` lines are only checked (a dry run), exactly as they would be
    published: give ``region``, the phone region (a publisher has its own). Lines may be
    text or UTF-8 bytes (see :func:`read_lines`). Nothing one line holds stops the others:
    whatever goes wrong with a line is that line's refusal. Only :class:`PublishError`
    (Kafka did not take the events) ends the run.
    """
    if channel not in CHANNELS:
        raise ContractError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
    if publisher is not None:
        region = publisher.phone_region
    elif region is None:
        raise ValueError("a dry run (publisher=None) needs region=, the phone region "
                         "(settings.phone_region)")
    report = PublishReport()
    for number, line in enumerate(lines, start=1):
        if progress is not None:
            progress(number)
        if not line.strip():
            continue
        try:
            event = parse_json_event(line)
            if isinstance(event, Rejection):
                report.reject(number, event.code, event.reason)
                continue
            if publisher is None:
                encode_event(channel, event, region=region)
            else:
                publisher.publish(channel, event)
        except ContractError as exc:
            report.reject(number, exc.code, str(exc))
            continue
        except PublishError:
            raise
        except Exception as exc:  # a bug must not cost the other lines; this one is named
            log.debug("line %d could not be checked", number, exc_info=True)
            report.reject(number, "internal_error",
                          f"could not be checked ({type(exc).__name__}): please report it")
            continue
        report.accepted += 1
    return report
