"""What the collector makes of a request body: events, and a verdict for each.

A body is one JSON object: a batch ``{"events": [...]}`` or a single event, each event
naming its ``channel``; ``write_key`` may travel in the body for senders that cannot set
headers (``navigator.sendBeacon``). Every event is checked and encoded by
:func:`touchpoint.publish.encode_event`, the publisher's own code path, whose checks are
ingest's (``schemas/contract.py``): an event the collector accepts is one ingest
accepts, and a refusal carries the code and reason ingest would give. Nothing here does
I/O, so the rules are tested without a server or a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from touchpoint.exceptions import ContractError
from touchpoint.publish import encode_event
from touchpoint.schemas.contract import CHANNELS, Rejection, parse_json
from touchpoint.streams.topics import TopicNames

__all__ = ["MAX_BATCH_EVENTS", "MAX_BODY_BYTES", "Batch", "Record", "Verdict", "judge",
           "read_body"]

MAX_BATCH_EVENTS: Final = 500
"""Most events in one request: a retry of a failed batch stays cheap, an answer small."""
MAX_BODY_BYTES: Final = 2 * 1024 * 1024
"""Largest request body, in bytes: room for a full batch of ordinary events (~1 KB each)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A parsed body: its events (anything; each is judged alone) and a key if it held one."""

    events: list[Any]
    write_key: str | None


@dataclass(frozen=True, slots=True)
class Record:
    """An accepted event, ready for Kafka."""

    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Verdict:
    """One event's answer: a record to send, or why it was refused."""

    index: int
    event_id: str | None
    channel: str | None
    record: Record | None = None
    refusal: Rejection | None = None

    def as_json(self) -> dict[str, Any]:
        """The event's entry in the response."""
        answer: dict[str, Any] = {"index": self.index, "event_id": self.event_id}
        if self.refusal is None:
            answer["status"] = "accepted"
        else:
            answer.update(status="refused", code=self.refusal.code, reason=self.refusal.reason)
        return answer


def read_body(body: bytes) -> Batch | Rejection:
    """The events of a request body, or why the body as a whole cannot be read."""
    document = parse_json(body, max_bytes=MAX_BODY_BYTES)
    if isinstance(document, Rejection):
        return document
    if not isinstance(document, dict):
        return Rejection("bad_json", "the body must be one JSON object: "
                                     '{"events": [...]} or a single event')
    write_key = document.get("write_key")
    if write_key is not None and not isinstance(write_key, str):
        return Rejection("bad_json", "write_key must be a string")
    if "events" in document:
        events = document["events"]
        if not isinstance(events, list):
            return Rejection("bad_json", "events must be a JSON array of event objects")
        if not events:
            return Rejection("bad_json", "events is empty: send at least one event")
        if len(events) > MAX_BATCH_EVENTS:
            return Rejection("too_large", f"{len(events):,} events in one request, more than "
                                          f"{MAX_BATCH_EVENTS}: split the batch")
        return Batch(events, write_key)
    event = {k: v for k, v in document.items() if k != "write_key"}
    return Batch([event], write_key)


def judge(events: list[Any], *, channels: tuple[str, ...], region: str,
          topics: TopicNames) -> list[Verdict]:
    """A verdict for each event, in order; ``channels`` are the ones the key may send."""
    return [_judge(index, event, channels, region, topics) for index, event in enumerate(events)]


def _judge(index: int, event: Any, channels: tuple[str, ...], region: str,
           topics: TopicNames) -> Verdict:
    if not isinstance(event, Mapping):
        return Verdict(index, None, None, refusal=Rejection(
            "bad_event", "an event must be a JSON object of field names to values, "
                         f"not {_json_type(event)}"))
    raw_id = event.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) else None
    channel = event.get("channel")
    if not isinstance(channel, str) or channel not in CHANNELS:
        shown = ("missing" if channel is None else f"{channel[:40]!r}"
                 if isinstance(channel, str) else f"{_json_type(channel)}, not a name")
        return Verdict(index, event_id, None, refusal=Rejection(
            "unknown_channel", f"channel is {shown}: name the event's channel, one of "
                               f"{', '.join(CHANNELS)}"))
    if channel not in channels:
        return Verdict(index, event_id, channel, refusal=Rejection(
            "channel_not_allowed", f"this write key may not send {channel} events (it may "
                                   f"send {', '.join(channels)})"))
    fields = {k: v for k, v in event.items() if k != "channel"}
    try:
        value, key = encode_event(channel, fields, region=region)
    except ContractError as exc:
        return Verdict(index, event_id, channel, refusal=Rejection(exc.code, str(exc)))
    return Verdict(index, event_id, channel, record=Record(topics.channel(channel), key, value))


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
