"""Dead letters as operators see them: read from the dead-letter topic, selected, corrected.

The dead-letter topic is the one place that keeps a rejected record's original bytes
(the warehouse's ``deadletter`` table keeps where, why and a fingerprint, never the
payload, which may hold e-mail and phone in clear). So ``touchpoint deadletters`` reads
the topic: :func:`read_dead_letters` streams it up to its end at the start of the read,
:class:`Selection` picks dead letters by id, reason, channel and rejection time (plain
comparisons in Python, no SQL to inject into), :func:`original_event` turns one back
into the event its producer meant, and :func:`correct` applies the corrections given on
the command line. Re-sending them, once, is :mod:`touchpoint.replay`.

A dead letter is named by its source position, ``<topic>/<partition>/<offset>`` of the
rejected record (:attr:`DeadLetter.id`), as the ``deadletter`` table is keyed: two
copies of one dead letter (a worker that rejected a record twice across a restart)
are the same dead letter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from touchpoint.exceptions import DecodeError, ServiceError
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import Rejection, parse_json_event
from touchpoint.settings import Settings
from touchpoint.streams.rules.normalize import PAYLOAD_BYTES_HEADER
from touchpoint.streams.topics import TopicNames

__all__ = ["STALL_SECONDS", "DeadLetter", "Selection", "correct", "merge_patch", "original_event",
           "parse_id", "parse_patch", "parse_set", "read_dead_letters", "read_topic"]

log = logging.getLogger(__name__)

#: Longest a topic read waits for records it knows are there before it gives up.
STALL_SECONDS = 30


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, decoded (``schemas/avro/deadletter``)."""

    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: int | None
    reason_code: str
    reason: str
    rejected_at: int
    worker: str
    payload: bytes
    key: bytes | None
    #: Only the start of the original value was kept (it was longer than a dead letter holds).
    cut: bool = False

    @property
    def id(self) -> str:
        """``<source topic>/<partition>/<offset>``: the rejected record's position."""
        return f"{self.source_topic}/{self.source_partition}/{self.source_offset}"

    @classmethod
    def from_record(cls, record: Mapping[str, Any], headers: Iterable[tuple[str, bytes]] = ()
                    ) -> DeadLetter:
        """A dead letter from its decoded Avro record and the Kafka record's headers."""
        return cls(
            source_topic=record["source_topic"], source_partition=record["source_partition"],
            source_offset=record["source_offset"], source_timestamp=record["source_timestamp"],
            reason_code=record["reason_code"], reason=record["reason"],
            rejected_at=record["rejected_at"], worker=record["worker"],
            payload=record["payload"], key=record["key"],
            cut=any(name == PAYLOAD_BYTES_HEADER for name, _ in headers or ()),
        )


def parse_id(text: str) -> str:
    """A dead letter's id as typed (``touchpoints.web/3/1200``), checked; else ValueError."""
    topic, _, rest = text.strip().partition("/")
    partition, _, offset = rest.partition("/")
    if not (topic and partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{text!r} is not a dead letter's id: write TOPIC/PARTITION/OFFSET, "
                         "e.g. touchpoints.web/3/1200 (`touchpoint deadletters list` shows them)")
    return f"{topic}/{int(partition)}/{int(offset)}"


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command works on; every given filter must match.

    ``channels`` are channel names (``web``), matched against the source topic through
    ``topics``; times are the rejection time, epoch milliseconds, ``until`` exclusive.
    """

    topics: TopicNames = field(default_factory=TopicNames)
    ids: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` is selected."""
        if self.ids and letter.id not in self.ids:
            return False
        if self.reasons and letter.reason_code not in self.reasons:
            return False
        if self.channels and self.topics.inbound.get(letter.source_topic) not in self.channels:
            return False
        if self.since_ms is not None and letter.rejected_at < self.since_ms:
            return False
        return self.until_ms is None or letter.rejected_at < self.until_ms


def read_topic(settings: Settings, topic: str, *, start: Mapping[int, int] | None = None,
               group: str | None = None) -> Iterator[Any]:
    """Every record of ``topic`` up to its end when called, partition after partition.

    ``start`` gives the first offset to read per partition (the beginning when absent;
    a partition missing from a given ``start`` is not read). Nothing is committed.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers,
                                 enable_auto_commit=False, group_id=group)
    except KafkaError as exc:
        raise ServiceError(f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}): start it "
                           "with `touchpoint services start` or set TOUCHPOINT_KAFKA_BOOTSTRAP"
                           ) from exc
    try:
        found = consumer.partitions_for_topic(topic)
        if not found:
            return
        numbers = sorted(found if start is None else set(found) & set(start))
        partitions = [TopicPartition(topic, p) for p in numbers]
        ends = consumer.end_offsets(partitions)
        for tp in partitions:
            first = (start or {}).get(tp.partition)
            consumer.assign([tp])
            if first is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, first)
            # read until the end seen at the start: records arriving meanwhile wait for next time
            moved = time.monotonic()
            while consumer.position(tp) < ends[tp]:
                batch = consumer.poll(timeout_ms=1000).get(tp, [])
                if batch:
                    moved = time.monotonic()
                elif time.monotonic() - moved > STALL_SECONDS:
                    raise ServiceError(f"Kafka gave no records of {topic} partition "
                                       f"{tp.partition} for {STALL_SECONDS} s (at offset "
                                       f"{consumer.position(tp)} of {ends[tp]}): is it up?")
                for message in batch:
                    if message.offset >= ends[tp]:
                        break
                    yield message
    except KafkaError as exc:
        raise ServiceError(f"cannot read {topic} from Kafka: {exc}") from exc
    finally:
        consumer.close()


def read_dead_letters(settings: Settings, selection: Selection | None = None
                      ) -> Iterator[DeadLetter]:
    """The dead letters on the dead-letter topic now that ``selection`` picks, each once.

    A record of the topic that is not a dead letter (another producer's) is skipped with
    a warning: it cannot be shown or replayed, and it must not stop the others.
    """
    selection = selection or Selection(TopicNames.of(settings))
    codec = codec_for("deadletter")
    seen: set[str] = set()
    for message in read_topic(settings, TopicNames.of(settings).deadletter):
        try:
            letter = DeadLetter.from_record(codec.decode(message.value), message.headers)
        except DecodeError as exc:
            log.warning("record %d/%d of the dead-letter topic is not a dead letter: %s",
                        message.partition, message.offset, exc)
            continue
        if letter.id in seen or not selection.matches(letter):
            continue
        seen.add(letter.id)
        yield letter


def original_event(letter: DeadLetter, topics: TopicNames) -> tuple[str, dict[str, Any]
                                                                     ] | Rejection:
    """The channel and the event a dead letter's producer sent, or why there is none.

    An Avro record is decoded as its channel's schema reads it; a value that is not Avro
    but a JSON object (a producer that sent the JSON form) is taken as that event, which
    the replay then encodes properly. Not replayable: a row the warehouse refused (its
    payload is the row, not the event), a record from a topic that is not an inbound
    one, and a payload that was cut.
    """
    channel = topics.inbound.get(letter.source_topic)
    if letter.reason_code == "warehouse_refused":
        return Rejection("not_replayable", "a row the warehouse refused, not an inbound record: "
                                           "publish the corrected event again instead")
    if channel is None:
        return Rejection("not_replayable", f"{letter.source_topic} is not an inbound topic of "
                                           f"this configuration (prefix {topics.prefix!r})")
    if letter.cut:
        return Rejection("not_replayable", "only the start of the record was kept (it was too "
                                           "large): publish the event again from its source")
    try:
        return channel, codec_for(channel).decode(letter.payload, packed=False)
    except DecodeError as exc:
        if letter.payload.lstrip()[:1] == b"{":
            event = parse_json_event(letter.payload)
            if not isinstance(event, Rejection):
                return channel, event
        return Rejection(exc.code, str(exc))


def parse_set(text: str) -> tuple[str, str]:
    """``FIELD=VALUE`` of ``--set`` (``attributes.KEY=VALUE`` for an attribute); else ValueError."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--set {text!r}: write FIELD=VALUE, e.g. --set store_id=SH-01 "
                         "(a number or null: --patch '{\"score\": 4}')")
    return name, value


def merge_patch(target: Any, patch: Any) -> Any:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386): null deletes."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def correct(event: Mapping[str, Any], *, sets: Iterable[tuple[str, str]] = (),
            patch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The event with the corrections: ``patch`` (a JSON merge patch) first, then ``sets``.

    A set value is a string, as most fields are; ``attributes.KEY`` sets one attribute.
    The result is checked by the contract when it is encoded, so a correction that makes
    things worse is refused there, with the reason.
    """
    # nulls are fields left out: the merge patch and the check read them so
    fixed: dict[str, Any] = merge_patch({k: v for k, v in event.items() if v is not None},
                                        dict(patch or {}))
    for name, value in sets:
        if name.startswith("attributes."):
            attributes = fixed.get("attributes")
            fixed["attributes"] = {**(attributes if isinstance(attributes, dict) else {}),
                                   name.removeprefix("attributes."): value}
        else:
            fixed[name] = value
    return fixed


def parse_patch(text: str) -> dict[str, Any]:
    """A JSON merge patch given on the command line: one JSON object; else ValueError."""
    try:
        patch = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--patch is not JSON ({exc}): give one object, e.g. "
                         "'{\"score\": 4, \"comment\": null}'") from None
    if not isinstance(patch, dict):
        raise ValueError("--patch must be one JSON object, e.g. '{\"score\": 4}'")
    return patch
