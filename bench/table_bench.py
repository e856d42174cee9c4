"""Micro-benchmark of the worker's table reads and writes on RocksDB (not a test).

The profiles stage reads and writes two changelog-backed tables for every record: the
customer's profile in ``touchpoint-profiles`` and the event's key in
``touchpoint-applied``. This times those operations on a real RocksDB table with the
worker's table class (``streams/runtime/changelog.py``), one key at a time
(``table.get``, ``table[key] = value``) and many at a time (``Table.get_many``,
``Table.set_many``, as the stage does per batch), in µs a key. The profiles are those
the profiles stage makes of the throughput benchmark's traffic; the changelog records
go to an in-memory stand-in for the producer, so no Kafka is needed.

    .venv/bin/python bench/table_bench.py [--keys 20000] [--batch 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
import rules_bench  # the sibling benchmark: the profiles stage as it sets it up
import throughput_bench as tb  # the sibling benchmark: its traffic
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import Message

from touchpoint.schemas.codec import codec_for
from touchpoint.settings import load_settings
from touchpoint.streams.rules import complaints
from touchpoint.streams.rules.identity import provisional_customer_id
from touchpoint.streams.rules.normalize import Accepted, Ingestor
from touchpoint.streams.rules.profile_batches import Record
from touchpoint.streams.runtime import changelog, memory
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.outbox import make_current


class _Producer:
    """What the changelog batches need of aiokafka's producer: builders, and a send."""

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 30, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(topic=topic, partition=partition, offset=0))
        return future


def profiles(count: int) -> list[dict[str, Any]]:
    """Profiles the profiles stage makes of the throughput benchmark's traffic."""
    settings = load_settings({"TOUCHPOINT_PII_SALT": "s" * 16,
                              "TOUCHPOINT_HOME": tempfile.mkdtemp(prefix="table-bench-")})
    backlog = tb.Backlog(count * 8, count, 1, tb.DEFAULT_START_MS, settings.phone_region,
                         hot_customer="", hot_events=0, memory=False)
    ingestor = Ingestor(pii_salt=settings.pii_salt, phone_region=settings.phone_region,
                        worker="bench")
    codec = codec_for("event")
    table: dict[str, Any] = {}
    stage = rules_bench.profile_stage(  # as the worker's: with the detector and attribution
        settings, complaints.Rules.load(settings.signal_rules or None), table)
    records = []
    for offset, (channel, value, key) in enumerate(backlog.records()):
        outcome = ingestor.process(channel, key, value, topic=channel, partition=0,
                                   offset=offset, timestamp_ms=None)
        if isinstance(outcome, Accepted):
            records.append(Record(provisional_customer_id(outcome.event), outcome.value, (),
                                  offset, codec.decode(outcome.value)))
    for at in range(0, len(records), 1000):
        stage.handle_batch(records[at:at + 1000])
    return list(table.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000, help="keys written and read")
    parser.add_argument("--batch", type=int, default=200, help="keys a get_many/set_many")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is printed")
    args = parser.parse_args()

    began = time.perf_counter()
    values = profiles(max(args.keys // 8, 100))  # the throughput mix: 8 events a customer
    sizes = sorted(len(orjson.dumps(v)) for v in values)
    print(f"table benchmark: {args.keys:,} keys, batches of {args.batch}, {args.runs} runs; "
          f"{len(values):,} profiles of the throughput traffic, {sizes[len(sizes) // 2]:,} "
          f"bytes median, {sizes[-1]:,} max (prepared in {time.perf_counter() - began:.1f} s)")

    memory.tune()  # the worker's garbage collector (a batch's profiles stay alive together)
    loop = asyncio.new_event_loop()
    folder = tempfile.mkdtemp(prefix="table-bench-")
    app = App("table-bench", broker="kafka://127.0.0.1:1", autodiscover=False,
              store="rocksdb://", datadir=folder, Table=changelog.Table, loop=loop)
    table = app.Table("profiles", partitions=2, key_type=str)
    app.producer._ensure_producer = lambda: _Producer()
    table.data.set_persisted_offset = lambda tp, offset: None
    app.consumer.ack_generation = 1  # as an assignment sets it
    n, size = args.keys, args.batch

    def profile(i: int) -> dict[str, Any]:
        return values[i % len(values)]

    def one(work: Callable[[int], Any]) -> float:
        began = time.perf_counter()
        for i in range(n):
            work(i)
        return (time.perf_counter() - began) / n * 1e6

    def many(work: Callable[[range], Any]) -> float:
        began = time.perf_counter()
        for at in range(0, n, size):
            work(range(at, min(at + size, n)))
        return (time.perf_counter() - began) / n * 1e6

    cases: dict[str, list[float]] = {}

    async def run(round_: int) -> None:
        message = Message("bench.source", 1, 0, 0.0, 0, {}, b"k", b"v", None)
        event = app.create_event(b"k", b"v", {}, message)
        make_current(event)  # reads and writes go to partition 1, as in a stage
        tag = f"r{round_}"
        timed = {
            "set a profile": (
                one(lambda i: table.__setitem__(f"{tag}-c{i}", profile(i))),
                many(lambda r: table.set_many([(f"{tag}-m{i}", profile(i)) for i in r]))),
            "get a profile": (
                one(lambda i: table.get(f"{tag}-c{i}")),
                many(lambda r: table.get_many([f"{tag}-m{i}" for i in r]))),
            "set an applied key": (
                one(lambda i: table.__setitem__(f"{tag}-c{i}/0123456789abcdef", i)),
                many(lambda r: table.set_many([(f"{tag}-m{i}/0123456789abcdef", i)
                                               for i in r]))),
            "get a missing key": (
                one(lambda i: table.get(f"{tag}-x{i}/0123456789abcdef")),
                many(lambda r: table.get_many([f"{tag}-y{i}/0123456789abcdef" for i in r]))),
        }
        for name, (single, batched) in timed.items():
            cases.setdefault(f"{name}|one", []).append(single)
            cases.setdefault(f"{name}|many", []).append(batched)
        await app.changelogs.ship()
        assert table.get_many([f"{tag}-m0"]) == [profile(0)]

    for round_ in range(args.runs):
        loop.run_until_complete(run(round_))
    print(f"  {'µs a key (median of runs)':<28} {'one at a time':>14} {'many at a time':>15}")
    for name in dict.fromkeys(key.split("|")[0] for key in cases):
        single, batched = cases[f"{name}|one"], cases[f"{name}|many"]
        print(f"  {name:<28} {statistics.median(single):14.2f} "
              f"{statistics.median(batched):15.2f}   "
              f"(runs: {', '.join(f'{x:.2f}' for x in single)} / "
              f"{', '.join(f'{x:.2f}' for x in batched)})")
    for db in table.data._dbs.values():
        db.close()
    app.consumer._thread.thread_loop.close()
    loop.close()


if __name__ == "__main__":
    main()
