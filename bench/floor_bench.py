"""Benchmark: the floor under the signal latency goal — Faust with the pipeline's shape and no work.

Not a test. It answers one question: on this machine, with a real broker and a load
generator beside it, what latency and CPU does the *framework* give at a steady rate,
before any of our stages' own work? The worker it starts is a Faust app with the worker's
own settings (``worker_options`` in ``streams/app.py``), the same consumer, batch
streams, outboxes and tables, the same topics and hops, and agents that only pass records
on:

    floor-in ─▶ ingest ─▶ floor-log ─▶ identity ─────────────────────────▶ floor-keyed
                           └─▶ minutes (reads)  └─▶ floor-links ─▶ links ─┘  (6 partitions)
                                                    (1 partition, a table)
    floor-keyed ─▶ profiles (tables) ─▶ floor-updates, and each tip to floor-out

ingest, identity and links take batches and hand their records to the producer directly
(``streams/runtime/outbox.py``), as the stages do; ``--link-share`` of the records (one
in 1/share, 0.2 by default: a steady stream of new customers sends about that share
through the link stage) go through the one-partition links hop, which writes a table
entry for each, as the link stage writes the graph. profiles takes batches and writes a
table entry for each record (the event's digest) and one for each customer it changed
(the profile), sends a record a changed customer to ``floor-updates`` (the emitter's
profile updates), and sends each tip to ``floor-out`` with ``topic.send()``, as it sends a
signal; minutes reads in batches and does nothing. The load generator (this process,
kafka-python, as ``touchpoint publish`` does) sends ``--rate`` records a second of
``--size`` bytes, each numbered; one in ``--tip-every`` is a tip, and a reader on
``floor-out`` takes the time a tip arrives. Measuring starts once a first tip has passed
through every hop; tips sent in the first ``--warmup`` seconds of it are not counted.

    .venv/bin/python bench/floor_bench.py --rate 2000 --duration 60
    .venv/bin/python bench/floor_bench.py --rate 2000 --no-tables --no-side-readers --link-share 0

It prints the send → arrive p50 / p99 / max of the tips, whether the worker kept up,
and how the machine's CPU was shared while sending: the worker (and its main thread, the
event loop that runs every agent), the broker, this process (generator and reader) and
idle. Kafka runs on 127.0.0.1:29292 (controller 29293) under a temporary folder,
removed at the end unless --keep.

Exit status 0: the workers kept up (at the last send no tip sent over 2 s before was
still on its way) and every tip arrived. 2: otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import profiles_bench as pb  # the sibling benchmark: Kafka and machine helpers
from signals_bench import WARM_RECORDS_PER_EVENT, LagProbe, percentile, warm_broker

REPO = pb.REPO
TOPICS = {"floor-in": 6, "floor-log": 6, "floor-links": 1, "floor-keyed": 6, "floor-out": 6,
          "floor-updates": 6}
#: the stages' batches (streams/stages/ingest.py, identity.py, profiles.py)
BATCH_RECORDS = 1000
BATCH_SECONDS = 0.05

# a record: tip flag (1 byte), padding, sequence number (8 bytes); send times stay with
# the sender (Tips), the same clock as the arrival times
SEQUENCE = struct.Struct(">q")
#: how far behind the sender the worker may be at the end of sending and still keep up
KEPT_UP_S = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the worker (a subprocess: `floor_bench.py _worker ...`) -------------------------------

def run_worker(args: argparse.Namespace) -> None:
    """A Faust app of the pipeline's shape whose agents only pass records on."""
    import faust

    from touchpoint.logs import configure_logging
    from touchpoint.settings import load_settings
    from touchpoint.streams.app import new_app, worker_options
    from touchpoint.streams.runtime.batches import FORWARD_WITHIN, batch_stream
    from touchpoint.streams.runtime.consumer import only_current
    from touchpoint.streams.runtime.outbox import Outbox, make_current

    # the worker's own settings and Faust options (streams/app.py), on this run's broker
    settings = load_settings({}, create_secrets=False, home=args.datadir,
                             kafka_bootstrap=f"127.0.0.1:{args.kafka_port}")
    options = worker_options(settings, Path(args.datadir))
    options.update(web_enabled=False)
    if not args.tables:
        options.update(store="memory://")
    app = new_app("floor", settings, options)

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, partitions=TOPICS[name], key_serializer="raw",
                         value_serializer="raw")

    inbound, log_, links, keyed, out, _ = (topic(n) for n in TOPICS)
    share = max(1, round(1 / args.link_share)) if args.link_share > 0 else 0

    def forward(source: faust.TopicT, name: str, target: Any,
                table: faust.Table | None = None) -> None:
        """A batch stage that sends each record on, through the outbox, as ingest does."""
        records = batch_stream(app, source)
        outbox = Outbox(app)

        @app.agent(source, name=name)
        async def hop(stream: faust.StreamT[bytes]) -> None:
            async for events in records.take_acked(BATCH_RECORDS, within=FORWARD_WITHIN):
                for event in only_current(app, events):
                    if table is not None:  # the link stage writes the graph
                        make_current(event)
                        table[event.key.decode()] = len(event.value)
                    await outbox.send(target(event), event.key, event.value)
                await outbox.delivered()

    def identity_target(event: Any) -> str:
        (sequence,) = SEQUENCE.unpack(event.value[-SEQUENCE.size:])
        return "floor-links" if share and sequence % share == 0 else "floor-keyed"

    graph = (app.Table("floor-graph", partitions=1, key_type=str) if args.tables else None)
    forward(inbound, "floor.ingest", lambda event: "floor-log")
    forward(log_, "floor.identity", identity_target)
    forward(links, "floor.links", lambda event: "floor-keyed", graph)
    if args.side_readers:
        minutes = batch_stream(app, log_)

        @app.agent(log_, name="floor.minutes")
        async def read(stream: faust.StreamT[bytes]) -> None:
            async for events in minutes.take(5000, within=1.0):
                minutes.ack_all(events)

    table = app.Table("floor-profiles", partitions=6, key_type=str) if args.tables else None
    profiles = batch_stream(app, keyed)
    updates = Outbox(app)

    @app.agent(keyed, name="floor.profiles")
    async def profile(stream: faust.StreamT[bytes]) -> None:
        # as the profiles stage: a batch; a table key a record (its event's digest) and
        # one a changed customer (its profile); a record a changed customer to the updates
        # topic (the emitter's); a tip sent on with Faust's send, as a signal is
        async for taken in profiles.take(BATCH_RECORDS, within=BATCH_SECONDS):
            events = list(only_current(app, taken))
            changed: dict[bytes, Any] = {}
            for event in events:
                if table is not None:
                    make_current(event)
                    table[f"{event.key.decode()}/{event.message.offset:016x}"] = 1
                changed[event.key] = event
            for key, event in changed.items():
                if table is not None:
                    make_current(event)
                    table[key.decode()] = len(event.value)
            for event in events:
                if event.value[0]:  # the tip flag
                    await out.send(key=event.key, value=event.value)
            for key, event in changed.items():
                await updates.send("floor-updates", key, event.value)
            await updates.delivered()
            profiles.ack_all(events)

    configure_logging("warning")  # as `touchpoint worker` does: libraries' debug is off
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    with contextlib.suppress(asyncio.CancelledError):
        worker.execute_from_commandline()


# --- the run -------------------------------------------------------------------------------

def machine_cpu() -> float:
    """CPU seconds all cores spent busy so far (everything but idle and iowait)."""
    with open("/proc/stat") as fh:
        parts = [int(v) for v in fh.readline().split()[1:]]
    return (sum(parts) - parts[3] - parts[4]) / CLK_TCK


@dataclass
class Mark:
    at: float
    worker: float | None
    main: float | None  # the workers' main threads
    broker: float | None
    me: float
    busy: float

    @classmethod
    def take(cls, workers: list[int], broker: int | None) -> Mark:
        t = os.times()
        each = [pb.proc_cpu_seconds(pid) for pid in workers]
        total = None if None in each else sum(c for c in each if c is not None)
        mains = [pb.proc_cpu_seconds(pid, thread=pid) for pid in workers]
        main = None if None in mains else sum(c for c in mains if c is not None)
        return cls(time.monotonic(), total, main,
                   None if broker is None else pb.proc_cpu_seconds(broker),
                   t.user + t.system, machine_cpu())


@dataclass
class Tips:
    sent: dict[int, float] = field(default_factory=dict)  # sequence → send time
    seen: dict[int, float] = field(default_factory=dict)  # sequence → arrival time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def behind(self, now: float, by: float) -> int:
        """Tips sent more than ``by`` seconds before ``now`` and not arrived by then."""
        with self.lock:
            return sum(1 for s, at in self.sent.items()
                       if at < now - by and self.seen.get(s, math.inf) > now)


def record(sequence: int, tip: bool, padding: bytes) -> bytes:
    return (b"\x01" if tip else b"\x00") + padding + SEQUENCE.pack(sequence)


def generate(bootstrap: str, args: argparse.Namespace, tips: Tips, stop: threading.Event,
             counted_from: float) -> int:
    """Send ``rate`` records a second for ``duration`` seconds; return how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_in_flight_requests_per_connection=1)
    padding = b"x" * max(args.size - 1 - SEQUENCE.size, 0)
    keys = [f"C{i:05d}".encode() for i in range(args.customers)]
    tick = 0.01
    per_tick = args.rate * tick
    began = time.monotonic()
    sent = 0
    owed = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now - began >= args.duration:
            break
        owed += per_tick
        while owed >= 1:
            owed -= 1
            sent += 1
            tip = sent % args.tip_every == 0
            if tip and time.monotonic() >= counted_from:
                with tips.lock:
                    tips.sent[sent] = time.time()
            producer.send("floor-in", key=keys[sent % len(keys)],
                          value=record(sent, tip, padding))
        # pace by the clock, not by the work done: a slow tick is made up in the next
        time.sleep(max(0.0, began + (tick * (1 + (now - began) // tick)) - time.monotonic()))
    producer.flush()
    producer.close()
    return sent


def read_tips(bootstrap: str, tips: Tips, stop: threading.Event) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=20)
    consumer.assign([TopicPartition("floor-out", p) for p in range(TOPICS["floor-out"])])
    consumer.seek_to_beginning()
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=50).values():
            arrived = time.time()
            for message in records:
                (sequence,) = SEQUENCE.unpack(message.value[-SEQUENCE.size:])
                with tips.lock:
                    if sequence in tips.sent and sequence not in tips.seen:
                        tips.seen[sequence] = arrived
    consumer.close()


def show_progress(bootstrap: str, tips: Tips, stop: threading.Event,
                  every: float = 5.0) -> None:
    """A line every few seconds: tips counted and arrived, and the group's lag per topic."""
    read = [n for n in TOPICS if n not in ("floor-out", "floor-updates")]  # read by the group
    probe = LagProbe([bootstrap], "floor", {n: [n] for n in read})
    began = time.monotonic()
    try:
        while not stop.wait(every):
            lag = probe.lag()
            with tips.lock:
                counted, seen = len(tips.sent), len(tips.seen)
            lags = ", ".join(f"{n} {v:,}" for n, v in lag.items()) if lag else "n/a"
            pb.log(f"  t={time.monotonic() - began:4.0f}s  tips arrived {seen:,} of "
                   f"{counted:,} counted; uncommitted: {lags}")
    finally:
        probe.close()


def create_topics(bootstrap: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(n, p, 1) for n, p in TOPICS.items()]
                            + [NewTopic("floor-floor-profiles-changelog", 6, 1),
                               NewTopic("floor-floor-graph-changelog", 1, 1)])
    finally:
        admin.close()


def run(args: argparse.Namespace) -> int:
    home = Path(args.home or tempfile.mkdtemp(prefix="floor-bench-"))
    kafka = pb.Kafka(home, args.kafka_port, args.kafka_controller_port)
    bootstrap = f"127.0.0.1:{args.kafka_port}"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        pb.log(f"starting Kafka on {bootstrap} ...")
        pb.log(f"  up in {kafka.start():.1f} s")
        create_topics(bootstrap)
        if args.broker_warmup > 0:
            # as signals_bench.py: a freshly started broker spends its first minute of load
            # compiling, and takes the worker's CPU meanwhile
            from touchpoint.settings import load_settings
            settings = load_settings({}, create_secrets=False, home=home,
                                     kafka_bootstrap=bootstrap)
            warm_broker(settings, args.broker_warmup, WARM_RECORDS_PER_EVENT * args.rate,
                        kafka.pid, "floor")
        for n in range(args.workers):
            datadir = home / f"worker-{n}"
            datadir.mkdir(exist_ok=True)
            command = [sys.executable, __file__, "_worker", "--kafka-port", str(args.kafka_port),
                       "--datadir", str(datadir)]
            command += ["--link-share", str(args.link_share)]
            command += [] if args.tables else ["--no-tables"]
            command += [] if args.side_readers else ["--no-side-readers"]
            with open(home / f"worker-{n}.log", "wb") as fh:
                workers.append(subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT,
                                                cwd=str(REPO), env=pb.base_env()))
        tips, stop = Tips(), threading.Event()
        reader = threading.Thread(target=read_tips, args=(bootstrap, tips, stop), daemon=True)
        reader.start()
        pb.log(f"{args.workers} worker(s) started; waiting for a first tip to pass through")
        wait_ready(bootstrap, tips, workers, home, args.ready_timeout)
        pids = [w.pid for w in workers]

        start = Mark.take(pids, kafka.pid)
        counted_from = start.at + args.warmup
        pb.log(f"sending {args.rate:,.0f} records/s of {args.size} bytes for "
               f"{args.duration:.0f} s (one tip in {args.tip_every}) ...")
        progress = threading.Thread(target=show_progress, args=(bootstrap, tips, stop),
                                    daemon=True)
        progress.start()
        sent = generate(bootstrap, args, tips, stop, counted_from)
        end = Mark.take(pids, kafka.pid)
        behind = tips.behind(time.time(), KEPT_UP_S)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            with tips.lock:
                if len(tips.seen) >= len(tips.sent):
                    break
            time.sleep(0.1)
        stop.set()
        reader.join(timeout=5)
        progress.join(timeout=10)
        return report(args, sent, tips, start, end, behind)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=30)
            if worker.poll() is None:
                worker.kill()
        kafka.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            pb.log(f"kept {home}")


def wait_ready(bootstrap: str, tips: Tips, workers: list[subprocess.Popen[bytes]],
               home: Path, timeout: float) -> None:
    """Send tips (sequence -1, -2, ...) until one arrives: every hop is then assigned."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    began = time.monotonic()
    try:
        for probe in itertools.count(1):
            with tips.lock:
                tips.sent[-probe] = time.time()
            producer.send("floor-in", key=b"ready", value=record(-probe, True, b""))
            producer.flush()
            waited = time.monotonic()
            while time.monotonic() - waited < 2:
                with tips.lock:
                    arrived = [s for s in tips.seen if s < 0]
                if arrived:
                    with tips.lock:  # probes are not counted in the figures
                        for s in [s for s in tips.sent if s < 0]:
                            tips.sent.pop(s)
                            tips.seen.pop(s, None)
                    pb.log(f"  ready after {time.monotonic() - began:.1f} s")
                    return
                for n, worker in enumerate(workers):
                    if worker.poll() is not None:
                        raise SystemExit(f"worker {n} exited {worker.returncode}:\n"
                                         f"{(home / f'worker-{n}.log').read_text()}")
                time.sleep(0.1)
            if time.monotonic() - began > timeout:
                raise SystemExit(f"no tip passed through the workers in {timeout:.0f} s; "
                                 f"see {home}/worker-*.log (use --keep)")
    finally:
        producer.close()


def report(args: argparse.Namespace, sent: int, tips: Tips, start: Mark, end: Mark,
           behind: int) -> int:
    wall = end.at - start.at
    with tips.lock:
        latencies = [tips.seen[s] - at for s, at in tips.sent.items() if s in tips.seen]
        missing = len(tips.sent) - len(latencies)
    pb.log("=" * 78)
    pb.log(f"floor: Faust with the pipeline's shape, no work; {args.workers} worker(s) "
           f"(tables {'on' if args.tables else 'off'}, "
           f"minutes reader {'on' if args.side_readers else 'off'}, "
           f"link share {args.link_share:g})")
    pb.log(f"sent                 {sent:,} records in {wall:.1f} s ({sent / wall:,.0f}/s; "
           f"asked {args.rate:,.0f}/s)")
    if latencies:
        latencies.sort()
        pb.log(f"tip send -> arrive   p50 {percentile(latencies, 50):.3f} s, "
               f"p99 {percentile(latencies, 99):.3f} s, max {latencies[-1]:.3f} s "
               f"({len(latencies)} tips after the warmup)")
    pb.log(f"kept up              {'yes' if not behind else 'NO'}: at the last send, "
           f"{behind} tips sent over {KEPT_UP_S:.0f} s before had not arrived")
    pb.log(f"arrived              {len(latencies)} of {len(tips.sent)} tips; {missing} not "
           f"{args.drain:.0f} s after the last send")

    def share(a: float | None, b: float | None) -> str:
        if a is None or b is None:
            return "n/a"
        return f"{b - a:5.1f} CPU-s ({100 * (b - a) / wall:3.0f} % of a core)"

    capacity = wall * len(os.sched_getaffinity(0))
    pb.log(f"CPU while sending ({capacity:.0f} CPU-s on {len(os.sched_getaffinity(0))} cores):")
    pb.log(f"  worker(s)          {share(start.worker, end.worker)}")
    pb.log(f"    main thread(s)   {share(start.main, end.main)}")
    pb.log(f"  kafka broker       {share(start.broker, end.broker)}")
    pb.log(f"  generator + reader {share(start.me, end.me)}")
    pb.log(f"  idle               {capacity - (end.busy - start.busy):5.1f} CPU-s")
    if start.worker is not None and end.worker is not None and sent:
        pb.log(f"worker CPU a record  {1e6 * (end.worker - start.worker) / sent:,.0f} µs")
    pb.log("machine:")
    for fact in pb.machine_facts():
        pb.log(f"  {fact}")
    return 0 if not (missing or behind) else 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("role", nargs="?", default="run", choices=["run", "_worker"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=2000.0, help="records sent a second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of sending")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds at the start whose tips are not counted")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds to wait for the last tips after sending stops")
    parser.add_argument("--size", type=int, default=600,
                        help="bytes a record (a normalized event is ~400-700)")
    parser.add_argument("--customers", type=int, default=3000, help="distinct record keys")
    parser.add_argument("--tip-every", type=int, default=20,
                        help="one record in N is a tip, sent on to floor-out")
    parser.add_argument("--ready-timeout", type=float, default=180.0,
                        help="seconds to wait for a first tip through the started workers")
    parser.add_argument("--workers", type=int, default=1,
                        help="workers in the consumer group (processes)")
    parser.add_argument("--broker-warmup", type=float, default=30.0,
                        help="seconds of load through the broker before the workers start, "
                             "as signals_bench.py does (0: a cold broker)")
    parser.add_argument("--link-share", type=float, default=0.2,
                        help="share of the records the identity hop sends through the "
                             "one-partition links hop (0: none)")
    parser.add_argument("--no-tables", dest="tables", action="store_false",
                        help="the profiles and links hops write no table entry (no "
                             "changelog records)")
    parser.add_argument("--no-side-readers", dest="side_readers", action="store_false",
                        help="without the minutes reader")
    parser.add_argument("--kafka-port", type=int, default=29292)
    parser.add_argument("--kafka-controller-port", type=int, default=29293)
    parser.add_argument("--datadir", help=argparse.SUPPRESS)
    parser.add_argument("--home", help="folder for Kafka data and the worker's log "
                        "(unset: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folder at the end")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 0 <= args.link_share <= 1:
        raise SystemExit(f"--link-share {args.link_share:g}: a share from 0 to 1")
    if args.role == "_worker":
        sys.argv = [sys.argv[0], "worker"]  # what faust.Worker reads from the command line
        run_worker(args)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
