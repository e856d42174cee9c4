"""Malformed, oversized and out-of-range records thrown at a real worker's ingest path.

A seeded generator (``TOUCHPOINT_FUZZ_SEED`` repeats a run) mixes valid events with
records a careless producer or an attacker would send, publishes their raw bytes to the
channel topics, and requires of the worker: every record has exactly one outcome (stored,
or a dead letter with a reason), each record known to be bad is a dead letter with the
expected reason code, the valid records around them are all stored, nothing is stored
outside its column's range, and the worker is still healthy and ingesting afterwards.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from kafka import KafkaProducer

from touchpoint.schemas.codec import MARKER, PACKED_MARKER, codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS, RANGES, TEXT_LIMITS

from .conftest import KAFKA, Worker

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("TOUCHPOINT_FUZZ_SEED", "20261205"))
RECORDS = 240
T0 = 1_795_000_000_000


@dataclass
class Sent:
    """One published record: what it was, where it went, what must become of it."""

    kind: str
    channel: str
    event_id: str | None
    expect: str | None  # the dead-letter reason code it must get; None: valid; "?": either
    topic: str = ""
    partition: int = -1
    offset: int = -1


def _valid(rng: random.Random, channel: str, n: int, run: str) -> dict[str, Any]:
    # a random part, so that a flipped bit cannot turn one record's id into another's
    event_id = f"{run}-{n}-{rng.getrandbits(64):016x}"
    event: dict[str, Any] = {"event_id": event_id, "occurred_at": T0 + n * 1000,
                             "customer_id": f"{run}-c{rng.randrange(20)}", "attributes": {}}
    if channel == "web":
        event.update(type="page_view", url="https://shop.example/p/1", dwell_ms=1200)
    elif channel == "store":
        event.update(type="purchase", store_id="SH-01", amount=99.5, currency="CNY", items=2)
    elif channel == "callcenter":
        event.update(type="call_ended", queue_wait_s=40, talk_s=300, transfers=1,
                     outcome="resolved", notes="问题已解决")
    elif channel == "campaign":
        event.update(type="opened", campaign_id="cmp-1", medium="email")
    else:
        event.update(type="complaint", score=1, comment="waited far too long")
    return event


def _record(channel: str, event: dict[str, Any]) -> dict[str, Any]:
    names = (*COMMON_FIELDS, *CHANNELS[channel].fields)
    return {name: event.get(name) for name in names} | {"attributes": event["attributes"]}


def _avro(channel: str, event: dict[str, Any], *, widen: bool = False) -> bytes:
    """Avro single-object bytes of ``event``, written without any check.

    ``widen`` writes every ``int`` field as a ``long`` (the same varint on the wire), so
    values no 32-bit field holds reach the worker under the real schema's fingerprint.
    """
    codec = codec_for(channel)
    schema = copy.deepcopy(codec.latest.schema)
    if widen:
        for field in schema["fields"]:
            field["type"] = json.loads(json.dumps(field["type"]).replace('"int"', '"long"'))
    buf = BytesIO()
    buf.write(MARKER + codec.fingerprint)
    schemaless_writer(buf, parse_schema(schema), _record(channel, event))
    return buf.getvalue()


def _cases(rng: random.Random, n: int, run: str, channel: str
           ) -> tuple[str, str | None, str | None, bytes]:
    """(kind, event_id, expected reason code, bytes) of the n-th record."""
    event = _valid(rng, channel, n, run)
    good = _avro(channel, event)
    mutations: list[tuple[str, str | None, Callable[[], bytes]]] = [
        ("random_bytes", "undecodable", lambda: bytes(rng.randrange(256)
                                                      for _ in range(rng.randrange(1, 400)))),
        ("empty", "undecodable", lambda: b""),
        ("json", "undecodable", lambda: json.dumps(event).encode()),
        ("truncated", "undecodable", lambda: good[:rng.randrange(11, len(good) - 1)]),
        ("bit_flip", "?", lambda: _flip(rng, good)),
        ("unknown_fingerprint", "unknown_schema",
         lambda: MARKER + bytes(rng.randrange(256) for _ in range(8)) + good[10:]),
        ("packed_form", "undecodable",
         lambda: PACKED_MARKER + codec_for(channel).fingerprint + json.dumps(
             event | {"transfers": 40000}).encode()),
        ("oversized_nul_text", "too_large", lambda: _avro(
            channel, event | _text_field(channel, "\x00" * 300_000))),
        ("oversized_record", "too_large", lambda: _avro(
            channel, event | _text_field(channel, "长" * 300_000))),  # under Kafka's 1 MB
        ("text_too_long", "too_long", lambda: _avro(
            channel, event | _text_field(channel, "x" * 20_000))),
        ("bad_email", "bad_field", lambda: _avro(channel, event | {"email": "call me maybe"})),
        ("bad_phone", "bad_field", lambda: _avro(channel, event | {"phone": "call me maybe"})),
        ("long_id", "too_long", lambda: _avro(channel, event | {"customer_id": "c" * 5000})),
        ("many_attributes", "too_long", lambda: _avro(
            channel, event | {"attributes": {f"k{i}": "v" for i in range(5000)}})),
    ]
    mutations += [
        (f"out_of_range_{name}", "out_of_range",
         lambda name=name, value=value: _avro(channel, event | {name: value}, widen=True))
        for name, value in _out_of_range(channel)
    ]
    if rng.random() < 0.4:
        return "valid", event["event_id"], None, good
    kind, expect, make = rng.choice(mutations)
    return kind, event["event_id"], expect, make()


def _flip(rng: random.Random, data: bytes) -> bytes:
    flipped = bytearray(data)
    at = rng.randrange(10, len(flipped))
    flipped[at] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def _text_field(channel: str, text: str) -> dict[str, str]:
    field = {"web": "url", "callcenter": "notes", "feedback": "comment"}.get(channel)
    return {field: text} if field else {"customer_id": text}


def _out_of_range(channel: str) -> list[tuple[str, Any]]:
    values = {"transfers": 40_000, "score": 100_000, "queue_wait_s": 2**40,
              "dwell_ms": 2**63 - 1, "items": -5, "talk_s": -1, "amount": -268.0}
    return [(name, value) for name, value in values.items() if name in CHANNELS[channel].fields]


def _publish(worker: Worker, records: list[tuple[Sent, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=[KAFKA], acks="all",
                             max_request_size=4 * 1024 * 1024)
    try:
        futures = [(sent, producer.send(worker.topics.channel(sent.channel), value=value,
                                        key=sent.event_id.encode() if sent.event_id else None))
                   for sent, value in records]
        producer.flush(60)
        for sent, future in futures:
            meta = future.get(timeout=60)
            sent.topic, sent.partition, sent.offset = meta.topic, meta.partition, meta.offset
    finally:
        producer.close()


def test_the_worker_dead_letters_every_bad_record_and_stores_the_rest(worker: Worker) -> None:
    rng = random.Random(SEED)
    run = f"fuzz{SEED}-{worker.backend}"
    records = []
    for n in range(RECORDS):
        channel = rng.choice(list(CHANNELS))
        kind, event_id, expect, value = _cases(rng, n, run, channel)
        records.append((Sent(kind, channel, event_id, expect), value))
    _publish(worker, records)
    sent = [s for s, _ in records]
    where = " OR ".join(f"(source_topic = '{s.topic}' AND source_partition = {s.partition} "
                        f"AND source_offset = {s.offset})" for s in sent)
    worker.wait_for(
        f"SELECT (SELECT count() FROM deadletter WHERE {where}) + "
        f"(SELECT count() FROM touchpoint_events WHERE {where})", len(sent), timeout=180)

    dead = {(r["source_topic"], r["source_partition"], r["source_offset"]): r["reason_code"]
            for r in worker.query(f"SELECT source_topic, source_partition, source_offset, "
                                  f"reason_code FROM deadletter WHERE {where}").dicts()}
    stored = {(r["source_topic"], r["source_partition"], r["source_offset"])
              for r in worker.query(f"SELECT source_topic, source_partition, source_offset "
                                    f"FROM touchpoint_events WHERE {where}").dicts()}
    wrong = []
    for s in sent:
        at = (s.topic, s.partition, s.offset)
        outcomes = ([dead[at]] if at in dead else []) + (["stored"] if at in stored else [])
        if len(outcomes) == 1 and (s.expect == "?" or outcomes[0] == (s.expect or "stored")):
            continue
        wrong.append((s.kind, s.channel, s.expect or "stored", outcomes or "lost"))
    assert not wrong, f"seed {SEED}: {len(wrong)} records with the wrong outcome: {wrong[:10]}"
    kinds = {s.kind for s in sent}
    assert len(kinds) >= 15, f"seed {SEED} tried too few kinds of record: {sorted(kinds)}"

    # nothing stored outside its column's range, however the record got in
    bounds = worker.query(
        "SELECT " + ", ".join(f"min({f}), max({f})" for f in RANGES) + ", "
        + ", ".join(f"max(lengthUTF8(ifNull({f}, '')))" for f in TEXT_LIMITS)
        + f" FROM touchpoint_events WHERE event_id LIKE '{run}-%'").rows[0]
    for i, (name, limit) in enumerate(RANGES.items()):
        low, high = bounds[2 * i], bounds[2 * i + 1]
        assert low is None or limit.low <= low <= high <= limit.high, (name, low, high)
    for i, (name, longest) in enumerate(TEXT_LIMITS.items()):
        assert bounds[2 * len(RANGES) + i] <= longest, name

    # still up, still ingesting: events published after all that are stored too
    assert worker.process is not None and worker.process.poll() is None
    after = [(Sent("valid", "store", f"{run}-after-{n}", None),
              _avro("store", _valid(rng, "store", RECORDS + n, run)
                    | {"event_id": f"{run}-after-{n}"})) for n in range(10)]
    _publish(worker, after)
    worker.wait_for(f"SELECT count() FROM touchpoint_events WHERE event_id LIKE '{run}-after-%'",
                    10, timeout=120)
    status, body = worker.get("/health", token=None)
    assert status == 200, body
