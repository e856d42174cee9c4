"""Benchmark: events a second the HTTP collector accepts, and its response times.

Not a test: it prints figures and asserts nothing about them. On loopback only, it
starts its own single-node Kafka (``deploy/local/kafka.sh``, 127.0.0.1:28192, controller
28193, under a temporary TOUCHPOINT_HOME), one pipeline worker on the channel topics
(embedded chdb, web port 28180-28185), and ``touchpoint collect --workers W`` on
28186-28191 (the first free port of each range) with a write key of its own. A
closed-loop load generator in this process (aiohttp, ``--concurrency`` connections, each
posting a batch and waiting for its answer before the next) then posts web events in
batches of each ``--batches`` size, ``--runs`` times each: ``--warmup`` seconds not
counted, then ``--seconds`` measured.

Printed per run: requests, events accepted, accepted events/s, response time p50, p99
and max (from sending the request to reading the whole answer), answers that were not
200, and the CPU each part used meanwhile, in cores (utime + stime from ``/proc``:
collector processes, worker, Kafka, this generator), since all of them share the
machine's cores. After each batch size: median, min and max over the runs. At the end:
how many of the accepted events the worker had ingested, i.e. whether it kept up.

    .venv/bin/python bench/collector_bench.py                      # batches 1 and 50, 3 runs
    .venv/bin/python bench/collector_bench.py --batches 50 --runs 5 --seconds 20
    .venv/bin/python bench/collector_bench.py --collector-workers 1 --concurrency 8

Everything it started is stopped and the temporary folder deleted at the end, also on
Ctrl-C. Exit status 0 when every run finished, 1 when the set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import profiles_bench as pb  # the sibling benchmark: the environment its processes get

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT, KAFKA_CONTROLLER_PORT = 28192, 28193


def pick_port(candidates: range) -> int:
    """The first of ``candidates`` free now (another program may hold any of them)."""
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {candidates.start}-{candidates.stop - 1}")


WORKER_PORT = pick_port(range(28180, 28186))
COLLECTOR_PORT = pick_port(range(28186, 28192))
T0 = 1_795_000_000_000
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str = "") -> None:
    print(message, flush=True)


def base_env() -> dict[str, str]:
    """The inherited environment without settings of ours (TOUCHPOINT_PURE_PYTHON stays)."""
    return pb.base_env(("TOUCHPOINT_", "KAFKA_", "CLICKHOUSE_", "PROMETHEUS_"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads); 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Parts:
    """The processes whose CPU is reported: name -> pids (re-read each sample)."""

    kafka: int | None = None
    worker: int | None = None
    collector: int | None = None

    def sample(self) -> dict[str, float]:
        collector = 0.0
        if self.collector is not None:
            collector = sum(cpu_seconds(p) for p in [self.collector, *children(self.collector)])
        return {
            "collector": collector,
            "worker": cpu_seconds(self.worker) if self.worker else 0.0,
            "kafka": cpu_seconds(self.kafka) if self.kafka else 0.0,
            "generator": cpu_seconds(os.getpid()),
        }


@dataclass
class Run:
    """One measured run of one batch size."""

    batch: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    accepted: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def body(batch: int, run_tag: str, counter: Iterator[int]) -> bytes:
    events = []
    for _ in range(batch):
        n = next(counter)
        events.append(
            f'{{"channel":"web","event_id":"{run_tag}-{n}","type":"page_view",'
            f'"occurred_at":{T0 + n},"anonymous_id":"ck-{n % 20000}",'
            f'"session_id":"s-{n % 5000}","url":"/p/{n % 300}"}}')
    return ('{"events":[' + ",".join(events) + "]}").encode()


async def load(url: str, key: str, batch: int, concurrency: int, warmup: float,
               seconds: float, parts: Parts) -> Run:
    import aiohttp

    run = Run(batch, seconds)
    tag = uuid.uuid4().hex[:8]
    counter = iter(range(10**12))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    began = time.monotonic()
    measure_from, measure_to = began + warmup, began + warmup + seconds
    cpu_before: dict[str, float] = {}

    async def client(session: aiohttp.ClientSession) -> None:
        while (now := time.monotonic()) < measure_to:
            data = body(batch, tag, counter)
            sent = time.perf_counter()
            async with session.post(url, data=data, headers=headers) as response:
                answer = await response.read()
            took = time.perf_counter() - sent
            if now >= measure_from:
                run.statuses[response.status] += 1
                run.latencies.append(took)
                if response.status == 200:
                    run.accepted += json.loads(answer)["accepted"]

    async def cpu_mark() -> None:
        await asyncio.sleep(warmup)
        cpu_before.update(parts.sample())

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        marker = asyncio.create_task(cpu_mark())
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        await marker
    after = parts.sample()
    run.cpu = {name: (after[name] - cpu_before.get(name, 0.0)) / seconds for name in after}
    return run


async def kafka_floor(bootstrap: str, topic: str, batch: int, concurrency: int,
                      warmup: float, seconds: float) -> Run:
    """The same events produced straight to Kafka as the collector does, without HTTP.

    The collector's producer settings (``KafkaSender``), ``concurrency`` tasks each sending
    a batch and waiting for every acknowledgement before the next: what acks=all costs
    on this machine, the floor under the collector's response time.
    """
    sys.path.insert(0, str(REPO))
    from touchpoint.collector.sender import KafkaSender

    sender = KafkaSender(bootstrap_servers=[bootstrap], topics=[topic])
    await sender.start()
    while not sender.connected:
        await asyncio.sleep(0.1)
    from touchpoint.collector.batch import Record

    run = Run(batch, seconds)
    counter = iter(range(10**12))
    began = time.monotonic()
    measure_from, measure_to = began + warmup, began + warmup + seconds

    async def client() -> None:
        while (now := time.monotonic()) < measure_to:
            records = [Record(topic, f"anonymous_id:ck-{n % 20000}".encode(),
                              b"x" * 120) for n in (next(counter) for _ in range(batch))]
            sent = time.perf_counter()
            await sender.send(records)
            if now >= measure_from:
                run.latencies.append(time.perf_counter() - sent)
                run.statuses[200] += 1
                run.accepted += batch

    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        await sender.stop()
    return run


@contextmanager
def services(home: Path, collector_workers: int, parts: Parts
             ) -> Iterator[tuple[str, str, str, Any]]:
    """Kafka, a worker and a collector: URL, write key, worker token, settings."""
    env = {**base_env(), "TOUCHPOINT_HOME": str(home), "KAFKA_PORT": str(KAFKA_PORT),
           "KAFKA_CONTROLLER_PORT": str(KAFKA_CONTROLLER_PORT)}
    kafka_script = ["bash", str(REPO / "deploy" / "local" / "kafka.sh")]
    started: list[subprocess.Popen[bytes]] = []
    kafka_started = False
    try:
        log(f"starting Kafka on 127.0.0.1:{KAFKA_PORT} ...")
        result = subprocess.run([*kafka_script, "start"], env=env, capture_output=True,
                                text=True, check=False, timeout=600)
        kafka_started = True
        if result.returncode != 0:
            raise SystemExit(f"kafka.sh start failed:\n{result.stdout}\n{result.stderr}")
        parts.kafka = int((home / "run" / "kafka.pid").read_text().split()[0])
        tag = uuid.uuid4().hex[:8]
        settings_env = {
            **base_env(), "TOUCHPOINT_HOME": str(home),
            "TOUCHPOINT_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
            "TOUCHPOINT_TOPIC_PREFIX": f"b{tag}.", "TOUCHPOINT_APP_ID": f"collect-bench-{tag}",
            "TOUCHPOINT_PII_SALT": "bench-salt-of-16-chars",
            "TOUCHPOINT_WEB_PORT": str(WORKER_PORT),
            "TOUCHPOINT_COLLECT_PORT": str(COLLECTOR_PORT),
            "TOUCHPOINT_COLLECT_RATE_PER_KEY": "1000000",  # the bench measures, not limits
            "TOUCHPOINT_LOG_LEVEL": "warning",
        }
        sys.path.insert(0, str(REPO))
        from touchpoint.collector.keys import KeyFile
        from touchpoint.settings import load_settings
        from touchpoint.streams.topics import ensure_topics

        settings = load_settings(settings_env)
        ensure_topics(settings)
        _, key = KeyFile(settings.collect_keys_path).create("bench", ["web"])
        logs = home / "logs"
        logs.mkdir(exist_ok=True)
        for name, argv in (("worker", ["worker"]),
                           ("collector", ["collect", "--workers", str(collector_workers)])):
            with (logs / f"{name}.log").open("ab") as out:
                process = subprocess.Popen([sys.executable, "-m", "touchpoint.cli", *argv],
                                           env=settings_env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            started.append(process)
            setattr(parts, name, process.pid)
        token = settings.api_token
        deadline = time.monotonic() + 120
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{WORKER_PORT}/status",
                    headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(request, timeout=2):
                    pass
                get_json(f"http://127.0.0.1:{COLLECTOR_PORT}/health")
                if urllib.request.urlopen(f"http://127.0.0.1:{COLLECTOR_PORT}/ready",
                                          timeout=2).status == 200:
                    break
            except OSError:
                pass
            if any(p.poll() is not None for p in started) or time.monotonic() > deadline:
                raise SystemExit("worker or collector did not start; logs in "
                                 f"{logs}:\n" + "\n".join(
                                     (logs / f"{n}.log").read_text()[-2000:]
                                     for n in ("worker", "collector")))
            time.sleep(0.5)
        log("worker and collector ready")
        yield f"http://127.0.0.1:{COLLECTOR_PORT}/v1/events", key, token, settings
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if kafka_started:
            subprocess.run([*kafka_script, "stop"], env=env, capture_output=True,
                           check=False, timeout=180)


def worker_ingested(token: str) -> int | None:
    request = urllib.request.Request(f"http://127.0.0.1:{WORKER_PORT}/status",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.loads(response.read())["ingested"].get("web", 0))
    except (OSError, ValueError, KeyError):
        return None


def report(run: Run, number: int) -> None:
    other = {s: c for s, c in run.statuses.items() if s != 200}
    cpu = "  ".join(f"{name} {cores:.2f}" for name, cores in run.cpu.items())
    log(f"  batch {run.batch:>3} run {number}: {sum(run.statuses.values()):>6} requests  "
        f"{run.accepted:>7} accepted  {run.rate:>8,.0f} ev/s  "
        f"p50 {run.quantile(0.5) * 1000:6.1f} ms  p99 {run.quantile(0.99) * 1000:6.1f} ms  "
        f"max {max(run.latencies, default=0) * 1000:6.1f} ms  not-200 {other or 0}  "
        f"cores: {cpu}")


def summary(runs: list[Run]) -> None:
    def spread(values: list[float], unit: str, scale: float = 1.0) -> str:
        values = [v * scale for v in values]
        return (f"median {statistics.median(values):,.1f}{unit} "
                f"(min {min(values):,.1f}, max {max(values):,.1f})")

    log(f"  batch {runs[0].batch}, {len(runs)} runs: "
        f"{spread([r.rate for r in runs], ' ev/s')}; "
        f"p50 {spread([r.quantile(0.5) for r in runs], ' ms', 1000)}; "
        f"p99 {spread([r.quantile(0.99) for r in runs], ' ms', 1000)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--batches", default="1,50",
                        help="batch sizes to measure, comma-separated (default 1,50)")
    parser.add_argument("--runs", type=int, default=3, help="runs per batch size (default 3)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measured seconds per run (default 15)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds per run before measuring (default 3)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections posting at once (default 16)")
    parser.add_argument("--collector-workers", type=int, default=os.cpu_count() or 1,
                        help="touchpoint collect --workers (default: the number of cores)")
    parser.add_argument("--floor", action="store_true",
                        help="first measure each batch size produced straight to Kafka "
                             "(the collector's producer settings, no HTTP): the floor")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if not all(1 <= b <= 500 for b in batches) or not 1 <= args.runs <= 20 or not (
            0 < args.seconds <= 300 and 1 <= args.concurrency <= 256):
        parser.error("batches 1-500, runs 1-20, seconds up to 300, concurrency 1-256")
    log(f"collector bench: batches {batches}, {args.runs} runs of {args.seconds:.0f} s "
        f"(+{args.warmup:.0f} s warm-up), {args.concurrency} connections, "
        f"{args.collector_workers} collector process(es), {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start")
    home = Path(tempfile.mkdtemp(prefix="collect-bench-"))
    parts = Parts()
    accepted_total = 0
    try:
        with services(home, args.collector_workers, parts) as (url, key, token, settings):
            for batch in batches:
                if args.floor:
                    from touchpoint.streams.topics import ensure_topics

                    floor_topic = f"{settings.topic_prefix}bench-floor"
                    ensure_topics(settings, [floor_topic])
                    floor = asyncio.run(kafka_floor(
                        f"127.0.0.1:{KAFKA_PORT}", floor_topic,
                        batch, args.concurrency, args.warmup, args.seconds))
                    log(f"  Kafka alone, batch {batch}: {floor.rate:,.0f} ev/s  "
                        f"p50 {floor.quantile(0.5) * 1000:.1f} ms  "
                        f"p99 {floor.quantile(0.99) * 1000:.1f} ms (one producer, no HTTP)")
                runs = []
                for number in range(1, args.runs + 1):
                    run = asyncio.run(load(url, key, batch, args.concurrency, args.warmup,
                                           args.seconds, parts))
                    accepted_total += run.accepted
                    report(run, number)
                    runs.append(run)
                summary(runs)
            ingested = worker_ingested(token)
            log(f"worker: {ingested if ingested is not None else '?'} web events ingested "
                f"when the last run ended (accepted in measured time: {accepted_total}, "
                "plus warm-ups); load average "
                f"{os.getloadavg()[0]:.2f}")
    except KeyboardInterrupt:
        log("interrupted")
        return 1
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
