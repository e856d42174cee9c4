"""Benchmark: early complaint signals through the real pipeline, their quality and latency.

Not a test: it prints figures and asserts nothing about them. Like ``profiles_bench.py``
(whose helpers it uses) it starts its own single-node Kafka (``deploy/local/kafka.sh``),
here on ports 29192/29193 so both benchmarks can run side by side, under a temporary
folder, and runs ``touchpoint worker`` subprocesses: one per measurement (``--workers N``:
N for a latency measurement), each measurement with its own topic prefix, consumer group
and embedded warehouse (chdb). Ports 9092 and 19092 (other engineers' brokers) are never
touched.

QUALITY (``quality``): the labelled scenario of ``touchpoint.sim.scenarios`` (default seed 7,
3,000 customers over 28 days) goes through the broker and the worker, and the signals
the worker publishes are scored with ``touchpoint.sim.signal_quality.evaluate`` against the
scenario's truth: recall, median lead time, precision, false alarms, by channel mix and
value tier, then per journey kind (the truth's ``journey``).

  How it is published, and why. Each channel is its own topic and the worker reads the
  five side by side. Publishing four weeks at once would let one channel run days ahead
  of another: a customer's survey answer could reach the detector before the call it
  rates, and each partition's event-time watermark (which concludes signals: breaches,
  abandoned checkouts) would run ahead of customers whose events are still queued. Live,
  events arrive about when they happen. So the events go out in event-time order, one
  slice of event time at a time (default one hour), and the next slice waits until the
  worker has applied every event so far to a profile (``/status``). Within a slice the
  channels may still interleave; an hour is far below every window of the rules (48 h
  repeat contact, 24 h service time, 30 min abandoned checkout is the shortest, and its
  session's events share one topic). Then a few page views of extra visitors, dated
  a week after the last event, move every partition's watermark on so that what is due
  concludes (breaches, fades), as live traffic would. Every record of
  ``signals.complaints`` is then read from the beginning (all states of every signal).

  ``--order bulk`` publishes the same events the way a replay, a backfill or a nightly
  upload delivers them: all at once, each channel lagging the others by a fixed amount
  of up to ``--skew-hours`` (24). ``--order both`` runs live and then bulk, each with
  its own worker and topics, and prints their overall figures side by side and how many
  signal states (customer, severity, detection and escalation time, status) differ. The
  signals should be a function of the events, not of their arrival order.

  For comparison, the same events are also replayed through the pure detector
  (``streams/rules/complaints.py``) in exact time order with perfect identity (the truth says
  whose each event is): where the pipeline and the replay differ, identity resolution,
  arrival order or value tiers made the difference; where both miss, the rules do.

LATENCY (``latency``): steady background traffic from ``touchpoint.sim.simulate.Simulator``
(as ``touchpoint simulate --rate`` sends it), default 2,000 events/s for 60 s, while
planted customers tip over: each gets a bad history (an unresolved call, or a low CSAT)
that opens a ``watch``, and a few seconds later one tipping event (a repeat unresolved
call about the same reason, or a very low review with an angry comment) that escalates
it to ``high``. History and tip share one topic and key, so they arrive in order. The
wall time of each tip's ``publish()`` is recorded, and a thread reads
``signals.complaints`` and notes when the first ``high``/``critical`` record whose
``evidence_event_ids`` contain the tip arrives. Printed: p50/p99/max latency, matched
tips, the achieved publish rate, the worker's backlog and consumer lag. If the worker
does not keep up (its backlog at the end of publishing exceeds two seconds of traffic),
the measurement is repeated with a fresh worker at a rate it sustains (default: 60 % of
the best rate it applied events at, at least 50/s), and the report says so. A tip not
matched within the drain timeout counts as "more than the timeout" in the percentiles.

  Steady means a warm broker. Before the first phase, ``--broker-warmup`` seconds
  (default 30) of a worker's kind of load (~5 records produced per background event per
  second, read back by a consumer group) go through the broker on a topic of its own. A
  broker started for the run compiles its hot paths during its first minute of load: in
  a cold 2,000/s phase it took ~75 % of a core in the first seconds (22-30 % warm), the
  worker's main thread waited for a core meanwhile, and the backlog of those seconds set
  p99 (p99 2.6-3.9 s in five cold runs, 0.41 and 0.58 s in the first two warm ones). A
  production broker has run for months. ``--broker-warmup 0`` measures cold.

  The worker has a CPU to itself. From when the workers start until the phase ends, the
  broker and this process (load generator, signal reader) run on the last CPU only
  (``--harness-cpus``, default ``auto``); the workers keep every CPU. In production
  Kafka and the channel systems run on other machines; here they took ~0.5 of a core
  beside the worker, whose event loop waited for a CPU meanwhile (8.0-8.6 s of a
  ~61 s phase in slow stretches). ``--harness-cpus all`` shares every CPU. The report says
  which.

  Also printed: the CPU seconds over the phase of the worker(s), this process and the
  Kafka broker (``/proc/<pid>/stat`` utime+stime at the start of publishing and at the
  end of the phase), and how the cores were shared while publishing only: workers,
  broker, this process (the load generator) and what was left for other jobs or idle.

  ``--workers N`` (default 1) measures N workers in one consumer group, as a deployment
  scales out: the same app id, topics and settings, each with its own web port, log file
  (``worker-lat2000-1.log``, ...) and chdb folder (only one process may open one; the
  latency phase reads no warehouse). Faust spreads the partitions over them; they start
  together, and the phase waits until each answers ``/status``, the group has applied a
  first event and no member is recovering or rebalancing (``/health``). Every figure
  taken from ``/status`` (ingested, resolved, applied: backlog, throughput) is summed
  over the N workers, a sample counting only when all of them answered; so are CPU
  seconds and schedstat waits; peak RSS is listed per worker. The fallback measures with
  N fresh workers too. With one worker the output is as it was before ``--workers``.

    .venv/bin/python bench/signals_bench.py                  # quality, then latency
    .venv/bin/python bench/signals_bench.py quality --customers 500 --days 14   # smoke
    .venv/bin/python bench/signals_bench.py latency --rate 2000 --duration 60
    .venv/bin/python bench/signals_bench.py latency --rate 2000 --duration 60 --workers 2

Kafka and the workers are stopped and the folder removed at the end unless --keep.
Ctrl-C or SIGTERM stops early, printing what was measured so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import profiles_bench as pb  # the sibling benchmark: Kafka, worker and machine helpers

if TYPE_CHECKING:
    from touchpoint.settings import Settings

# touchpoint is imported inside functions only: with --code, main() first puts an exported
# commit ahead of the working tree on sys.path, and every import must see that.
REPO = pb.REPO
#: Worker settings given with --set (name without TOUCHPOINT_ -> value).
WORKER_SETTINGS: dict[str, str] = {}


@dataclass
class CodeUnderTest:
    """Where the worker's (and this process's) touchpoint code comes from."""

    root: Path = REPO  # the worker's working folder: its `touchpoint` package is imported
    label: str = ""  # set by --code; empty: the working tree (pb.code_state() says more)


CODE = CodeUnderTest()
STARTED: list[Worker] = []  # every worker started, stopped at the end whatever happens
DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday, as in the unit tests
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MIB = pb.MIB
ALARMS = ("high", "critical")
#: The CPUs this process may use as it starts, before --harness-cpus confines it.
ALL_CPUS = frozenset(os.sched_getaffinity(0))


def log(message: str = "") -> None:
    print(message, flush=True)


def load_text() -> str:
    """The machine's load average: other jobs share these cores, and it shows."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min)"


# --- a worker of our own -----------------------------------------------------------------

@dataclass
class Worker:
    """One ``touchpoint worker`` subprocess with its own topics, group and chdb folder."""

    name: str
    env: dict[str, str]
    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    startup: float | None = None
    launched: float = 0.0  # time.monotonic() at launch()

    @classmethod
    def make(cls, base: Path, *, kafka_port: int, partitions: int, run_tag: str,
             name: str, member: int | None = None, port: int | None = None) -> Worker:
        """The worker ``name``, or with ``member`` k the k-th worker of group ``name``.

        Members of one group share the topics, app id (consumer group), home and PII salt;
        each has its own web port, log file and chdb folder (one process per folder).
        """
        home = base / name
        home.mkdir(parents=True, exist_ok=True)
        settings_env = {
            "TOUCHPOINT_HOME": str(home),
            "TOUCHPOINT_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "TOUCHPOINT_TOPIC_PREFIX": f"sig{run_tag}-{name}.",
            "TOUCHPOINT_TOPIC_PARTITIONS": str(partitions),
            "TOUCHPOINT_PII_SALT": "bench-salt-0123456789",
            **{f"TOUCHPOINT_{k.upper()}": v for k, v in WORKER_SETTINGS.items()},
        }
        label = name if member is None else f"{name}-{member}"
        chdb = home / ("chdb" if member is None else f"chdb-{member}")
        env = pb.worker_env(settings_env, home, f"chdb://{chdb}",
                            pb.free_port() if port is None else port, f"{run_tag}-{name}")
        from touchpoint.settings import load_settings

        return cls(label, env, load_settings(env), base / f"worker-{label}.log")

    @property
    def port(self) -> int:
        return self.settings.web_port

    def start(self, timeout: float = 180.0) -> None:
        """Start the worker and wait until its web server answers."""
        self.launch()
        self.wait_answering(timeout)

    def launch(self) -> None:
        """Start the worker process (registered in STARTED, so it is stopped at the end)."""
        with self.log_path.open("ab") as fh:
            self.launched = time.monotonic()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchpoint.cli", "worker"], env=self.env,
                cwd=str(CODE.root), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self)

    def wait_answering(self, timeout: float = 180.0) -> None:
        """Wait until the launched worker's web server answers /status."""
        assert self.process is not None, "launch() first"
        while time.monotonic() - self.launched < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"worker {self.name} exited at start ({self.process.returncode})"
                                 f":\n{self.log_tail()}")
            if self.status(timeout=2) is not None:
                self.startup = time.monotonic() - self.launched
                return
            time.sleep(0.3)
        raise SystemExit(f"worker {self.name} did not answer within {timeout:.0f} s:\n"
                         f"{self.log_tail()}")

    def status(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """/status with the worker's API token (its settings': the local one in its home).

        A ``--code`` commit from before API tokens has no ``api_token``: nothing is sent.
        """
        return pb.get_status(self.port, timeout, getattr(self.settings, "api_token", None))

    def progress(self, timeout: float = 5.0) -> Progress | None:
        body = self.status(timeout)
        return None if body is None else Progress.of(body)

    def healthy(self, timeout: float = 5.0) -> bool | None:
        """/health: True ready, False recovering or rebalancing, None no such page or answer."""
        url = f"http://127.0.0.1:{self.port}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout):
                return True
        except urllib.error.HTTPError as exc:
            return False if exc.code == 503 else None
        except OSError:
            return None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> str:
        if self.process is None:
            return "not started"
        return pb.stop_worker(self.process)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        from touchpoint.warehouse_client import query_worker

        return query_worker(self.settings, sql, timeout=180).rows

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(pb.log_lines(self.log_path)[-lines:])

    def schedstat(self) -> tuple[float, float, float, float] | None:
        """Seconds the worker's threads ran on a CPU and waited runnable for one; then the
        same for its main thread alone, which runs the event loop and every stage.

        From /proc/<pid>/task/*/schedstat (threads alive now). The wait shows how much
        other jobs on the machine held the worker back; a main thread that ran nearly
        all of the phase means the event loop, not the machine, was the limit.
        """
        if self.process is None:
            return None
        ran = waited = loop_ran = loop_waited = 0
        try:
            for task in Path(f"/proc/{self.process.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields_ = (task / "schedstat").read_text().split()
                    ran += int(fields_[0])
                    waited += int(fields_[1])
                    if task.name == str(self.process.pid):
                        loop_ran, loop_waited = int(fields_[0]), int(fields_[1])
        except OSError:
            return None
        return ran / 1e9, waited / 1e9, loop_ran / 1e9, loop_waited / 1e9

    def cpu_rss(self) -> tuple[float | None, int | None]:
        if self.process is None:
            return None, None
        return pb.proc_cpu_seconds(self.process.pid), pb.proc_status(self.process.pid).get("VmHWM")


@dataclass(frozen=True)
class Progress:
    """The worker's counters that say how far it got (from ``/status``)."""

    taken: int  # ingested + rejected
    ingested: int
    resolved: int  # events through identity resolution
    applied: int  # events applied to profiles (applied + repeats)
    signals: int  # complaint-signal records sent

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Progress:
        ingested = sum((body.get("ingested") or {}).values())
        rejected = sum((body.get("rejected") or {}).values())
        prof = body.get("profiles") or {}
        return cls(ingested + rejected, ingested,
                   int((body.get("identity") or {}).get("resolved", 0)),
                   int(prof.get("applied", 0)) + int(prof.get("repeats", 0)),
                   int(prof.get("signals", 0)))

    @classmethod
    def total(cls, parts: Iterable[Progress]) -> Progress:
        """The counters of several workers of one group, summed."""
        parts = list(parts)
        return cls(*(sum(getattr(p, f.name) for p in parts) for f in fields(cls)))

    def done(self, published: int) -> bool:
        return self.taken >= published and self.applied >= self.ingested


@dataclass
class Group:
    """Workers of one consumer group, as a deployment scales out; Faust spreads the partitions.

    One worker is a group of one, named and laid out as a lone worker.
    """

    name: str
    workers: list[Worker]

    @classmethod
    def make(cls, base: Path, *, kafka_port: int, partitions: int, run_tag: str, name: str,
             size: int) -> Group:
        if size == 1:
            return cls(name, [Worker.make(base, kafka_port=kafka_port, partitions=partitions,
                                          run_tag=run_tag, name=name)])
        ports: set[int] = set()
        while len(ports) < size:  # free_port() twice in a row may give the same port
            ports.add(pb.free_port())
        return cls(name, [Worker.make(base, kafka_port=kafka_port, partitions=partitions,
                                      run_tag=run_tag, name=name, member=member, port=port)
                          for member, port in enumerate(sorted(ports), start=1)])

    def __len__(self) -> int:
        return len(self.workers)

    @property
    def settings(self) -> Settings:
        """The group's settings (the members differ only in web port and chdb folder)."""
        return self.workers[0].settings

    @property
    def startup(self) -> float:
        """Seconds until the slowest member answered /status."""
        return max(w.startup or 0.0 for w in self.workers)

    def start(self, timeout: float = 180.0) -> None:
        """Start every member at once, then wait until each answers /status."""
        for worker in self.workers:
            worker.launch()
        for worker in self.workers:
            worker.wait_answering(timeout)

    def progress(self, timeout: float = 5.0) -> Progress | None:
        """The group's counters; None unless every member answered (a partial sum misleads)."""
        parts = [w.progress(timeout) for w in self.workers]
        if any(p is None for p in parts):
            return None
        return Progress.total(p for p in parts if p is not None)

    def alive(self) -> bool:
        return self.dead() is None

    def dead(self) -> Worker | None:
        """The first member that is not running, if any."""
        return next((w for w in self.workers if not w.alive()), None)

    def wait_healthy(self, timeout: float) -> bool:
        """Wait until no member is recovering or rebalancing (/health), or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not all(w.healthy() is not False for w in self.workers):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the members so far; None if one is unreadable."""
        values = [None if w.process is None else pb.proc_cpu_seconds(w.process.pid)
                  for w in self.workers]
        return None if None in values else sum(v or 0.0 for v in values)

    def schedstat(self) -> tuple[float, float, float, float] | None:
        """Every member's :meth:`Worker.schedstat`, summed; None if one is unreadable."""
        values = [w.schedstat() for w in self.workers]
        if any(v is None for v in values):
            return None
        ran, waited, loop_ran, loop_waited = (sum(v[i] for v in values if v is not None)
                                              for i in range(4))
        return ran, waited, loop_ran, loop_waited

    def stop(self) -> list[str]:
        """Stop every member at once: one stopping alone would hand its partitions over."""
        with ThreadPoolExecutor(max_workers=len(self.workers)) as pool:
            return list(pool.map(Worker.stop, self.workers))


def wait_processed(worker: Worker | Group, published: int, *, timeout: float,
                   poll: float = 0.1) -> Progress | None:
    """Wait until the worker (or every worker of a group) applied every published event."""
    deadline = time.monotonic() + timeout
    last: Progress | None = None
    while True:
        now = worker.progress(timeout=10)
        if now is not None:
            last = now
            if last.done(published):
                return last
        if time.monotonic() > deadline or not worker.alive():
            return None if last is None or not last.done(published) else last
        time.sleep(poll)


# --- signals.complaints ------------------------------------------------------------------

class SignalReader:
    """Reads every record of a signals topic from the beginning, decoded, with arrival time."""

    def __init__(self, bootstrap: list[str], topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from touchpoint.schemas.codec import codec_for

        self._codec = codec_for("complaint_signal")
        # No group: nothing to commit; a short fetch wait so an idle poll returns fast.
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       enable_auto_commit=False, fetch_max_wait_ms=10,
                                       auto_offset_reset="earliest")
        deadline = time.monotonic() + 60
        partitions = self._consumer.partitions_for_topic(topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise SystemExit(f"topic {topic} has no partitions after 60 s")
            time.sleep(0.5)
            partitions = self._consumer.partitions_for_topic(topic)
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(self.partitions)
        self._consumer.seek_to_beginning(*self.partitions)

    def poll(self, timeout_ms: int = 100) -> list[tuple[float, dict[str, Any]]]:
        """Records that arrived, each with the wall time (time.time()) it was read."""
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        arrived = time.time()
        return [(arrived, self._codec.decode(message.value))
                for messages in batches.values() for message in messages]

    def close(self) -> None:
        self._consumer.close()


class LagProbe:
    """Committed-offset lag of the worker's consumer group, per topic group."""

    def __init__(self, bootstrap: list[str], group: str, topics: Mapping[str, list[str]]) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._group = group
        self._topics = topics
        self.error: str | None = None  # the latest failure, for the report

    def lag(self) -> dict[str, int] | None:
        from kafka import TopicPartition

        try:
            committed = self._admin.list_group_offsets(self._group)[self._group]
            out: dict[str, int] = {}
            for name, topics in self._topics.items():
                tps = [TopicPartition(t, p) for t in topics
                       for p in sorted(self._consumer.partitions_for_topic(t) or ())]
                ends = self._consumer.end_offsets(tps)
                total = 0
                for tp in tps:
                    done = committed.get(tp)
                    start = done.offset if done is not None and done.offset >= 0 else 0
                    total += max(ends.get(tp, 0) - start, 0)
                out[name] = total
            return out
        except Exception as exc:  # a probe that fails is a missing sample, not a failed run
            self.error = f"{type(exc).__name__}: {exc}"
            return None

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


# --- quality -----------------------------------------------------------------------------

def event_time(event: Mapping[str, Any]) -> int:
    from touchpoint.schemas.contract import parse_occurred_at

    value = parse_occurred_at(event["occurred_at"])
    if not isinstance(value, int):
        raise ValueError(f"event {event.get('event_id')}: {value}")
    return value


def slices(times: Sequence[int], start_ms: int, slice_ms: int) -> list[range]:
    """Index ranges of time-ordered events, one per slice of event time (empty ones left out)."""
    out: list[range] = []
    begin = 0
    for i in range(1, len(times) + 1):
        if i == len(times) or (times[i] - start_ms) // slice_ms != \
                (times[begin] - start_ms) // slice_ms:
            out.append(range(begin, i))
            begin = i
    return out


def time_passes(at_ms: int, visitors: int, run_tag: str) -> list[tuple[str, dict[str, Any]]]:
    """Page views of extra visitors at ``at_ms``: event time moves on in every partition."""
    return [("web", {"event_id": str(uuid.uuid4()), "type": "page_view",
                     "occurred_at": at_ms + i * 1000,
                     "anonymous_id": f"ck_timepasses_{run_tag}_{i:04d}",
                     "session_id": f"s_timepasses_{run_tag}_{i:04d}",
                     "url": "https://shop.example.cn/"})
            for i in range(visitors)]


def read_all_signals(worker: Worker, *, settle: float, timeout: float) -> list[dict[str, Any]]:
    """Every record of the worker's signals topic, once its count stopped growing."""
    reader = SignalReader(worker.settings.kafka_servers,
                          f"{worker.settings.topic_prefix}signals.complaints")
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    stable_since: float | None = None
    try:
        while time.monotonic() < deadline:
            records += [record for _, record in reader.poll(200)]
            body = worker.status()
            sent = Progress.of(body).signals if body else -1
            if sent == len(records):
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since >= settle:
                    return records
            else:
                stable_since = None
        log(f"  WARNING: read {len(records):,} signal records but the worker reports "
            f"{sent:,} sent after {timeout:.0f} s; scoring what was read")
        return records
    finally:
        reader.close()


def rules_facts(settings: Settings) -> str:
    from touchpoint.streams.rules.complaints import DEFAULT_RULES

    path = Path(settings.signal_rules) if settings.signal_rules else DEFAULT_RULES
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as exc:
        return f"{path} (unreadable: {exc})"
    try:
        shown: Path | str = path.resolve().relative_to(CODE.root.resolve())
    except ValueError:
        shown = path
    return f"{shown} (sha256 {digest})"


def run_quality(args: argparse.Namespace, base: Path, run_tag: str,
                order: str = "live") -> tuple[int, Any, list[dict[str, Any]]]:
    from touchpoint.exceptions import ContractError
    from touchpoint.publish import Publisher
    from touchpoint.sim import offline, scenarios
    from touchpoint.sim.signal_quality import evaluate

    log(f"QUALITY: generating the labelled scenario (seed {args.seed}, {args.customers:,} "
        f"customers, {args.days:g} days from {args.start.isoformat()}) ...")
    began = time.monotonic()
    scenario = scenarios.generate(seed=args.seed, customers=args.customers, start=args.start,
                                  days=args.days)
    times = [event_time(event) for _, event in scenario.events]
    log(f"  {len(scenario.events):,} events in {time.monotonic() - began:.1f} s; "
        f"customers {scenario.counts()}")
    start_ms = int(args.start.timestamp() * 1000)
    parts: list[Sequence[int]]
    if order == "bulk":
        parts = [offline.arrival_order([channel for channel, _ in scenario.events], times,
                                       seed=args.seed, skew_hours=args.skew_hours)]
        wait_s = args.bulk_timeout
        log(f"  order: bulk, all {len(times):,} events at once, channels skewed by up to "
            f"{args.skew_hours:g} h")
    else:
        parts = list(slices(times, start_ms, int(args.slice_hours * HOUR_MS)))
        wait_s = args.slice_timeout
        log(f"  order: live, {len(parts)} slices of {args.slice_hours:g} h event time")

    worker = Worker.make(base, kafka_port=args.kafka_port, partitions=args.partitions,
                         run_tag=run_tag, name=f"quality-{order}")
    log(f"  starting worker (port {worker.port}, log {worker.log_path}) ...")
    worker.start()
    log(f"  worker answered after {worker.startup:.1f} s")
    code = CODE.label or pb.code_state()[0]
    load_start = load_text()
    published = refused = 0
    slow_slices: list[int] = []
    began = time.monotonic()
    shown = began
    try:
        with Publisher.from_settings(worker.settings) as publisher:
            def send(channel: str, event: Mapping[str, Any]) -> bool:
                nonlocal refused
                try:
                    publisher.publish(channel, event)
                    return True
                except ContractError as exc:
                    refused += 1
                    log(f"  refused by the contract: {event.get('event_id')}: {exc}")
                    return False

            for number, part in enumerate(parts, start=1):
                published += sum(send(*scenario.events[i]) for i in part)
                publisher.flush()
                if wait_processed(worker, published, timeout=wait_s) is None:
                    slow_slices.append(number)
                    log(f"  WARNING: slice {number} not applied within {wait_s:.0f} s"
                        "; going on (later events may overtake it)")
                    if not worker.alive():
                        raise SystemExit(f"the worker died:\n{worker.log_tail()}")
                now = time.monotonic()
                if now - shown >= 10 or number == len(parts):
                    shown = now
                    day = (times[part[-1]] - start_ms) / DAY_MS
                    log(f"  slice {number:>4}/{len(parts)}  event day {day:5.1f}  "
                        f"{published:>8,} events applied  {now - began:6.0f} s  "
                        f"{published / (now - began):6.0f} events/s")
            publish_s = time.monotonic() - began
            # Time passes: a week after the last event, in every partition.
            later = time_passes(max(times) + 7 * DAY_MS, 40 * args.partitions, run_tag)
            published += sum(send(channel, event) for channel, event in later)
            publisher.flush()
        log(f"  time passes: {len(later)} page views of extra visitors a week after the last "
            "event ...")
        if wait_processed(worker, published, timeout=300) is None:
            log("  WARNING: the time-passes page views were not all applied within 300 s")
        signals = read_all_signals(worker, settle=3.0, timeout=300)
        profiles_status = (worker.status() or {}).get("profiles", {})
        placed = {name.removeprefix("signal_contacts_"): n
                  for name, n in profiles_status.items() if name.startswith("signal_contacts_")}
        stored = stored_counts(worker, published)
        cpu, hwm = worker.cpu_rss()
        sched = worker.schedstat()
        wall = time.monotonic() - began
        load_end = load_text()
    finally:
        stopped = worker.stop()

    report = evaluate(scenario.truth, signals, events=scenario.events)
    log("")
    log("=" * 78)
    log(f"signals benchmark: QUALITY, {order} order (labelled scenario through Kafka and "
        "one worker)")
    log("=" * 78)
    log(f"scenario              seed {args.seed}, {args.customers:,} customers over "
        f"{args.days:g} days from {args.start.isoformat()}: "
        + ", ".join(f"{k} {v:,}" for k, v in scenario.counts().items()))
    how = (f"in {len(parts)} slices of {args.slice_hours:g} h event time, each applied "
           "before the next" if order == "live" else
           f"all at once, channels skewed by up to {args.skew_hours:g} h")
    log(f"events published      {len(scenario.events) - refused:,} scenario events "
        f"({refused} refused) + {len(later)} time-passes page views; {how} "
        f"({publish_s:,.0f} s, {(len(scenario.events) - refused) / publish_s:,.0f} events/s)")
    if slow_slices:
        log(f"                      {len(slow_slices)} slice(s) timed out: {slow_slices[:10]}")
    log(f"stored                {stored}")
    log(f"signal records read   {len(signals):,} states of "
        f"{len({s['signal_id'] for s in signals}):,} signals from signals.complaints "
        "(all records, from the beginning)")
    log(f"detector rules        {rules_facts(worker.settings)}")
    log("contacts placed       " + (", ".join(f"{n:,} {name.replace('_', ' ')}"
                                             for name, n in sorted(placed.items()))
                                  or "(not reported)")
        + " (in event time, by the detector: complaint_replay.py)")
    log(f"worker                {args.partitions} partitions, chdb; CPU "
        f"{cpu or 0:,.0f} s in {wall:,.0f} s ({100 * (cpu or 0) / wall:.0f}% of a core), "
        f"peak RSS {(hwm or 0) / MIB:,.0f} MiB; {stopped}")
    log(f"machine               {load_start} at the start, {load_end} at the end; 2 cores "
        "shared with other jobs")
    if sched is not None:
        log(f"                      the worker's threads ran {sched[0]:,.0f} s on a CPU and "
            f"waited {sched[1]:,.0f} s runnable for one (schedstat: CPU contention)")
    log(f"code under test       {code}")
    log("")
    log(report.format())
    log("")
    log_breakdown(scenario.truth, signals, scenario.events, evaluate)
    if args.replay:
        log("")
        replay_report(scenario, worker.settings, evaluate, skew_hours=args.skew_hours,
                      seed=args.seed)
    log("=" * 78)
    return (0 if not slow_slices else 2), report, signals


def compare_orders(results: Mapping[str, tuple[Any, list[dict[str, Any]]]]) -> None:
    """The overall figures of each order side by side, and whether the signals are the same.

    Signals are compared by what they conclude: the latest state of each signal not
    withdrawn (``offline.concluded``).
    """
    from touchpoint.sim import offline

    log("")
    log("=" * 78)
    log("signals benchmark: QUALITY, the same events in time order and in bulk")
    log("=" * 78)
    titles = ("order", "recall", "precision", "lead h", "alarm recall", "noisy alarms",
              "signals")
    rows = [titles]
    for order, (report, _) in results.items():
        m = report.overall
        rows.append((order, _percent(m.recall), _percent(m.precision),
                     f"{m.median_lead_hours or 0:.1f}", _percent(m.alarm_recall),
                     f"{m.noisy_alarms}/{m.noisy}", f"{report.signals:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]
    for row in rows:
        log("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))

    def concluded(signals: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
        return set(offline.concluded(signals).values())

    (first, (_, a)), (second, (_, b)) = list(results.items())[:2]
    only_a, only_b = concluded(a) - concluded(b), concluded(b) - concluded(a)
    customers = {c for c, *_ in only_a | only_b}
    log(f"same signal states    {'yes' if not only_a and not only_b else 'no'}: "
        f"{len(only_a):,} only in {first}, {len(only_b):,} only in {second}, "
        f"{len(customers):,} customers differ")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def stored_counts(worker: Worker, published: int, timeout: float = 120) -> str:
    """Events and signal rows in the warehouse, once every event is stored (or timeout)."""
    deadline = time.monotonic() + timeout
    events = -1
    try:
        while time.monotonic() < deadline:
            events = int(worker.query("SELECT count() FROM touchpoint_events")[0][0])
            if events >= published:
                break
            time.sleep(1)
        raw = worker.query("SELECT count(), uniqExact(signal_id) FROM complaint_signals_raw")[0]
    except Exception as exc:  # a report line, not a failure
        return f"warehouse unavailable ({exc})"
    note = "" if events >= published else f" (NOT all: {published:,} published)"
    return (f"{events:,} events in touchpoint_events{note}; complaint_signals_raw "
            f"{int(raw[0]):,} rows of {int(raw[1]):,} signals")


def log_breakdown(truth: Mapping[str, Any], signals: list[dict[str, Any]],
                  events: Sequence[tuple[str, Mapping[str, Any]]],
                  evaluate: Callable[..., Any]) -> None:
    """Quality per journey kind and per number of warning contacts (the truth's fields)."""
    log("by journey kind (truth `journey`): heading customers caught before their "
        "complaint; alarms (high/critical) on everyone")
    groups: dict[str, dict[str, Any]] = defaultdict(dict)
    for cid, record in truth.items():
        groups[f"{record.label}/{record.journey}"][cid] = record
    for record in truth.values():
        if record.heading:
            n = record.warning_contacts
            bucket = "0-1" if n <= 1 else "2-3" if n <= 3 else "4-6" if n <= 6 else "7+"
            groups[f"heading, {bucket} warning contacts"][record.customer_id] = record
    earliest: dict[str, int] = {}
    for s in signals:
        at = to_ms(s["detected_at"])
        earliest[s["customer_id"]] = min(earliest.get(s["customer_id"], at), at)
    header = (f"  {'group':<38} {'cust':>5} {'caught':>8} {'alarm':>8} {'lead h':>7} "
              f"{'alarm lead':>10} {'alarmed':>8}  missed (examples)")
    log(header)
    log("  " + "-" * (len(header) - 2))
    for name in sorted(groups, key=lambda g: (g.startswith("heading,"), g)):
        members = groups[name]
        m = evaluate(members, signals, events=events).overall
        heading = m.heading
        caught = f"{m.caught}/{heading}" if heading else "-"
        alarm = f"{m.caught_alarm}/{heading}" if heading else "-"
        missed = [cid for cid, r in members.items() if r.heading
                  and not earliest.get(cid, math.inf) < to_ms(r.complaint_at)]
        log(f"  {name:<38} {m.customers:>5} {caught:>8} {alarm:>8} "
            f"{fmt_num(m.median_lead_hours):>7} {fmt_num(m.median_alarm_lead_hours):>10} "
            f"{m.alarmed:>8}  {' '.join(missed[:3])}")


def fmt_num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def to_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return round((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp() * 1000)
    return int(value)


def replay_report(scenario: Any, settings: Settings, evaluate: Callable[..., Any],
                  skew_hours: float = 24.0, seed: int = 7) -> None:
    """The same events through the pure detector: perfect identity, two arrival orders."""
    from touchpoint.sim import offline
    from touchpoint.streams.rules import complaints

    log("offline replay: the same events through the profiles stage's detector")
    log("(streams/rules/signals.py), each event given to its true customer (no identity")
    log("resolution, no Kafka), ingest's normalization and sentiment included.")
    began = time.monotonic()
    normalized = offline.normalize(scenario, phone_region=settings.phone_region)
    rules = complaints.Rules.load(settings.signal_rules or None)
    times = [int(event["occurred_at"]) for _, event in normalized]
    orders = {
        "time order": sorted(range(len(times)), key=lambda i: (times[i], i)),
        f"bulk, channels skewed by up to {skew_hours:g} h": offline.arrival_order(
            [event["channel"] for _, event in normalized], times, seed=seed,
            skew_hours=skew_hours),
    }
    tier_cases: list[tuple[str, Callable[[str], str]]] = [
        ("tier as the pipeline sees it here (\"new\": every first purchase is under "
         "new_days=30 old)", lambda customer: "new"),
        ("tier from the truth (key -> \"key\", regular -> \"standard\")",
         offline.truth_tier(scenario.truth)),
    ]
    for title, tier_of in tier_cases:
        outcomes = {}
        for order, indexes in orders.items():
            records = offline.detect(normalized, indexes, rules=rules, tier_of=tier_of)
            outcomes[order] = offline.concluded(records)
            log("")
            log(f"replay, {order}, {title}:")
            log(evaluate(scenario.truth, records).format())
        (first, a), (second, b) = outcomes.items()
        differ = set(a.items()) ^ set(b.items())
        log(f"same signals in {first} and {second}: {'yes' if not differ else 'no'} "
            f"({len(a):,} and {len(b):,} signals; {len(differ):,} states differ)")
    log(f"(replay took {time.monotonic() - began:.0f} s)")


# --- latency -----------------------------------------------------------------------------

@dataclass
class Tip:
    """One planted customer: a bad history, then the event that should tip it to high."""

    customer_id: str
    kind: str
    history: tuple[str, dict[str, Any]]
    tip: tuple[str, dict[str, Any]]
    history_published: float | None = None
    published: float | None = None  # wall time just before publish() of the tip
    acked: float | None = None  # wall time the broker acknowledged the tip
    watch_seen: float | None = None  # wall time the history's signal record was read
    seen: float | None = None  # wall time the escalation's record was read
    emitted_ms: int | None = None  # the record's emitted_at (worker clock)
    severity: str | None = None

    @property
    def tip_id(self) -> str:
        return str(self.tip[1]["event_id"])

    @property
    def latency(self) -> float | None:
        return None if self.seen is None or self.published is None else self.seen - self.published


def plant(customer_id: str, kind: str, at_ms: int, gap_ms: int) -> Tip:
    """A customer whose history opens a watch and whose tip (``gap_ms`` later) makes it high.

    ``call``: an unresolved call, then another unresolved call about the same reason
    (1.5 points, then 1.5 + a repeat contact's 1.0: about 4 against ``high`` at 3).
    ``rating``: a CSAT of 2 about the call center (1.5), then a review of 1 about the web
    shop with an angry comment (2.0 + 1.0 for negative text, capped at 2.5): two
    separate bad experiences. (Two ratings about the same channel within the feedback
    window are one verdict on one contact, capped together, and stay a watch.) Both stay
    on one topic with one key, in order.
    """
    def ids() -> str:
        return str(uuid.uuid4())
    if kind == "call":
        def call(at: int) -> tuple[str, dict[str, Any]]:
            event_id = ids()
            return "callcenter", {"event_id": event_id, "type": "call_ended",
                                  "occurred_at": at, "customer_id": customer_id,
                                  "call_id": event_id[:18], "agent_id": "AG001",
                                  "queue_wait_s": 45, "talk_s": 420, "transfers": 0,
                                  "reason": "delivery", "outcome": "unresolved",
                                  "notes": "Parcel still not delivered, customer calling again"}
        return Tip(customer_id, kind, call(at_ms), call(at_ms + gap_ms))
    history = ("feedback", {"event_id": ids(), "type": "csat", "occurred_at": at_ms,
                            "customer_id": customer_id, "score": 2,
                            "about_channel": "callcenter"})
    tip = ("feedback", {"event_id": ids(), "type": "review", "occurred_at": at_ms + gap_ms,
                        "customer_id": customer_id, "score": 1,
                        "about_channel": "web",
                        "comment": "Terrible service, still no refund. Very disappointed."})
    return Tip(customer_id, kind, history, tip)


def check_plants(settings: Settings) -> str:
    """What the pure detector makes of each plant kind: watch after the history, then?"""
    from touchpoint.schemas.codec import codec_for
    from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS
    from touchpoint.streams.rules import complaints
    from touchpoint.streams.rules.normalize import Accepted, Ingestor

    rules = complaints.Rules.load(settings.signal_rules or None)
    ingestor = Ingestor(pii_salt="bench", phone_region=settings.phone_region, worker="check")
    found = []
    for kind in ("call", "rating"):
        tip = plant(f"CHECK-{kind}", kind, 1_795_000_000_000, 2 * HOUR_MS)
        state = complaints.ComplaintState(tip.customer_id)
        seen = []
        for channel, event in (tip.history, tip.tip):
            record = {n: event.get(n) for n in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
            record["attributes"] = {}
            out = ingestor.process(channel, None, codec_for(channel).encode(record),
                                   topic="check", partition=0, offset=0, timestamp_ms=None)
            assert isinstance(out, Accepted), out
            state, records = complaints.observe(state, out.event, rules=rules,
                                                value_tier="new",
                                                sentiment=out.event.get("sentiment"))
            seen.append("/".join(r["severity"] for r in records) or "nothing")
        found.append(f"{kind}: history -> {seen[0]}, tip -> {seen[1]}")
    return "; ".join(found)


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds of this process, the broker and the workers so far, at one moment.

    ``since`` turns two marks into what was used between them (``at``: wall seconds).
    """

    at: float  # time.monotonic()
    bench: float  # time.process_time(): this process, every thread
    broker: float | None  # None: no broker pid, or its /proc entry unreadable
    workers: float | None  # every worker of the group, summed

    @classmethod
    def take(cls, broker_pid: int | None, group: Group) -> CpuMark:
        return cls(time.monotonic(), time.process_time(),
                   None if broker_pid is None else pb.proc_cpu_seconds(broker_pid),
                   group.cpu_seconds())

    def since(self, start: CpuMark) -> CpuMark:
        def minus(end: float | None, begin: float | None) -> float | None:
            return None if end is None or begin is None else end - begin

        return CpuMark(self.at - start.at, self.bench - start.bench,
                       minus(self.broker, start.broker), minus(self.workers, start.workers))


@dataclass
class PhaseResult:
    """What one latency measurement saw."""

    rate: float
    duration: float
    customers: int
    workers: int = 1
    group: str = ""
    sent: int = 0
    publish_s: float = 0.0
    prepared: bool = False  # background traffic prepared ahead (not --live-publisher)
    tips: list[Tip] = field(default_factory=list)
    samples: list[tuple[float, int, int, dict[str, int] | None]] = field(default_factory=list)
    backlog_at_end: int | None = None
    throughput: float | None = None  # events/s applied to profiles while publishing
    drain_throughput: float | None = None  # events/s applied after publishing ended
    drain_waited: float = 0.0
    members: list[tuple[str, float | None, int | None, str]] = field(default_factory=list)
    # ^ per worker: name, CPU seconds, peak RSS, how it stopped
    interrupted: bool = False
    signal_records: int = 0
    wall: float = 0.0  # seconds from the start of publishing to the end of the phase
    bench_cpu: float = 0.0  # CPU seconds of this process (simulator, publishers, reader)
    load: tuple[str, str] = ("", "")
    # workers: (ran, waited for a CPU; main threads: ran, waited) in the phase, seconds
    sched: tuple[float, float, float, float] | None = None
    cpu_phase: CpuMark | None = None  # used from the start of publishing to the phase's end
    cpu_publishing: CpuMark | None = None  # used while publishing only
    # --harness-cpus: (the broker's and this process's CPUs, the others) or None
    confined: tuple[list[int], list[int]] | None = None

    @property
    def kept_up(self) -> bool:
        return self.backlog_at_end is not None and self.backlog_at_end <= 2 * self.rate

    @property
    def worker_cpu(self) -> float | None:
        """CPU seconds of every worker, summed; None if one was unreadable."""
        cpus = [cpu for _, cpu, _, _ in self.members]
        return None if not cpus or None in cpus else sum(cpu or 0.0 for cpu in cpus)

    @property
    def worker_hwm(self) -> int | None:
        """The highest peak RSS of the workers."""
        return max((hwm or 0 for _, _, hwm, _ in self.members), default=0) or None

    @property
    def stopped(self) -> str:
        """How the (first) worker stopped."""
        return self.members[0][3] if self.members else ""


def workers_text(n: int) -> str:
    """", 2 workers" in headers; nothing for one worker (its output predates --workers)."""
    return "" if n == 1 else f", {n} workers"


def prepare_background(args: argparse.Namespace, settings: Settings, rate: float,
                       sim_start_ms: int, speedup: float
                       ) -> list[tuple[str, bytes, bytes] | None]:
    """The background traffic of the phase, simulated, checked and encoded ahead.

    The same events ``touchpoint.sim.simulate.run`` would send at ``rate`` for
    ``--duration`` seconds (event times follow the schedule, not the clock), encoded as
    ``Publisher.publish`` encodes them: (topic, key, value), or None where the contract
    refuses the event. Done before the phase so the load generator's CPU while it
    publishes is the sending alone (see ``--live-publisher``).
    """
    from touchpoint.exceptions import ContractError
    from touchpoint.publish import Publisher
    from touchpoint.sim.simulate import Simulator
    from touchpoint.streams.topics import TopicNames

    began = time.monotonic()
    topics = TopicNames.of(settings)
    simulator = Simulator(seed=args.sim_seed, customers=args.sim_customers,
                          start_ms=sim_start_ms, speedup=speedup)
    count = int(rate * args.duration)
    records: list[tuple[str, bytes, bytes] | None] = []
    with Publisher.from_settings(settings, create_topics=False) as publisher:
        encode = getattr(publisher, "encode", None) or _publisher_encode(settings)
        for sim_event in itertools.islice(simulator.events(rate=rate), count):
            try:
                value, key = encode(sim_event.channel, sim_event.event)
            except ContractError:
                records.append(None)
                continue
            records.append((topics.channel(sim_event.channel), key, value))
    log(f"  prepared {count:,} background events in {time.monotonic() - began:.1f} s "
        "(simulated, checked, encoded; sent with aiokafka during the phase)")
    return records


def _publisher_encode(settings: Settings) -> Callable[[str, Mapping[str, Any]],
                                                      tuple[bytes, bytes]]:
    """``Publisher.encode`` for a ``--code`` commit from before it existed (same steps)."""
    from touchpoint.exceptions import ContractError
    from touchpoint.schemas.codec import codec_for
    from touchpoint.schemas.contract import CHANNELS, COMMON_FIELDS, check, routing_key

    def encode(channel: str, event: Mapping[str, Any]) -> tuple[bytes, bytes]:
        problem = check(channel, event, strict=True)
        if problem is not None:
            raise ContractError(problem.reason, problem.code)
        record = {name: event.get(name) for name in (*COMMON_FIELDS, *CHANNELS[channel].fields)}
        record["attributes"] = dict(event.get("attributes") or {})
        return codec_for(channel).encode(record), routing_key(event, settings.phone_region)

    return encode


def harness_cpus(spec: str) -> set[int] | None:
    """The CPUs ``--harness-cpus`` confines the broker and this process to; None: not confined.

    Raises ValueError, saying why, for a spec that is not ``all``, ``auto`` or some but
    not all of the CPUs this process may use.
    """
    usable = set(ALL_CPUS)
    if spec == "all":
        return None
    if spec == "auto":
        return {max(usable)} if len(usable) >= 2 else None
    try:
        chosen = {int(part) for part in spec.split(",") if part.strip()}
    except ValueError:
        raise ValueError("give CPU numbers like 1 or 2,3, or auto, or all") from None
    if not chosen or not chosen <= usable or chosen == usable:
        raise ValueError(f"choose some, not all, of the CPUs this process may use "
                         f"({sorted(usable)})")
    return chosen


def set_cpus(pid: int, cpus: set[int]) -> None:
    """Let every thread of process ``pid`` run on ``cpus`` only (threads it starts inherit)."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return  # exited
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(tid, cpus)


def run_latency_phase(args: argparse.Namespace, base: Path, run_tag: str, rate: float,
                      name: str, broker_pid: int | None) -> PhaseResult:
    from touchpoint.exceptions import ContractError
    from touchpoint.publish import Publisher
    from touchpoint.sim.simulate import Simulator, run
    from touchpoint.streams.topics import TopicNames

    result = PhaseResult(rate=rate, duration=args.duration, customers=args.sim_customers,
                         workers=args.workers)
    group = Group.make(base, kafka_port=args.kafka_port, partitions=args.partitions,
                       run_tag=run_tag, name=name, size=args.workers)
    if len(group) == 1:
        worker = group.workers[0]
        log(f"LATENCY at {rate:,.0f} events/s: starting worker (port {worker.port}, "
            f"log {worker.log_path}) ...")
    else:
        log(f"LATENCY at {rate:,.0f} events/s{workers_text(len(group))}: starting them in "
            f"consumer group {group.settings.app_id} ...")
        for worker in group.workers:
            log(f"  worker {worker.name}: port {worker.port}, log {worker.log_path}")
    confined = args.harness
    if confined is not None:
        # a worker runs on the CPUs of the thread that starts it: all of them
        set_cpus(os.getpid(), set(ALL_CPUS))
    group.start()
    if confined is not None:
        for pid in (broker_pid, os.getpid()):
            if pid:
                set_cpus(pid, confined)
        result.confined = (sorted(confined), sorted(ALL_CPUS - confined))
    settings = group.settings
    result.group = settings.app_id
    topics = TopicNames.of(settings)
    bootstrap = settings.kafka_servers
    stop = threading.Event()
    sent = [0]
    plants_sent = [0]
    tips: dict[str, Tip] = {}
    by_customer: dict[str, Tip] = {}
    lock = threading.Lock()

    # Warm up: one event through every stage, so the first tips do not pay for the
    # worker's partition assignment.
    with Publisher.from_settings(settings) as warm:
        warm.publish("web", time_passes(int(time.time() * 1000), 1, f"{run_tag}w")[0][1])
    if wait_processed(group, 1, timeout=120) is None:
        raise SystemExit(("the worker" if len(group) == 1 else "the workers")
                         + " did not apply a first event in 120 s:\n"
                         + "\n".join(w.log_tail() for w in group.workers))
    if len(group) == 1:
        log(f"  worker ready after {group.startup:.1f} s (first event applied)")
    else:
        # Members that joined late rebalance the group: let that end before measuring.
        settled = group.wait_healthy(timeout=120)
        log(f"  {len(group)} workers ready after {group.startup:.1f} s (each answered "
            "/status; first event applied by the group; "
            + ("no rebalance under way, /health)" if settled else
               "WARNING: still recovering or rebalancing after 120 s, /health)"))
    reader = SignalReader(bootstrap, topics.signals)
    probe = LagProbe(bootstrap, settings.app_id, {
        "inbound": list(topics.inbound),
        "internal": [topics.unresolved, topics.resolved]})
    signal_records = [0]

    def read_signals() -> None:
        while not stop.is_set():
            for arrived, record in reader.poll(50):
                signal_records[0] += 1
                with lock:
                    owner = by_customer.get(record["customer_id"])
                    if owner is not None and owner.watch_seen is None:
                        owner.watch_seen = arrived
                    if record["severity"] not in ALARMS:
                        continue
                    for event_id in record.get("evidence_event_ids") or ():
                        tip = tips.get(event_id)
                        if tip is not None and tip.seen is None:
                            tip.seen = arrived
                            tip.emitted_ms = to_ms(record["emitted_at"])
                            tip.severity = record["severity"]

    sim_start_ms = int(time.time() * 1000)
    speedup = 60.0
    began = [0.0]

    def sim_now_ms() -> int:
        return sim_start_ms + int((time.time() - began[0]) * speedup * 1000)

    publishers_left = [2]  # background() and planter()

    def publisher_done() -> None:
        """Each publishing thread's last act: the last one marks the CPU used so far."""
        with lock:
            publishers_left[0] -= 1
            last = publishers_left[0] == 0
        if last:
            result.cpu_publishing = CpuMark.take(broker_pid, group).since(cpu_began)

    def background() -> None:
        try:
            publish_background()
        finally:
            publisher_done()

    def publish_background() -> None:
        if prepared is not None:
            asyncio.run(send_prepared(prepared))
            result.publish_s = time.monotonic() - began_mono
            return
        simulator = Simulator(seed=args.sim_seed, customers=args.sim_customers,
                              start_ms=sim_start_ms, speedup=speedup)
        with Publisher.from_settings(settings, create_topics=False) as publisher:
            def send(sim_event: Any) -> None:
                if stop.is_set():
                    raise KeyboardInterrupt
                try:
                    publisher.publish(sim_event.channel, sim_event.event)
                except ContractError:
                    return

            def progress(count: int) -> None:
                sent[0] = count

            with contextlib.suppress(KeyboardInterrupt):  # stopped early
                sent[0] = run(simulator, send, rate=rate, duration=args.duration,
                              progress=progress)
            result.publish_s = time.monotonic() - began_mono
        # leaving the block flushed the producer: everything sent is acknowledged

    async def send_prepared(records: list[tuple[str, bytes, bytes] | None]) -> None:
        """Send prepared records on their schedule (event i at start + i / rate), as run()."""
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=",".join(bootstrap), acks="all",
                                    linger_ms=20, max_batch_size=256 * 1024)
        await producer.start()
        futures = []
        try:
            start = time.monotonic()
            for i, record in enumerate(records):
                if stop.is_set():
                    break
                delay = start + i / rate - time.monotonic()
                if delay >= 0.002:
                    await asyncio.sleep(delay)
                if record is not None:  # None: an event the contract refused (not sent)
                    topic, key, value = record
                    futures.append(await producer.send(topic, value, key=key))
                sent[0] = i + 1
            await producer.flush()
        finally:
            await producer.stop()
        failed = sum(1 for f in futures if f.done() and f.exception() is not None)
        if failed:
            log(f"  WARNING: {failed:,} background events were not delivered")

    def planter() -> None:
        try:
            plant_tips()
        finally:
            publisher_done()

    def plant_tips() -> None:
        # linger 0: a tip goes out at once, not with the next batch
        with Publisher.from_settings(settings, create_topics=False,
                                     producer_config={"linger_ms": 0}) as publisher:
            usable = max(args.duration - args.warmup - args.gap, 1.0)
            step = usable / max(args.tips, 1)
            plan: list[tuple[float, int, str]] = []
            for i in range(args.tips):
                at = began_mono + args.warmup + i * step
                plan += [(at, i, "history"), (at + args.gap, i, "tip")]
            plan.sort()
            planted: list[Tip] = []
            for due, i, what in plan:
                while not stop.is_set() and time.monotonic() < due:
                    time.sleep(min(0.01, max(due - time.monotonic(), 0)))
                if stop.is_set():
                    return
                if what == "history":
                    # the tip is dated `gap` later in simulated time than its history
                    tip = plant(f"TIP{run_tag}{name[-4:]}-{i:04d}", ("call", "rating")[i % 2],
                                sim_now_ms() - 2 * HOUR_MS,
                                2 * HOUR_MS + int(args.gap * speedup * 1000))
                    planted.append(tip)
                    with lock:
                        by_customer[tip.customer_id] = tip
                        tips[tip.tip_id] = tip
                    publisher.publish(*tip.history)
                    publisher.flush()
                    tip.history_published = time.time()
                else:
                    tip = planted[i]
                    tip.published = time.time()
                    publisher.publish(*tip.tip)
                    publisher.flush()
                    tip.acked = time.time()
                plants_sent[0] += 1

    prepared = None if args.live_publisher else prepare_background(
        args, settings, rate, sim_start_ms, speedup)
    result.prepared = prepared is not None
    result.load = (load_text(), "")
    sched_began = group.schedstat()
    cpu_began = CpuMark.take(broker_pid, group)
    began_mono = time.monotonic()
    began[0] = time.time()
    threads = [threading.Thread(target=read_signals, name="signals", daemon=True),
               threading.Thread(target=background, name="background", daemon=True),
               threading.Thread(target=planter, name="planter", daemon=True)]
    for thread in threads:
        thread.start()
    applied_at_start: tuple[float, int] | None = None
    applied_at_end: tuple[float, int] | None = None
    next_line = began_mono
    drain_from: float | None = None
    try:
        while True:
            tick = time.monotonic()
            progress = group.progress(timeout=3)
            lag = probe.lag()
            elapsed = tick - began_mono
            published = sent[0] + plants_sent[0] + 1  # + the warm-up event
            if progress is not None:
                result.samples.append((elapsed, published, progress.applied, lag))
                if applied_at_start is None and elapsed >= args.warmup:
                    applied_at_start = (elapsed, progress.applied)
                if tick >= next_line:
                    next_line = tick + 5
                    matched = sum(t.seen is not None for t in tips.values())
                    lag_text = (f"lag n/a ({probe.error})" if lag is None else
                                f"lag inbound {lag['inbound']:,} internal {lag['internal']:,}")
                    rate_now = sent[0] / max(elapsed, 1e-6)
                    log(f"  {elapsed:6.1f}s  sent {published:>9,} ({rate_now:,.0f}/s)"
                        f"  ingested {progress.ingested:>9,}  resolved {progress.resolved:>9,}"
                        f"  applied {progress.applied:>9,}  backlog "
                        f"{published - progress.applied:>8,}  {lag_text}  tips "
                        f"{matched}/{len(tips)}")
            dead = group.dead()
            if dead is not None:
                who = "the worker" if len(group) == 1 else f"worker {dead.name}"
                log(f"  {who} died:\n{dead.log_tail()}")
                break
            publishing = threads[1].is_alive() or threads[2].is_alive()
            if not publishing and drain_from is None:
                drain_from = tick
                if progress is not None:
                    result.backlog_at_end = published - progress.applied
                    applied_at_end = (elapsed, progress.applied)
                log(f"  publishing done at {elapsed:.1f} s; waiting up to "
                    f"{args.drain_timeout:.0f} s for the remaining tips")
            if drain_from is not None:
                pending = [t for t in tips.values() if t.seen is None]
                if not pending or tick - drain_from >= args.drain_timeout:
                    result.drain_waited = tick - drain_from
                    break
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        result.interrupted = True
        log("  interrupted: reporting what was measured")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        reader.close()
        probe.close()
        figures = [(w.name, *w.cpu_rss()) for w in group.workers]
        result.wall = time.monotonic() - began_mono
        result.cpu_phase = CpuMark.take(broker_pid, group).since(cpu_began)
        result.bench_cpu = result.cpu_phase.bench
        result.load = (result.load[0], load_text())
        sched_end = group.schedstat()
        if sched_began is not None and sched_end is not None:
            result.sched = (sched_end[0] - sched_began[0], sched_end[1] - sched_began[1],
                            sched_end[2] - sched_began[2], sched_end[3] - sched_began[3])
        stopped = group.stop()
        result.members = [(*figure, how) for figure, how in zip(figures, stopped, strict=True)]
    result.sent = sent[0]
    result.tips = sorted(tips.values(), key=lambda t: t.customer_id)
    result.signal_records = signal_records[0]
    if applied_at_start and applied_at_end and applied_at_end[0] > applied_at_start[0]:
        result.throughput = ((applied_at_end[1] - applied_at_start[1])
                             / (applied_at_end[0] - applied_at_start[0]))
    last = result.samples[-1] if result.samples else None
    if applied_at_end and last is not None and last[0] > applied_at_end[0] + 5:
        result.drain_throughput = (last[2] - applied_at_end[1]) / (last[0] - applied_at_end[0])
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (values sorted; inf stands for "never seen")."""
    rank = max(math.ceil(q / 100 * len(values)), 1)
    return values[rank - 1]


def fmt_latency(value: float, waited: str) -> str:
    return f"> {waited} (unmatched)" if math.isinf(value) else f"{value:.3f} s"


def report_latency(result: PhaseResult, args: argparse.Namespace, note: str = "") -> None:
    tips = result.tips
    published = [t for t in tips if t.published is not None]
    matched = [t for t in published if t.seen is not None]
    waited = f"{result.drain_waited:.0f} s after publishing ended"
    log("")
    log("=" * 78)
    log(f"signals benchmark: LATENCY at {result.rate:,.0f} events/s"
        f"{workers_text(result.workers)}{note}")
    log("=" * 78)
    achieved = result.sent / result.publish_s if result.publish_s else 0.0
    how = ("prepared before the phase, sent with aiokafka" if result.prepared else
           "simulated, checked and encoded as sent, Publisher (kafka-python)")
    log(f"background traffic    {result.sent:,} simulated events in {result.publish_s:.1f} s = "
        f"{achieved:,.0f} events/s achieved (target {result.rate:,.0f}; seed {args.sim_seed}, "
        f"{result.customers:,} CRM customers, speedup 60; {how})")
    kinds = Counter(t.kind for t in published)
    log(f"tips planted          {len(published)} (" + ", ".join(
        f"{n} {k}" for k, n in sorted(kinds.items())) + f"), each {args.gap:g} s after its "
        f"history; matched {len(matched)} (a high/critical record with the tip in its "
        "evidence)")
    watch_first = sum(t.watch_seen is not None and t.published is not None
                      and t.watch_seen <= t.published for t in published)
    log(f"history first         the history's watch was read before its tip was published "
        f"for {watch_first} of {len(published)}")
    if published:
        lat = sorted([t.latency for t in matched if t.latency is not None]
                     + [math.inf] * (len(published) - len(matched)))
        log(f"tip -> signal         p50 {fmt_latency(percentile(lat, 50), waited)}   "
            f"p99 {fmt_latency(percentile(lat, 99), waited)}   "
            f"max {fmt_latency(lat[-1], waited)}   "
            f"(publish() call -> record read from signals.complaints, wall clock)")
        if matched:
            pipeline = sorted(t.emitted_ms / 1000 - (t.published or 0) for t in matched
                              if t.emitted_ms is not None)
            delivery = sorted((t.seen or 0) - t.emitted_ms / 1000 for t in matched
                              if t.emitted_ms is not None)
            ack = sorted((t.acked or 0) - (t.published or 0) for t in matched)
            log(f"  of which            publish->broker ack p50 {percentile(ack, 50):.3f} s; "
                f"publish->emitted_at (worker) p50 {percentile(pipeline, 50):.3f} s, "
                f"p99 {percentile(pipeline, 99):.3f} s; emitted_at->read p50 "
                f"{percentile(delivery, 50):.3f} s, p99 {percentile(delivery, 99):.3f} s")
            severities = Counter(t.severity for t in matched)
            log(f"  severity reached    {dict(severities)}")
    alone = result.workers == 1
    together = "" if alone else f" (the {result.workers} workers together)"
    backlog = [(t, pub - applied) for t, pub, applied, _ in result.samples]
    if backlog:
        peak = max(backlog, key=lambda x: x[1])
        log(f"{'worker backlog' if alone else 'workers backlog':<22}published - applied to "
            f"profiles{together}: at end of publishing "
            f"{result.backlog_at_end if result.backlog_at_end is not None else 'n/a'}, "
            f"max {peak[1]:,} (t={peak[0]:.0f} s)")
        picks = [backlog[min(len(backlog) - 1, round(i * (len(backlog) - 1) / 6))]
                 for i in range(7)]
        log("  over the run        " + ", ".join(f"t={t:.0f}s {b:,}" for t, b in picks))
    lags = [(t, lag) for t, _, _, lag in result.samples if lag is not None]
    if lags:
        inbound = max(lags, key=lambda x: x[1]["inbound"])
        internal = max(lags, key=lambda x: x[1]["internal"])
        log(f"consumer lag          group {result.group}: committed offsets (committed "
            f"every 1 s or 1,000 records, so +-): inbound topics max "
            f"{inbound[1]['inbound']:,} (t={inbound[0]:.0f} s), last "
            f"{lags[-1][1]['inbound']:,}; unresolved+resolved max "
            f"{internal[1]['internal']:,}, last {lags[-1][1]['internal']:,}")
    if result.throughput is not None:
        log(f"{'worker throughput' if alone else 'workers throughput':<22}"
            f"{result.throughput:,.0f} events/s applied to profiles{together} "
            "between the end of warm-up and the end of publishing"
            + ("" if result.drain_throughput is None else
               f"; {result.drain_throughput:,.0f} events/s after it (draining the backlog)"))
    log(f"kept up               {'yes' if result.kept_up else 'NO'} (backlog at the end of "
        f"publishing {'<=' if result.kept_up else '>'} 2 s of traffic)")
    wall = max(result.wall, 1e-9)
    if alone:
        log(f"worker                CPU {result.worker_cpu or 0:,.0f} s (incl. start-up) over "
            f"{wall:,.0f} s of the phase (~{100 * (result.worker_cpu or 0) / wall:.0f}% of a "
            f"core), peak RSS {(result.worker_hwm or 0) / MIB:,.0f} MiB; {result.stopped}")
    else:
        log(f"workers               {result.workers} in consumer group {result.group}: CPU "
            f"{result.worker_cpu or 0:,.0f} s in all (incl. start-up) over {wall:,.0f} s of the "
            f"phase (~{100 * (result.worker_cpu or 0) / wall:.0f}% of a core)")
        for name, cpu, hwm, stopped in result.members:
            log(f"  {name:<20}CPU {cpu or 0:,.0f} s, peak RSS {(hwm or 0) / MIB:,.0f} MiB; "
                f"{stopped}")
    log(f"this process          CPU {result.bench_cpu:,.0f} s (simulator, publishers, signal "
        f"reader: ~{100 * result.bench_cpu / wall:.0f}% of a core); {result.signal_records:,} "
        "signal records read in all")
    phase = result.cpu_phase
    if phase is not None and phase.broker is not None:
        log(f"kafka broker          CPU {phase.broker:,.0f} s over {wall:,.0f} s of the phase "
            f"(~{100 * phase.broker / wall:.0f}% of a core; /proc/<pid>/stat utime+stime)")
    else:
        log("kafka broker          CPU n/a (its pid or /proc entry was not readable)")
    log(cpu_sharing(result.cpu_publishing, alone))
    log(f"machine               {result.load[0]} at the start, {result.load[1]} at the end; "
        "2 cores shared with other jobs")
    if result.confined is not None:
        on, others = (",".join(map(str, cpus)) for cpus in result.confined)
        log(f"                      the broker and this process ran on CPU {on} only "
            f"(--harness-cpus); the {'worker' if alone else 'workers'} on every CPU, CPU "
            f"{others} to {'itself' if alone else 'themselves'}")
    else:
        log("                      the broker, this process and the "
            f"{'worker' if alone else 'workers'} shared every CPU (--harness-cpus all)")
    if result.sched is not None:
        whose = "worker's" if alone else "workers'"
        log(f"                      in the phase the {whose} threads "
            f"ran {result.sched[0]:,.0f} s on a CPU and waited {result.sched[1]:,.0f} s "
            "runnable for one (schedstat: CPU contention)")
        log(f"                      of which the main threads (event loop and stages) "
            f"ran {result.sched[2]:,.1f} s ({100 * result.sched[2] / wall:.0f}% of the "
            f"phase{'' if alone else ', summed'}) and waited {result.sched[3]:,.1f} s")
    if result.interrupted:
        log("INTERRUPTED: figures are partial")
    log("=" * 78)


def cpu_sharing(used: CpuMark | None, alone: bool) -> str:
    """How the cores were shared while publishing: workers, broker, this process, the rest."""
    label = "CPU while publishing  "
    if used is None or used.at <= 0:
        return f"{label}n/a (publishing did not end)"
    cores = os.cpu_count() or 1
    parts = []
    for name, seconds in (("the worker" if alone else "the workers", used.workers),
                          ("the Kafka broker", used.broker),
                          ("this process (load generator)", used.bench)):
        parts.append(f"{name} n/a" if seconds is None else
                     f"{name} {seconds:,.1f} s (~{100 * seconds / used.at:.0f}% of a core)")
    known = sum(v for v in (used.workers, used.broker, used.bench) if v is not None)
    return (f"{label}{used.at:,.1f} s x {cores} cores = {used.at * cores:,.1f} CPU-s: "
            + ", ".join(parts) + f"; {used.at * cores - known:,.1f} CPU-s left (other jobs, "
            "idle)")


#: Records produced per background event in the broker warm-up: a worker sends about this
#: many per event it applies (unresolved, resolved, two table changelogs, profile update).
WARM_RECORDS_PER_EVENT = 5


def warm_broker(settings: Settings, seconds: float, records_per_s: float,
                broker_pid: int | None, tag: str) -> None:
    """Produce, fetch and commit through the broker, so its JIT compiler is done before the phase.

    A freshly started broker spends its first minute of load compiling: in a cold
    2,000 events/s phase on this 2-core machine it took ~75 % of a core in the first
    five seconds and 39-41 % over 40 s, against 22-30 % once warm, and the worker's main
    thread waited for a core meanwhile (p99 2.6-3.9 s cold, 0.41 and 0.58 s in the first
    warm runs). A production broker runs for months, so a steady-state
    measurement starts with a warm one. The load is a worker's kind (acks=all produce
    with a short linger, fetches that wait for a batch, a consumer group committing every
    second) on a topic of its own (``settings``' broker and partitions; it stays in the
    run's broker, whose folder the run removes unless --keep). The broker's CPU is
    printed every 5 s so it shows it settled.
    """
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from touchpoint.streams.topics import ensure_topics

    topic = f"bench-warmup-{tag}"
    servers = ",".join(settings.kafka_servers)

    def broker_cpu() -> float | None:
        return pb.proc_cpu_seconds(broker_pid) if broker_pid else None

    async def run() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=servers, group_id=f"{topic}-group",
            auto_offset_reset="earliest", fetch_max_wait_ms=20, fetch_min_bytes=64 * 1024,
            enable_auto_commit=True, auto_commit_interval_ms=1000)
        await producer.start()
        await consumer.start()
        received = [0]
        done = asyncio.Event()

        async def consume() -> None:
            while not done.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                received[0] += sum(len(records) for records in batches.values())

        reader = asyncio.ensure_future(consume())
        value = os.urandom(200).hex().encode()  # ~400 bytes, like an encoded event
        sent = 0
        try:
            start = time.monotonic()
            mark = (start, broker_cpu())
            while (now := time.monotonic()) < start + seconds:
                due = int((now - start) * records_per_s)
                for i in range(sent, due):
                    await producer.send(topic, value, key=str(i).encode())
                sent = max(sent, due)
                if now - mark[0] >= 5:
                    cpu = broker_cpu()
                    if cpu is not None and mark[1] is not None:
                        share = 100 * (cpu - mark[1]) / (now - mark[0])
                        log(f"  {now - start:5.0f} s  broker CPU {share:3.0f}% of a core; "
                            f"{sent:,} records sent, {received[0]:,} read")
                    mark = (now, cpu)
                await asyncio.sleep(0.005)
            await producer.flush()
        finally:
            done.set()
            await reader
            await consumer.stop()
            await producer.stop()
        return sent, received[0]

    log(f"warming the broker: {seconds:.0f} s of {records_per_s:,.0f} records/s produced and "
        f"read back (topic {topic}; --broker-warmup 0 skips this) ...")
    began = time.monotonic()
    ensure_topics(settings, [topic])
    # A broker started seconds ago may not have a group coordinator yet; aiokafka logs
    # every retry of that as an error. It retries until there is one.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        sent, received = asyncio.run(run())
    finally:
        quiet.setLevel(level)
    log(f"  broker warmed in {time.monotonic() - began:.0f} s: {sent:,} records sent, "
        f"{received:,} read")


def run_latency(args: argparse.Namespace, base: Path, run_tag: str, kafka: pb.Kafka) -> int:
    from touchpoint.settings import load_settings

    settings = load_settings({"TOUCHPOINT_HOME": str(base),
                              "TOUCHPOINT_KAFKA_BOOTSTRAP": f"127.0.0.1:{args.kafka_port}",
                              "TOUCHPOINT_TOPIC_PARTITIONS": str(args.partitions)})
    log(f"LATENCY: plants checked against the pure detector: {check_plants(settings)}")
    if args.broker_warmup > 0:
        warm_broker(settings, args.broker_warmup, WARM_RECORDS_PER_EVENT * args.rate,
                    kafka.pid, run_tag)
    else:
        log("broker warm-up skipped (--broker-warmup 0): the phase starts on a cold broker")
    first = run_latency_phase(args, base, run_tag, args.rate, f"lat{int(args.rate)}",
                              kafka.pid)
    report_latency(first, args)
    if first.kept_up or first.interrupted or args.fallback_rate == 0:
        return 0
    capacity = max(first.throughput or 0.0, first.drain_throughput or 0.0)
    if args.fallback_rate is not None:
        rate = args.fallback_rate
    else:
        rate = max(50.0, math.floor(0.6 * capacity / 50) * 50)
    log("")
    who, fresh, it = (("The worker", "a fresh worker", "it") if args.workers == 1 else
                      (f"The {args.workers} workers", f"{args.workers} fresh workers", "they"))
    log(f"{who} did not keep up with {args.rate:,.0f} events/s: measuring again with "
        f"{fresh} at {rate:,.0f} events/s"
        + ("" if args.fallback_rate is not None else
           f" (60 % of the {capacity:,.0f} events/s {it} applied at best, at least 50)"))
    second = run_latency_phase(args, base, run_tag, rate, f"lat{int(rate)}", kafka.pid)
    report_latency(second, args, note=f" (fallback: {args.rate:,.0f} events/s was not "
                                      "sustained)")
    return 0


# --- main --------------------------------------------------------------------------------

def export_code(rev: str, into: Path) -> tuple[Path, str]:
    """Export commit ``rev`` as an importable ``touchpoint`` package; return (root, label).

    Other engineers edit the working tree while a run takes many minutes; a commit stays
    put. The layout follows pyproject's package-dir: touchpoint/, with schemas/, streams/
    and sinks/ as its subpackages. Put first on sys.path (and as the worker's working
    folder) it shadows the editable install of the working tree.
    """
    def git(*cmd: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"git {' '.join(cmd)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    raw = into / "src"
    raw.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True,
                             check=True)
    subprocess.run(["tar", "-x", "-C", str(raw)], input=archive.stdout, check=True)
    root = into / "pkg"
    shutil.copytree(raw / "touchpoint", root / "touchpoint")
    for sub in ("schemas", "streams", "sinks"):
        shutil.copytree(raw / sub, root / "touchpoint" / sub)
    subject = git("log", "-1", "--format=%s", commit)
    return root, f"{commit[:7]} \"{subject}\" (exported with --code {rev}; working tree unused)"



def offline_only(args: argparse.Namespace) -> int:
    """The quality scenario through the pure detector in two orders, no Kafka."""
    from touchpoint.settings import load_settings
    from touchpoint.sim import scenarios
    from touchpoint.sim.signal_quality import evaluate

    log(f"REPLAY: the labelled scenario (seed {args.seed}, {args.customers:,} customers, "
        f"{args.days:g} days from {args.start.isoformat()})")
    scenario = scenarios.generate(seed=args.seed, customers=args.customers, start=args.start,
                                  days=args.days)
    replay_report(scenario, load_settings(create_secrets=False), evaluate,
                  skew_hours=args.skew_hours, seed=args.seed)
    return 0


def parse_start(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a UTC offset, e.g. 2026-11-02T00:00+00:00")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Early complaint signals through a real Kafka broker and touchpoint "
                    "workers: QUALITY (one worker; the labelled scenario's recall, lead time, "
                    "precision and false alarms, overall, by channel mix, tier and journey) "
                    "and LATENCY (one worker, or --workers N in one consumer group; publish "
                    "of a tipping event -> its signal on signals.complaints, under steady "
                    "background traffic, with the CPU of workers, broker and this process). "
                    "Starts its own Kafka on 127.0.0.1:29192 (controller 29193). Prints "
                    "figures; asserts nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("which", nargs="?", choices=("all", "quality", "latency", "replay"),
                        default="all",
                        help="which benchmark to run; replay: only the offline replay of the "
                             "quality scenario through the pure detector, in time order and "
                             "in bulk (no Kafka, seconds)")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--seed", type=int, default=7, help="scenario seed")
    quality.add_argument("--customers", type=int, default=3000, help="scenario customers")
    quality.add_argument("--days", type=float, default=28.0, help="scenario days")
    quality.add_argument("--start", type=parse_start, default=DEFAULT_START,
                         help="scenario start (ISO-8601 with offset)")
    quality.add_argument("--slice-hours", type=float, default=1.0,
                         help="publish this much event time at once, then wait until the "
                              "worker applied it (smaller is closer to live arrival order)")
    quality.add_argument("--slice-timeout", type=float, default=120.0,
                         help="seconds to wait for one slice before going on (with a warning)")
    quality.add_argument("--order", choices=("live", "bulk", "both"), default="live",
                         help="live: publish in time slices, each applied before the next "
                              "(events arrive in time order); bulk: everything at once, each "
                              "channel lagging by up to --skew-hours (a nightly upload, a "
                              "replay); both: one after the other, then side by side")
    quality.add_argument("--skew-hours", type=float, default=24.0,
                         help="bulk: the most one channel lags the others (default 24)")
    quality.add_argument("--bulk-timeout", type=float, default=3600.0,
                         help="bulk: seconds to wait for the whole load to be applied")
    quality.add_argument("--save-signals", type=Path, default=None, metavar="DIR",
                         help="write every signal record read, one JSON line each, to "
                              "DIR/signals-<order>.jsonl (for a closer look at a difference)")
    quality.add_argument("--no-replay", dest="replay", action="store_false",
                         help="skip the offline replay through the pure detector")
    latency = parser.add_argument_group("latency")
    latency.add_argument("--rate", type=float, default=2000.0,
                         help="background events/s (steady, paced like `touchpoint simulate "
                              "--rate`)")
    latency.add_argument("--duration", type=float, default=60.0,
                         help="seconds of background traffic")
    latency.add_argument("--tips", type=int, default=100, help="planted tipping customers")
    latency.add_argument("--gap", type=float, default=3.0,
                         help="wall seconds between a planted history and its tip")
    latency.add_argument("--warmup", type=float, default=10.0,
                         help="seconds of background traffic before the first plant")
    latency.add_argument("--broker-warmup", type=float, default=30.0,
                         help="seconds of produce and fetch load through the broker before "
                              "the phase, so a freshly started broker's JIT compiler does not "
                              "compete with the worker for the cores (0: start cold)")
    latency.add_argument("--harness-cpus", default="auto", metavar="CPUS",
                         help="CPUs the Kafka broker and this process (load generator, signal "
                              "reader) are confined to during a phase, as if they ran on "
                              "other machines: the worker keeps every CPU, and the others to "
                              "itself. auto: the last CPU, on a machine with two or more; "
                              "all: not confined; or a list such as 1 or 2,3")
    latency.add_argument("--drain-timeout", type=float, default=120.0,
                         help="after publishing, wait at most this long for unmatched tips")
    latency.add_argument("--fallback-rate", type=float, default=None,
                         help="rate to measure again at when the worker does not keep up "
                              "(default: 60%% of the best rate it applied events at, while "
                              "publishing or draining, rounded down to 50s, at least 50; "
                              "0: do not)")
    latency.add_argument("--workers", type=int, default=1,
                         help="touchpoint workers in the measured consumer group (same app id "
                              "and settings, each its own web port, log and chdb folder; Faust "
                              "spreads the --partitions over them); the fallback uses as many. "
                              "Counts, CPU and schedstat are summed over them")
    latency.add_argument("--sim-customers", type=int, default=100_000,
                         help="simulated CRM customers of the background traffic")
    latency.add_argument("--sim-seed", type=int, default=1, help="background simulator seed")
    latency.add_argument("--live-publisher", action="store_true",
                         help="simulate, check and encode each background event as it is sent, "
                              "through touchpoint's Publisher (kafka-python): ~37 %% of a core at "
                              "2,000/s on 2 cores, beside the worker. Default: prepared ahead, "
                              "sent with aiokafka (tips always go through Publisher.publish)")
    common = parser.add_argument_group("common")
    common.add_argument("--partitions", type=int, default=6,
                        help="TOUCHPOINT_TOPIC_PARTITIONS of the workers' topics")
    common.add_argument("--home", type=Path, default=None,
                        help="folder for Kafka data, workers and logs (default: a new "
                             "temporary folder)")
    common.add_argument("--kafka-port", type=int, default=29192, help="broker port")
    common.add_argument("--kafka-controller-port", type=int, default=29193,
                        help="KRaft controller port")
    common.add_argument("--code", metavar="REV", default=None,
                        help="run this commit (e.g. HEAD), exported to the run folder, in the "
                             "worker and in this process, instead of the working tree, which "
                             "others may be editing (default: the working tree)")
    common.add_argument("--set", type=pb.worker_setting, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a worker setting, e.g. --set signal_rules=my.toml for "
                             "TOUCHPOINT_SIGNAL_RULES (`touchpoint settings` lists them); "
                             "repeatable")
    common.add_argument("--keep", action="store_true",
                        help="leave Kafka running and keep the folder (data, worker logs)")
    args = parser.parse_args(argv)
    pb.refuse_reserved_ports(parser, args)
    if args.customers < 1 or args.days < 2 or args.slice_hours <= 0:
        parser.error("--customers must be 1 or more, --days 2 or more, --slice-hours above 0")
    if args.rate <= 0 or args.duration <= 0 or args.tips < 1 or args.gap <= 0:
        parser.error("--rate, --duration and --gap must be above 0, --tips 1 or more")
    if args.broker_warmup < 0:
        parser.error("--broker-warmup must be 0 or more")
    try:
        args.harness = harness_cpus(args.harness_cpus)
    except ValueError as exc:
        parser.error(f"--harness-cpus {args.harness_cpus!r}: {exc}")
    if args.duration <= args.warmup + args.gap:
        parser.error("--duration must be longer than --warmup plus --gap")
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pb.interrupt_on_signals()
    WORKER_SETTINGS.update(args.set)
    if args.which == "replay":
        return offline_only(args)
    made_home = args.home is None
    base = Path(tempfile.mkdtemp(prefix="signals-bench-")) if made_home \
        else args.home.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    run_tag = uuid.uuid4().hex[:6]
    kafka = pb.Kafka(base, args.kafka_port, args.kafka_controller_port)
    log(f"signals benchmark ({args.which}); folder {base}")
    if args.code is not None:
        root, label = export_code(args.code, base / "code")
        sys.path.insert(0, str(root))
        CODE.root, CODE.label = root, label
        log(f"code under test: {label}")
    if pb.port_open(args.kafka_port) and not (base / "run" / "kafka.pid").exists():
        raise SystemExit(f"127.0.0.1:{args.kafka_port} is already in use by another process; "
                         "stop it or pass --kafka-port")
    status = 0
    try:
        log(f"starting Kafka on 127.0.0.1:{args.kafka_port} ...")
        took = kafka.start()
        log(f"  Kafka {kafka.version()} ready in {took:.1f} s")
        if args.which in ("all", "quality"):
            results = {}
            for order in (("live", "bulk") if args.order == "both" else (args.order,)):
                code, report, signals = run_quality(args, base, run_tag, order)
                status = max(status, code)
                results[order] = (report, signals)
                if args.save_signals is not None:
                    args.save_signals.mkdir(parents=True, exist_ok=True)
                    path = args.save_signals / f"signals-{order}.jsonl"
                    path.write_text("".join(json.dumps(r, default=str) + "\n"
                                            for r in signals))
                    log(f"  {len(signals):,} signal records written to {path}")
            if len(results) > 1:
                compare_orders(results)
        if args.which in ("all", "latency"):
            status = max(status, run_latency(args, base, run_tag, kafka))
        log("")
        log("machine:")
        for fact in pb.machine_facts():
            log(f"  {fact}")
        log(f"  code under test: {CODE.label or pb.code_state()[0]}")
        return status
    except KeyboardInterrupt:
        log("interrupted")
        return 2
    finally:
        for worker in STARTED:
            if worker.alive():
                log(f"stopping worker {worker.name}: {worker.stop()}")
        if not args.keep:
            kafka.stop()
            if made_home:
                shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"--keep: Kafka left running on 127.0.0.1:{args.kafka_port}; folder {base}")


if __name__ == "__main__":
    sys.exit(main())
