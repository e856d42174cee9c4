"""Micro-benchmark of the single-object Avro codec on web events (not a test).

Encodes N realistic web events with ``codec_for("web")``, checked and unchecked, decodes
them back, and does the same with fastavro alone (the codec uses the schema's plan,
``schemas/binary.py``, where it can) and decodes with the reference ``avro`` package for
comparison. Prints events/s.

    .venv/bin/python bench/codec_bench.py [--events 200000]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import avro
import avro.io
import avro.schema
import fastavro

from touchpoint.schemas import HEADER_SIZE, codec_for
from touchpoint.schemas.registry import physical_schema

TYPES = ["page_view"] * 12 + ["ad_impression"] * 4 + [
    "ad_click", "search", "add_to_cart", "checkout_started", "purchase", "login", "error",
]


def web_events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = 1_795_313_700_000
    events = []
    for i in range(count):
        kind = rng.choice(TYPES)
        event: dict[str, Any] = {
            "event_id": f"web-{i:09d}",
            "type": kind,
            "occurred_at": start + i * 37,
            "anonymous_id": f"ck-{rng.randrange(50_000):06x}",
            "session_id": f"sess-{rng.randrange(200_000):07d}",
            "url": f"https://shop.example.com/p/{rng.randrange(10_000)}?utm_source=mail",
            "referrer": "https://www.example.org/search?q=shoes",
            "dwell_ms": rng.randrange(200, 120_000),
            "attributes": {"device": rng.choice(["ios", "android", "desktop"])},
        }
        if rng.random() < 0.4:
            event["customer_id"] = f"CRM-{rng.randrange(100_000):06d}"
        if kind.startswith("ad_"):
            event["ad_id"] = f"ad-{rng.randrange(500)}"
        if kind == "purchase":
            event["amount"] = round(rng.uniform(5, 800), 2)
            event["currency"] = "EUR"
        if kind == "error":
            event["error_code"] = rng.choice(["E500", "PAY_DECLINED", "TIMEOUT"])
        events.append(event)
    return events


def timed(label: str, count: int, work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    seconds = time.perf_counter() - began
    rate = count / seconds
    print(f"{label:<44} {rate:>12,.0f} events/s  ({seconds * 1e6 / count:6.1f} us/event)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to encode/decode")
    args = parser.parse_args()
    count: int = args.events

    codec = codec_for("web")
    events = web_events(count)
    print(
        f"{count:,} web events; Python {platform.python_version()}, fastavro "
        f"{fastavro.__version__}, avro {avro.__version__}"
    )

    encoded: list[bytes] = []
    timed("codec.encode (validate, then the plan)", count,
          lambda: encoded.extend(codec.encode(e) for e in events))
    print(f"{'':<44} {sum(map(len, encoded)) / count:>12.1f} bytes/event on average")

    # Decoded records are dropped as they come, as in a stream, so that garbage
    # collection of 200,000 live dicts does not count against the decoder.
    def codec_decode() -> None:
        decode = codec.decode
        for data in encoded:
            decode(data)

    timed("codec.decode (the schema's plan)", count, codec_decode)
    assert codec.decode(encoded[-1]) == codec.decode(codec.encode(events[-1]))

    schema = codec.latest.parsed
    records = [codec.decode(data) for data in encoded]  # every field, as ingest reads them

    def codec_unchecked() -> None:
        encode = codec.encode
        for record in records:
            encode(record, check=False)

    timed("codec.encode(check=False) (the plan)", count, codec_unchecked)

    def bare_encode() -> None:
        for record in records:
            out = io.BytesIO()
            fastavro.schemaless_writer(out, schema, record, disable_tuple_notation=True)

    timed("bare fastavro.schemaless_writer (no header)", count, bare_encode)

    def bare_decode() -> None:
        for data in encoded:
            fastavro.schemaless_reader(io.BytesIO(data[HEADER_SIZE:]), schema, None)

    timed("bare fastavro.schemaless_reader (no header)", count, bare_decode)

    reader = avro.io.DatumReader(
        avro.schema.parse(json.dumps(physical_schema(codec.latest.schema)))
    )
    fingerprint = codec.fingerprint

    def avro_decode() -> None:
        for data in encoded:
            assert data[2:HEADER_SIZE] == fingerprint
            reader.read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))

    timed("avro package DatumReader (reference)", count, avro_decode)


if __name__ == "__main__":
    main()
