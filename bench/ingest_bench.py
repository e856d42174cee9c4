"""Micro-benchmark of ingest's per-record work (not a test): decode, check, normalize, hash.

Encodes N store purchases, each with its own phone, and times ``Ingestor.process`` over
them; the phone-parse cache is emptied before every run, so only repeats within an event
are saved. Prints microseconds per event for each run and their median.

    .venv/bin/python bench/ingest_bench.py [--events 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from touchpoint.schemas import contract
from touchpoint.schemas.codec import codec_for
from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS
from touchpoint.streams.rules.normalize import Ingestor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="events per run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs")
    args = parser.parse_args()
    ingestor = Ingestor(pii_salt="bench-salt-0123456789", phone_region="CN", worker="bench",
                        sentiment=lambda text: None)
    codec = codec_for("store")
    values = []
    for i in range(args.events):
        event = {"event_id": f"e{i}", "type": "purchase",
                 "occurred_at": "2026-11-22T10:15:00+08:00", "phone": f"+86 138 {i:04d} 8000",
                 "store_id": "SH-01", "amount": 5.0}
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS["store"].fields)}
        record["attributes"] = {}
        values.append(codec.encode(record))
    runs = []
    for _ in range(args.runs):
        contract._phone_digits.cache_clear()
        began = time.perf_counter()
        for offset, value in enumerate(values):
            ingestor.process("store", None, value, topic="bench", partition=0, offset=offset,
                             timestamp_ms=None)
        runs.append((time.perf_counter() - began) / len(values) * 1e6)
    print(f"ingest: {statistics.median(runs):.1f} µs/event median of {len(runs)} runs "
          f"({', '.join(f'{r:.1f}' for r in runs)}), {args.events:,} store events with a phone")


if __name__ == "__main__":
    main()
