"""Replaying dead letters into their inbound topic, each one once, even across a crash.

"Once" is remembered in the replay log, the compacted topic
``touchpoints.deadletter-replays`` keyed by the dead letter's id (its source topic,
partition and offset, :attr:`DeadLetter.id`). It lives in Kafka, next to what it
protects, so replaying needs no warehouse (the embedded one may be held by a worker).

Each batch goes in three steps, each acknowledged by the broker before the next:

1. an intent per dead letter (``sending``, with the inbound topic's end offsets now);
2. the corrected records, each with the header ``touchpoint-replay-of: <id>``;
3. a ``replayed`` entry per dead letter, with where its record landed.

A crash between 2 and 3 leaves intents without outcome. The next replay settles each
one from the inbound topic itself: it reads the topic from the intent's offsets for a
record carrying the dead letter's id; found, the dead letter counts as replayed, not
found, it was never sent and is sent now. Only a record still in flight from a process
that died can slip past that read; the pipeline stores an event once by its
``event_id`` anyway, so even then it is not stored twice
(docs/design/deadletters-and-backfill.md).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from touchpoint.deadletters import DeadLetter, correct, original_event, read_topic
from touchpoint.exceptions import ContractError, PublishError, ServiceError
from touchpoint.publish import encode_event
from touchpoint.schemas.contract import Rejection
from touchpoint.settings import Settings
from touchpoint.streams.topics import TopicNames

__all__ = ["REPLAY_HEADER", "Refusal", "ReplayLog", "ReplayReport", "replay"]

#: Header of a replayed record: the id of the dead letter it replays.
REPLAY_HEADER = "touchpoint-replay-of"
SENDING, REPLAYED = "sending", "replayed"


@dataclass(frozen=True)
class Refusal:
    """A selected dead letter that was not replayed, and why."""

    id: str
    code: str
    reason: str


@dataclass
class ReplayReport:
    """What a replay did: replayed per topic, refused per reason, skipped as done before."""

    replayed: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    refused: list[Refusal] = field(default_factory=list)
    #: Where each replayed dead letter went: id -> ``topic/partition/offset``.
    landed: dict[str, str] = field(default_factory=dict)

    @property
    def reasons(self) -> Counter[str]:
        """Refusals per reason code."""
        return Counter(r.code for r in self.refused)


class ReplayLog:
    """The replay log: the latest entry per dead letter id, read whole, written through.

    ``producer`` is a kafka-python producer (or one that behaves alike: ``send`` with
    key, value, headers, returning a future, and ``flush``).
    """

    def __init__(self, topic: str, producer: Any, entries: Mapping[str, dict[str, Any]]
                 ) -> None:
        self.topic = topic
        self._producer = producer
        self.entries: dict[str, dict[str, Any]] = dict(entries)

    @classmethod
    def load(cls, settings: Settings, producer: Any) -> ReplayLog:
        """The log as it is on its topic now."""
        topic = TopicNames.of(settings).replays
        entries: dict[str, dict[str, Any]] = {}
        for message in read_topic(settings, topic):
            if message.key is None:
                continue
            try:
                entry = json.loads(message.value)
                if not isinstance(entry, dict) or entry.get("state") not in (SENDING, REPLAYED):
                    raise ValueError("no state of ours")
            except (TypeError, ValueError) as exc:
                # skipping it could replay that dead letter twice: stop and say where
                raise ServiceError(
                    f"record {message.partition}/{message.offset} of {topic} is not a replay "
                    f"log entry ({exc!r}): only touchpoint deadletters replay writes there"
                ) from None
            entries[message.key.decode(errors="replace")] = entry
        return cls(topic, producer, entries)

    def state(self, letter_id: str) -> str | None:
        """``sending``, ``replayed`` or None (never tried)."""
        entry = self.entries.get(letter_id)
        return None if entry is None else str(entry["state"])

    def write(self, letter_id: str, entry: dict[str, Any]) -> None:
        """Send one entry (see :meth:`flush`)."""
        self.entries[letter_id] = entry
        self._producer.send(self.topic, key=letter_id.encode(),
                            value=json.dumps(entry, sort_keys=True).encode())

    def flush(self) -> None:
        """Wait until every entry written is acknowledged."""
        _flush(self._producer)


def _flush(producer: Any) -> None:
    from kafka.errors import KafkaError

    try:
        producer.flush(timeout=60)
    except KafkaError as exc:
        raise PublishError(f"Kafka did not acknowledge the replay: {exc}") from exc


@dataclass(frozen=True)
class _Ready:
    letter: DeadLetter
    topic: str
    key: bytes
    value: bytes
    event_id: str


def replay(settings: Settings, letters: Iterable[DeadLetter], *, producer: Any,
           log: ReplayLog, sets: Iterable[tuple[str, str]] = (),
           patch: Mapping[str, Any] | None = None, dry_run: bool = False,
           end_offsets: Callable[[str], dict[int, int]] | None = None,
           find_sent: Callable[[str, Mapping[int, int]], dict[str, str]] | None = None,
           batch: int = 500, clock: Callable[[], float] = time.time) -> ReplayReport:
    """Replay ``letters`` (corrected with ``sets`` and ``patch``) to their inbound topics.

    A dead letter already replayed is skipped; one whose event the contract still
    refuses, or that cannot be replayed at all, is refused with the reason; nothing is
    sent for either. ``dry_run`` checks and counts without sending or logging.
    ``end_offsets`` and ``find_sent`` reach the inbound topics (Kafka unless given):
    the end offset per partition, and the ids of replayed records from given offsets.
    """
    topics = TopicNames.of(settings)
    ends = end_offsets or (lambda topic: _end_offsets(settings, topic))
    find = find_sent or (lambda topic, start: _find_sent(settings, topic, start))
    report = ReplayReport()
    if not dry_run:
        _settle(log, report, find)
    sets = list(sets)
    pending: list[_Ready] = []
    taken: set[str] = set()
    for letter in letters:
        if log.state(letter.id) == REPLAYED or letter.id in report.landed or letter.id in taken:
            report.skipped += 1
            continue
        taken.add(letter.id)
        ready = _prepare(letter, topics, settings.phone_region, sets, patch)
        if isinstance(ready, Refusal):
            report.refused.append(ready)
            continue
        if dry_run:
            report.replayed[ready.topic] += 1
            continue
        pending.append(ready)
        if len(pending) >= batch:
            _send(pending, producer, log, report, ends, clock)
            pending = []
    if pending:
        _send(pending, producer, log, report, ends, clock)
    return report


def _prepare(letter: DeadLetter, topics: TopicNames, region: str,
             sets: list[tuple[str, str]], patch: Mapping[str, Any] | None) -> _Ready | Refusal:
    found = original_event(letter, topics)
    if isinstance(found, Rejection):
        return Refusal(letter.id, found.code, found.reason)
    channel, event = found
    fixed = correct(event, sets=sets, patch=patch)
    try:
        value, key = encode_event(channel, fixed, region=region)
    except ContractError as exc:
        return Refusal(letter.id, exc.code, str(exc))
    return _Ready(letter, topics.channel(channel), key, value, str(fixed.get("event_id")))


def _settle(log: ReplayLog, report: ReplayReport,
            find: Callable[[str, Mapping[int, int]], dict[str, str]]) -> None:
    """Intents left by a run that stopped between sending and logging: done, or not sent."""
    unsettled = {i: e for i, e in log.entries.items() if e["state"] == SENDING}
    by_topic: dict[str, dict[int, int]] = {}
    for entry in unsettled.values():
        start = by_topic.setdefault(entry["topic"], {})
        for partition, offset in entry["from"].items():
            start[int(partition)] = min(offset, start.get(int(partition), offset))
    for topic, start in by_topic.items():
        for letter_id, where in find(topic, start).items():
            intent = unsettled.get(letter_id)
            if intent is not None and intent["topic"] == topic:
                _, partition, offset = where.rsplit("/", 2)
                log.write(letter_id, {"state": REPLAYED, "topic": topic,
                                      "partition": int(partition), "offset": int(offset),
                                      "event_id": intent.get("event_id"), "settled": True})
                report.landed[letter_id] = where
    log.flush()


def _send(pending: list[_Ready], producer: Any, log: ReplayLog, report: ReplayReport,
          ends: Callable[[str], dict[int, int]], clock: Callable[[], float]) -> None:
    from kafka.errors import KafkaError

    offsets = {topic: ends(topic) for topic in {r.topic for r in pending}}
    now = int(clock() * 1000)
    for ready in pending:
        log.write(ready.letter.id, {"state": SENDING, "topic": ready.topic,
                                    "from": {str(p): o for p, o in offsets[ready.topic].items()},
                                    "event_id": ready.event_id, "at": now})
    log.flush()
    futures = []
    for ready in pending:
        try:
            futures.append(producer.send(ready.topic, key=ready.key, value=ready.value,
                                         headers=[(REPLAY_HEADER, ready.letter.id.encode())]))
        except KafkaError as exc:
            raise PublishError(f"Kafka did not take a replayed record: {exc}") from exc
    _flush(producer)
    for ready, future in zip(pending, futures, strict=True):
        try:
            sent = future.get(timeout=60)
        except KafkaError as exc:
            raise PublishError(f"Kafka did not take a replayed record: {exc}") from exc
        log.write(ready.letter.id, {"state": REPLAYED, "topic": ready.topic,
                                    "partition": sent.partition, "offset": sent.offset,
                                    "event_id": ready.event_id, "at": now})
        report.replayed[ready.topic] += 1
        report.landed[ready.letter.id] = f"{ready.topic}/{sent.partition}/{sent.offset}"
    log.flush()


def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def _find_sent(settings: Settings, topic: str, start: Mapping[int, int]) -> dict[str, str]:
    """Replayed records on ``topic`` from ``start``: dead letter id -> where it landed."""
    found: dict[str, str] = {}
    for message in read_topic(settings, topic, start=start):
        for name, value in message.headers or ():
            if name == REPLAY_HEADER:
                found[value.decode()] = f"{topic}/{message.partition}/{message.offset}"
    return found
