"""Benchmark: how fast 1, 2, 3 ... workers drain a backlog, against what one process can read.

Not a test: it prints figures and asserts nothing about them. It answers three questions
about ``touchpoint worker`` working off a pre-loaded backlog:

* How many events a second do K workers of one consumer group store, from the moment
  they start until every event is in the warehouse and the group has committed every
  record of every topic it reads (lag 0)? Nothing is subtracted: startup, recovery and
  rebalancing are part of a drain.
* How does that compare with the floor a Python process meets anyway: reading the same
  inbound records with aiokafka (the client Faust uses) and doing nothing, or decoding
  each one with the project's codec as ingest does (``streams/rules/normalize.py``)?
* What does each event cost (CPU seconds per 1,000 events, all workers together), and how
  much memory does a worker hold (VmHWM), also with one customer far busier than the rest
  (``--hot-customer-events``) or with a million customers (``--memory``)?

What it does, in one command:

1. Starts its own single-node Kafka (KRaft, ``deploy/local/kafka.sh``) on 127.0.0.1:29392
   (controller 29393) and, for ``--warehouse server``, its own ClickHouse server
   (``deploy/local/clickhouse.sh``) on 29394 (HTTP 29395), both under a temporary
   TOUCHPOINT_HOME. Ports 9092/19092 and 9000/19000 (other engineers' services) are
   refused. The server is the default as soon as a K > 1 is asked for: embedded chdb can
   be opened by one process only.
2. For each K it makes a topic prefix, consumer group (``TOUCHPOINT_APP_ID``) and
   warehouse database of its own, creates the topics with ``--partitions`` partitions
   (``streams/topics.py`` ``ensure_topics``) and pre-loads the backlog: ``--events``
   events of the simulator's normal mix (``touchpoint.sim``) over ``--customers`` CRM
   customers, fixed seed and event-time origin, checked and encoded as ``Publisher``
   does (``touchpoint.publish.encode_event``) and produced with aiokafka. Every K gets
   the same records; a fresh prefix per K keeps one group's output topics (e.g.
   ``touchpoints.unresolved``, which every group of a prefix shares) out of the next
   group's input.
3. Once, on the first K's topics: the raw read rate (aiokafka consumer, manual
   assignment, every inbound partition from the beginning to its end offset, no work)
   and the read+decode rate (the same, each value decoded with
   ``touchpoint.schemas.codec``), in a child process under the same CPU quota as a
   worker when ``--cpu-quota`` is given, so the ratios compare like with like.
4. Starts K workers together: one port, log and TOUCHPOINT_HOME subfolder (RocksDB) each,
   one app id. With ``--cpu-quota Q`` each is moved, right after it is spawned, into a
   cgroup v1 cpu cgroup of its own (``/sys/fs/cgroup/cpu/touchpoint-bench-<i>``,
   cfs_quota_us = Q x cfs_period_us 100000); needs root. Every ``--poll`` seconds it asks
   the warehouse how many events are stored (rows of ``touchpoint_events_raw``, cheap
   enough to ask embedded chdb inside the worker under test; distinct event ids once the
   rows reach N) and the broker for the group's lag (committed offsets against end
   offsets of every topic the group reads, ``streams/ops/lag.py`` ``consumed_topics``),
   and reads each worker's CPU from ``/proc``; a progress line every ~2 s. Done when
   every event is stored and the lag is 0 everywhere.
5. Prints, per K: drain events/s from worker start, events/s from the first stored
   event, worker startup (launch until every worker answers ``/status``, with the
   bench's own API token), CPU seconds (utime + stime, every thread) per 1,000 events
   summed over the workers, each worker's main thread's share of its CPU (the event
   loop, where every stage runs: what bounds one worker), the seconds they were
   runnable but waited for a CPU (``/proc/<pid>/task/*/schedstat``: this machine is
   shared), each worker's garbage collections and their seconds per generation (its
   ``/metrics``; a collection stops the main thread), peak RSS (VmHWM) per
   worker, CFS throttling, the broker's and ClickHouse's CPU meanwhile, the ratios to the
   raw read and read+decode rates, the load average, and for K > 1 the speed-up over
   K = 1 of this run. Then a summary table of every K and the machine's facts (nproc,
   load average, ``git describe --dirty``; a warning when the code outside bench/
   changed during the run).

``--hot-customer-events M`` mixes M extra web page views of one CRM customer
(``--hot-customer``, default C000001) evenly through the traffic, dated with the
traffic around them. All of them share one partition on every hop, so the report says
when the rest of the traffic was stored and when the hot customer's was, and checks in
the warehouse that the customer's events number M plus its normal ones and that its
profile counted every one of them (contacts in ``customer_profiles``).

``--memory`` adds one web page view for every CRM customer the simulated traffic did not
name, so a worker holds at least ``--customers`` profiles; the report gives the profile
count, distinct customers stored and bytes of peak RSS per profile.

    .venv/bin/python bench/throughput_bench.py                       # 200,000 events, K=1
    .venv/bin/python bench/throughput_bench.py --events 20000 --customers 2500   # smoke
    .venv/bin/python bench/throughput_bench.py --workers 1,2,3 --cpu-quota 0.5
    .venv/bin/python bench/throughput_bench.py --hot-customer-events 50000
    .venv/bin/python bench/throughput_bench.py --customers 1000000 --memory --timeout 7200

Exit status: 0 when every K drained, 2 for a PARTIAL report (a K hit --timeout, a worker
died, or Ctrl-C/SIGTERM), 3 when every K drained but the hot customer's check failed, 1
when the set-up failed. Workers, Kafka and ClickHouse are
stopped, the cgroups removed and the temporary folder deleted at the end, also on
Ctrl-C; ``--keep`` leaves Kafka, ClickHouse and the folder (data, worker logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import profiles_bench as pb  # the sibling benchmark: machine facts, /proc and log helpers
from prometheus_client.parser import text_string_to_metric_families

from touchpoint import compiled

if TYPE_CHECKING:
    from touchpoint.settings import Settings

REPO = pb.REPO
LOCAL = REPO / "deploy" / "local"
# 2026-11-01T00:00:00Z, as profiles_bench.py: every run sends the same events.
DEFAULT_START_MS = pb.DEFAULT_START_MS
MIB = pb.MIB
# Other engineers' brokers and servers (and the local defaults): never ours.
RESERVED_PORTS = {9092, 9093, 19092, 19093, 9000, 8123, 19000, 18123}
CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 100_000
MIN_READ_SECONDS = 2.0  # the read floor is measured over at least this long
PII_SALT = "bench-salt-0123456789"
#: The worker's /metrics samples counting the garbage collector's work, per generation.
GC_SAMPLES = ("touchpoint_gc_collections_total", "touchpoint_gc_pause_seconds_total")
HOT_PREFIX = "hot-"  # event ids of the hot customer's extra page views
FILL_PREFIX = "fill-"  # event ids of --memory's one page view per customer not yet named
SITE = "https://shop.example.cn"


def log(message: str = "") -> None:
    print(message, flush=True)


def fmt_rate(count: int, seconds: float | None) -> str:
    return "n/a" if not seconds or seconds <= 0 else f"{count / seconds:,.0f} events/s"


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:,.1f} s"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of every thread, plus reaped children's (cutime + cstime)."""
    return None if pid is None else _clock_ticks(f"/proc/{pid}/stat", 4)


def main_thread_cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of the main thread alone: the event loop, where every stage runs.

    The other threads (the consumer's fetches, the warehouse writer, RocksDB's) mostly
    wait: this is the thread that bounds how fast one worker drains.
    """
    return None if pid is None else _clock_ticks(f"/proc/{pid}/task/{pid}/stat", 2)


def _clock_ticks(stat: str, count: int) -> float | None:
    """Seconds in the ``count`` CPU-time fields of a ``stat`` file from utime on."""
    try:
        with open(stat) as fh:
            fields_ = fh.read().rsplit(")", 1)[1].split()
        return sum(int(v) for v in fields_[11:11 + count]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_wait_seconds(pid: int | None) -> tuple[float, float] | None:
    """Seconds the main thread (the event loop: every stage) and all live threads together
    were runnable but waited for a CPU.

    Tells a worker held back by the machine's other load, or by its CFS quota, from one
    that was idle waiting for Kafka or the warehouse.
    """
    if pid is None:
        return None
    waited = main = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                value = int((task / "schedstat").read_text().split()[1])
                waited += value
                if task.name == str(pid):
                    main = value
    except OSError:
        return None
    return main / 1e9, waited / 1e9


def base_env() -> dict[str, str]:
    """The inherited environment without settings of ours (set explicitly below)."""
    return pb.base_env(("TOUCHPOINT_", "KAFKA_", "CLICKHOUSE_"))


def git_describe() -> str:
    out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--tags"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return out or "unknown (not a git checkout)"


# --- local services --------------------------------------------------------------------------

class Service:
    """Kafka or ClickHouse, started and stopped by its deploy/local script on our ports."""

    def __init__(self, name: str, script: str, home: Path, env: dict[str, str]) -> None:
        self.name, self.script, self.home = name, LOCAL / script, home
        self.env = {**base_env(), "TOUCHPOINT_HOME": str(home), **env}
        self.started = False

    def _run(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.script), action], env=self.env,
                              capture_output=True, text=True, check=False, timeout=timeout)

    def start(self) -> float:
        began = time.monotonic()
        self.started = True  # a half-started server is stopped too
        result = self._run("start", timeout=600)
        if result.returncode != 0:
            raise SystemExit(f"{self.script.name} start failed (exit {result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
        return time.monotonic() - began

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        result = self._run("stop", timeout=180)
        if result.returncode != 0:
            log(f"warning: {self.script.name} stop exited {result.returncode}: "
                f"{result.stderr.strip()}")

    @property
    def pid(self) -> int | None:
        try:
            return int((self.home / "run" / f"{self.name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


# --- cgroups ---------------------------------------------------------------------------------

class CpuCgroup:
    """One cgroup v1 cpu cgroup with a CFS quota: a worker limited to ``quota`` CPUs."""

    def __init__(self, name: str, quota: float) -> None:
        self.path = CGROUP_ROOT / name
        self.quota = quota

    def create(self) -> None:
        self.path.mkdir(exist_ok=True)  # left over from a killed run: reused
        (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(round(self.quota * CFS_PERIOD_US)))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> tuple[int, int, float] | None:
        """(periods, throttled periods, seconds throttled) since the cgroup was made."""
        try:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text()
                        .splitlines() if line.count(" ") == 1)
            return (int(stat["nr_periods"]), int(stat["nr_throttled"]),
                    int(stat["throttled_time"]) / 1e9)
        except (OSError, KeyError, ValueError):
            return None

    def remove(self) -> None:
        # The processes are gone, but the kernel may take a moment to let go of them.
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)
        log(f"warning: could not remove cgroup {self.path}")


CGROUPS: list[CpuCgroup] = []  # every cgroup made, removed at the end whatever happens


def make_cgroup(name: str, quota: float) -> CpuCgroup:
    group = CpuCgroup(name, quota)
    group.create()
    CGROUPS.append(group)
    return group


def drop_cgroup(group: CpuCgroup) -> None:
    group.remove()
    with contextlib.suppress(ValueError):
        CGROUPS.remove(group)


# --- the backlog -----------------------------------------------------------------------------

@dataclass
class Backlog:
    """The events published for every K, made afresh (and identically) from the seed."""

    events: int
    customers: int
    seed: int
    start_ms: int
    region: str
    hot_customer: str
    hot_events: int
    memory: bool
    # filled in by records(); the same after every pass
    simulated: int = 0  # simulated events sent (valid)
    refused: int = 0  # simulated events the contract refused (not sent)
    hot_sent: int = 0
    hot_direct: int = 0  # simulated events that name the hot customer's customer_id
    filled: int = 0  # --memory: one page view each for customers the traffic did not name

    @property
    def total(self) -> int:
        """Events published: what must end up stored."""
        return self.simulated + self.hot_sent + self.filled

    def records(self) -> Iterator[tuple[str, bytes, bytes]]:
        """(channel, value, key) of every event, checked and encoded as Publisher does."""
        from touchpoint.exceptions import ContractError
        from touchpoint.publish import encode_event
        from touchpoint.schemas.contract import parse_occurred_at
        from touchpoint.sim.simulate import Simulator

        self.simulated = self.refused = self.hot_sent = self.hot_direct = self.filled = 0
        named = bytearray(self.customers + 1) if self.memory else None
        stream = Simulator(seed=self.seed, customers=self.customers,
                           start_ms=self.start_ms).events()
        now_ms = self.start_ms
        sim = None
        try:
            for index in range(self.events):
                sim = next(stream)
                customer = sim.event.get("customer_id")
                if customer == self.hot_customer:
                    self.hot_direct += 1
                if named is not None and isinstance(customer, str):
                    number = _customer_number(customer)
                    if 0 < number <= self.customers:
                        named[number] = 1
                try:
                    value, key = encode_event(sim.channel, sim.event, region=self.region)
                except ContractError:
                    self.refused += 1
                else:
                    self.simulated += 1
                    yield sim.channel, value, key
                # Hot page views go out evenly through the traffic, dated with it.
                due = (index + 1) * self.hot_events // self.events
                if self.hot_sent < due:
                    parsed = parse_occurred_at(sim.event["occurred_at"])
                    now_ms = parsed if isinstance(parsed, int) else now_ms
                while self.hot_sent < due:
                    event = self._page_view(f"{HOT_PREFIX}{self.seed}-{self.hot_sent:08d}",
                                            self.hot_customer, now_ms, self.hot_sent)
                    self.hot_sent += 1
                    yield ("web", *encode_event("web", event, region=self.region))
        finally:
            stream.close()
        if named is not None:
            # dated after the last simulated event: live, they would come next
            parsed = parse_occurred_at(sim.event["occurred_at"]) if sim else None
            now_ms = parsed if isinstance(parsed, int) else now_ms
            for number in range(1, self.customers + 1):
                if not named[number]:
                    event = self._page_view(f"{FILL_PREFIX}{self.seed}-{number:08d}",
                                            f"C{number:06d}", now_ms + number, number)
                    self.filled += 1
                    yield ("web", *encode_event("web", event, region=self.region))

    @staticmethod
    def _page_view(event_id: str, customer_id: str, at_ms: int, n: int) -> dict[str, Any]:
        return {"event_id": event_id, "type": "page_view", "occurred_at": at_ms,
                "customer_id": customer_id, "session_id": f"s_bench{n // 20:08d}",
                "url": f"{SITE}/p/BE{n % 4000:05d}", "dwell_ms": 5000}


def _customer_number(customer_id: str) -> int:
    """1 for the simulator's C000001, ...; 0 for any other id."""
    if customer_id[:1] == "C" and customer_id[1:].isdigit():
        return int(customer_id[1:])
    return 0


def publish(backlog: Backlog, bootstrap: str, settings: Settings, label: str) -> float:
    """Produce the backlog to the inbound topics of ``settings``; return the seconds taken.

    Records go out in batches built here (aiokafka's ``create_batch``/``send_batch``),
    each to the partition Kafka's default partitioner gives its key, as ``Publisher``'s
    producer would: three times the rate of one ``send()`` a record, which matters for a
    million events.
    """
    from aiokafka import AIOKafkaProducer

    from touchpoint.streams.runtime.partition import key_partition
    from touchpoint.streams.topics import TopicNames, ensure_topics

    ensure_topics(settings)  # every topic and changelog, with --partitions
    names = TopicNames.of(settings)
    topic_of = {channel: names.channel(channel) for channel in names.inbound.values()}
    # Exact once the backlog was made; the first time, --memory's fill is not known yet.
    expected = f"{backlog.total:,}" if backlog.total else \
        f"~{backlog.events + backlog.hot_events:,}" + (" + fill" if backlog.memory else "")

    async def produce() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                    max_batch_size=256 * 1024)
        await producer.start()
        try:
            partitions = {t: sorted(await producer.partitions_for(t)) for t in topic_of.values()}
            batches: dict[tuple[str, int], Any] = {}
            pending: list[Any] = []
            sent = 0
            began = time.monotonic()
            next_line = began + 2.0

            async def flush(topic: str, partition: int) -> None:
                batch = batches.pop((topic, partition))
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                if len(pending) >= 64:  # bounded memory; errors surface here
                    await asyncio.gather(*pending)
                    pending.clear()

            for channel, value, key in backlog.records():
                topic = topic_of[channel]
                parts = partitions[topic]
                partition = key_partition(key, parts)
                batch = batches.get((topic, partition))
                if batch is None:
                    batch = batches[topic, partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    await flush(topic, partition)
                    batch = batches[topic, partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                sent += 1
                now = time.monotonic()
                if now >= next_line:
                    log(f"  publish {label}: {sent:>10,} of {expected}  "
                        f"{sent / max(now - began, 1e-9):>8,.0f} events/s")
                    next_line = now + 2.0
            for topic, partition in list(batches):
                await flush(topic, partition)
            await asyncio.gather(*pending)
            return sent
        finally:
            await producer.stop()

    began = time.monotonic()
    asyncio.run(produce())
    return time.monotonic() - began


# --- the read floor --------------------------------------------------------------------------

def measure_read_child(argv: Sequence[str]) -> int:
    """``--measure-read BOOTSTRAP PREFIX``: print the raw and read+decode rates as JSON.

    Runs in a child process, so it can share a worker's CPU quota; it starts measuring
    after a line on stdin (sent once it is in its cgroup).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from kafka import KafkaConsumer

    from touchpoint.schemas.codec import codec_for
    from touchpoint.streams.topics import TopicNames

    bootstrap, prefix = argv
    inbound = TopicNames(prefix).inbound  # topic -> channel
    codecs = {topic: codec_for(channel) for topic, channel in inbound.items()}
    lister = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = [TopicPartition(t, p) for t in inbound
                 for p in sorted(lister.partitions_for_topic(t) or ())]
    finally:
        lister.close()
    sys.stdin.readline()

    async def read(decode: bool) -> tuple[int, float]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            left = {tp for tp in parts if ends[tp] > 0}
            count = 0
            began = time.monotonic()
            while left:
                for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                    count += len(messages)
                    if decode:
                        codec = codecs[tp.topic]
                        for message in messages:
                            codec.decode(message.value, packed=False)  # as ingest does
                    if messages and messages[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
            return count, time.monotonic() - began
        finally:
            await consumer.stop()

    def passes(decode: bool) -> tuple[int, float, int]:
        # A small backlog reads in milliseconds: read it again (a fresh consumer each
        # time) until the measurement lasts long enough to mean something.
        count, seconds, rounds = 0, 0.0, 0
        while rounds == 0 or seconds < MIN_READ_SECONDS:
            n, s = asyncio.run(read(decode))
            count, seconds, rounds = count + n, seconds + s, rounds + 1
        return count, seconds, rounds

    print(json.dumps({"raw": passes(False), "decode": passes(True)}), flush=True)
    return 0


@dataclass
class ReadFloor:
    """Records read in total, seconds and passes over the inbound topics, raw and decoded."""

    raw: tuple[int, float, int]
    decode: tuple[int, float, int]
    quota: float | None = None

    @property
    def raw_rate(self) -> float:
        return self.raw[0] / self.raw[1] if self.raw[1] else 0.0

    @property
    def decode_rate(self) -> float:
        return self.decode[0] / self.decode[1] if self.decode[1] else 0.0


def measure_read(bootstrap: str, prefix: str, quota: float | None) -> ReadFloor:
    group = make_cgroup("touchpoint-bench-read", quota) if quota else None
    child = subprocess.Popen([sys.executable, __file__, "--measure-read", bootstrap, prefix],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=str(REPO), start_new_session=True)
    try:
        if group is not None:
            group.add(child.pid)
        out, _ = child.communicate("go\n", timeout=1800)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if group is not None:
            drop_cgroup(group)
    if child.returncode != 0:
        raise SystemExit(f"the read measurement failed (exit {child.returncode})")
    found = json.loads(out.strip().splitlines()[-1])
    raw, decoded = ((int(n), float(t), int(r)) for n, t, r in (found["raw"], found["decode"]))
    return ReadFloor(raw, decoded, quota)


# --- probes ----------------------------------------------------------------------------------

class LagProbe:
    """The group's lag per stage topic: end offsets minus committed offsets (kafka-python)."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        from touchpoint.streams.topics import TopicNames

        names = TopicNames.of(settings)
        try:  # the topics the workers' group reads, as the dashboard counts them
            from touchpoint.streams.ops.lag import consumed_topics
            self.topics = list(consumed_topics(names))
        except ImportError:  # moved: every topic of the pipeline nobody else reads
            self.topics = [t for t in names.all() if t != names.profiles]
        self.prefix, self.app_id = settings.topic_prefix, settings.app_id
        self.inbound = set(names.inbound)
        self.group = settings.app_id
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       request_timeout_ms=10000)
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        self._parts: list[Any] = []
        self.error: str | None = None

    def label(self, topic: str) -> str:
        if topic in self.inbound:
            return "inbound"
        name = topic.removeprefix(self.prefix).removeprefix("touchpoints.")
        return name.removeprefix(f"{self.app_id}-").removesuffix(".complaints")

    def lag(self) -> dict[str, int] | None:
        """Lag by stage label; None when the broker did not answer."""
        from kafka import TopicPartition

        try:
            committed = self._admin.list_group_offsets(self.group).get(self.group, {})
            if len(self._parts) == 0 or len({tp.topic for tp in self._parts}) < len(self.topics):
                self._parts = [TopicPartition(t, p) for t in self.topics
                               for p in sorted(self._consumer.partitions_for_topic(t) or ())]
            # a topic the group committed on that we did not know of counts too
            parts = set(self._parts) | {tp for tp in committed
                                        if tp.topic.startswith(self.prefix)}
            ends = self._consumer.end_offsets(list(parts))
        except Exception as exc:  # a missed sample, not a failed run
            self.error = f"{type(exc).__name__}: {exc}"
            return None
        out: dict[str, int] = {}
        for tp, end in ends.items():
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset is not None \
                and meta.offset >= 0 else 0
            label = self.label(tp.topic)
            out[label] = out.get(label, 0) + max(int(end) - done, 0)
        self.error = None
        return out

    def close(self) -> None:
        for client in (self._consumer, self._admin):
            with contextlib.suppress(Exception):
                client.close()


class WarehouseProbe:
    """SQL against one K's warehouse: a server directly, embedded chdb through worker 1."""

    def __init__(self, *, database: str, tcp_port: int | None, api: WorkerApi | None) -> None:
        self.database, self.tcp_port, self.api = database, tcp_port, api
        self._client: Any = None
        self.error: str | None = None

    def rows(self, sql: str, timeout: float = 120) -> list[Sequence[Any]] | None:
        """The result's rows; None (and :attr:`error`) when it failed, e.g. not migrated yet."""
        try:
            result = self.api.query(sql, timeout) if self.api is not None \
                else self._server().execute(sql, settings={"max_execution_time": int(timeout)})
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.disconnect()
                self._client = None
            return None
        self.error = None
        return list(result)

    def _server(self) -> Any:
        if self._client is None:
            from clickhouse_driver import Client

            self._client = Client(host="127.0.0.1", port=self.tcp_port, database=self.database,
                                  connect_timeout=5, send_receive_timeout=900)
        return self._client

    def stored(self, expected: int) -> tuple[int, int] | None:
        """Events stored, and how many of them are the hot customer's extra ones.

        Asked every --poll seconds, of embedded chdb inside the worker under test, so
        cheaply: row counts (the hot ones through the sorting key, event_id). Rows may
        repeat an event (a retried insert) until merged, so once they reach ``expected``
        the distinct events are counted.
        """
        total = self.rows("SELECT count() FROM touchpoint_events_raw", timeout=30)
        hot = self.rows("SELECT count() FROM touchpoint_events_raw "
                        f"WHERE event_id LIKE '{HOT_PREFIX}%'", timeout=30)
        if not total or not hot:
            return None
        count = int(total[0][0])
        if count >= expected:
            distinct = self.rows("SELECT uniqExact(event_id) FROM touchpoint_events_raw")
            if not distinct:
                return None
            count = int(distinct[0][0])
        return count, int(hot[0][0])

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()


class WorkerApi:
    """A worker's /status and /warehouse/query, with the bench's API token."""

    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def _read(self, path: str, data: bytes | None, timeout: float) -> bytes:
        request = urllib.request.Request(
            self.base + path, data=data, method="POST" if data is not None else "GET",
            headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return cast(bytes, response.read())

    def _call(self, path: str, data: bytes | None, timeout: float) -> Any:
        return json.loads(self._read(path, data, timeout))

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            body = self._call("/status", None, timeout)
        except (OSError, ValueError):  # not up yet, or busy past the timeout
            return None
        return body if isinstance(body, dict) else None

    def gc_pauses(self, timeout: float = 2.0) -> list[tuple[int, float]] | None:
        """The worker's garbage collections and their seconds, per generation (/metrics)."""
        try:
            return gc_pauses_of(self._read("/metrics", None, timeout).decode())
        except (OSError, ValueError):
            return None

    def query(self, sql: str, timeout: float) -> list[Sequence[Any]]:
        try:
            body = self._call("/warehouse/query", sql.encode(), timeout)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"HTTP {exc.code}: {exc.read()[:300]!r}") from None
        return [tuple(row) for row in body["rows"]]


def gc_pauses_of(metrics: str) -> list[tuple[int, float]] | None:
    """Collections and seconds per generation, 0 to 2, in a /metrics text; None if absent."""
    found = {(sample.name, sample.labels.get("generation")): sample.value
             for family in text_string_to_metric_families(metrics)
             for sample in family.samples if sample.name in GC_SAMPLES}
    collections, seconds = GC_SAMPLES
    try:
        return [(int(found[collections, g]), found[seconds, g]) for g in "012"]
    except KeyError:
        return None


# --- workers ---------------------------------------------------------------------------------

@dataclass
class Worker:
    """One ``touchpoint worker`` subprocess of the group under test."""

    name: str
    env: dict[str, str]
    log_path: Path
    api: WorkerApi
    cgroup: CpuCgroup | None = None
    process: subprocess.Popen[bytes] | None = None
    answered: float | None = None  # seconds from the group's launch to its first /status
    cpu_at_answer: float | None = None
    rss_at_answer: int | None = None  # what the worker holds before it holds any customer
    last_cpu: float = 0.0  # CPU seconds at the previous progress line, and when
    last_tick: float | None = None

    def launch(self) -> None:
        with self.log_path.open("ab") as fh:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchpoint.cli", "worker"], env=self.env,
                cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        STARTED.append(self)
        if self.cgroup is not None:
            # At once: the worker spends its first seconds importing, which must be
            # throttled like the rest of its life.
            self.cgroup.add(self.process.pid)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def cpu(self) -> float | None:
        return cpu_seconds(self.pid)

    def hwm(self) -> int | None:
        return None if self.pid is None else pb.proc_status(self.pid).get("VmHWM")

    def stop(self) -> str:
        if self.process is None:
            return "not started"
        return pb.stop_worker(self.process)

    def log_tail(self, lines: int = 20) -> list[str]:
        return pb.log_lines(self.log_path)[-lines:]


STARTED: list[Worker] = []  # every worker launched, stopped at the end whatever happens


def stop_workers(workers: Sequence[Worker]) -> list[str]:
    """Stop every worker at once: one stopping alone would hand its partitions over."""
    if not workers:
        return []
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        outcome = list(pool.map(Worker.stop, workers))
    for worker in workers:
        with contextlib.suppress(ValueError):
            STARTED.remove(worker)
    return outcome


# --- one K -----------------------------------------------------------------------------------

@dataclass
class KResult:
    k: int
    expected: int
    hot: int
    status: str = "not run"
    publish_s: float | None = None
    code: str = ""
    startup: float | None = None  # launch until every worker answered /status
    t_first: float | None = None  # first event stored
    t_stored: float | None = None  # every event stored
    t_done: float | None = None  # every event stored and lag 0
    t_inbound: float | None = None  # inbound topics fully committed
    t_rest: float | None = None  # every event but the hot customer's stored
    t_hot: float | None = None  # every one of the hot customer's extra events stored
    elapsed: float = 0.0  # last sample, seconds from launch
    stored: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    cpu: list[float | None] = field(default_factory=list)  # per worker, at the end
    cpu_startup: list[float | None] = field(default_factory=list)
    cpu_wait: list[tuple[float, float] | None] = field(default_factory=list)  # main, all
    cpu_main: list[float | None] = field(default_factory=list)  # the main thread's, per worker
    rss_startup: list[int | None] = field(default_factory=list)
    hwm: list[int | None] = field(default_factory=list)
    throttled: list[tuple[int, int, float] | None] = field(default_factory=list)
    broker_cpu: float | None = None
    clickhouse_cpu: float | None = None
    checks: list[str] = field(default_factory=list)
    profiles: int | None = None  # --memory: rows of customer_profiles
    check_failed: bool = False  # drained, but the warehouse disagrees with what was sent
    load: tuple[str, str] = ("", "")  # load average at worker start and at the end
    stopped: list[str] = field(default_factory=list)
    log_tails: dict[str, list[str]] = field(default_factory=dict)
    identity: dict[str, int] = field(default_factory=dict)  # /status counters, all workers
    linked_by: list[int | None] = field(default_factory=list)  # per worker: its link stage's
    gc: list[list[tuple[int, float]] | None] = field(default_factory=list)  # per worker, gen 0-2
    rebalances: dict[str, int] = field(default_factory=dict)  # consumer counters, all workers

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def rate(self) -> float | None:
        return self.expected / self.t_done if self.t_done else None

    @property
    def cpu_total(self) -> float | None:
        values = [v for v in self.cpu if v is not None]
        return sum(values) if values and len(values) == len(self.cpu) else None


@dataclass
class Bench:
    """What every K shares: options, services, folders and the backlog."""

    args: argparse.Namespace
    base: Path
    tag: str
    token: str
    kafka: Service
    clickhouse: Service | None
    backlog: Backlog
    floor: ReadFloor | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.args.kafka_port}"

    def settings_env(self, k: int) -> dict[str, str]:
        """The settings every worker of group K shares (the bench's own clients use them too)."""
        home = self.base / f"k{k}"
        if self.clickhouse is not None:
            url = f"clickhouse://127.0.0.1:{self.args.clickhouse_port}/{self.database(k)}"
        else:
            url = f"chdb://{home / 'chdb'}"
        return {
            "TOUCHPOINT_HOME": str(home),
            "TOUCHPOINT_KAFKA_BOOTSTRAP": self.bootstrap,
            "TOUCHPOINT_TOPIC_PREFIX": f"tpb{self.tag}k{k}.",
            "TOUCHPOINT_TOPIC_PARTITIONS": str(self.args.partitions),
            "TOUCHPOINT_APP_ID": f"tpb{self.tag}-k{k}",
            "TOUCHPOINT_CLICKHOUSE_URL": url,
            "TOUCHPOINT_PII_SALT": PII_SALT,
            "TOUCHPOINT_API_TOKENS": f"bench={self.token}",
            "TOUCHPOINT_API_TOKEN": self.token,
            # the end-of-run counts over a million profiles may take a while (chdb, HTTP)
            "TOUCHPOINT_QUERY_TIMEOUT_SECONDS": "300",
            "TOUCHPOINT_LOG_LEVEL": "warning",
            **{f"TOUCHPOINT_{name.upper()}": value for name, value in self.args.set},
        }

    def database(self, k: int) -> str:
        return f"tpb_{self.tag}_k{k}"


def make_workers(bench: Bench, k: int) -> list[Worker]:
    shared = bench.settings_env(k)
    ports: set[int] = set()
    while len(ports) < k:  # free_port() twice in a row may give the same port
        ports.add(pb.free_port())
    workers = []
    for i, port in enumerate(sorted(ports), start=1):
        home = Path(shared["TOUCHPOINT_HOME"]) / f"w{i}"  # RocksDB tables, one folder each
        home.mkdir(parents=True, exist_ok=True)
        # The warehouse URL stays the group's: embedded, the K's folder, not the worker's.
        env = {**base_env(), **shared, "TOUCHPOINT_HOME": str(home),
               "TOUCHPOINT_WEB_PORT": str(port)}
        cgroup = (make_cgroup(f"touchpoint-bench-{i}", bench.args.cpu_quota)
                  if bench.args.cpu_quota else None)
        workers.append(Worker(f"w{i}", env, bench.base / f"worker-k{k}-w{i}.log",
                              WorkerApi(port, bench.token), cgroup))
    return workers


def run_k(bench: Bench, k: int, baseline: KResult | None) -> KResult:
    """Publish the backlog for group K, drain it with K workers, report; return the result."""
    from touchpoint.settings import load_settings

    args, backlog = bench.args, bench.backlog
    env = bench.settings_env(k)
    settings = load_settings(env)
    result = KResult(k, 0, args.hot_customer_events)
    log("")
    log(f"=== K={k}: {k} worker{'s' if k > 1 else ''}, app id {settings.app_id}, topics "
        f"{settings.topic_prefix}*, warehouse {settings.warehouse} ===")
    before = backlog.total
    result.publish_s = publish(backlog, bench.bootstrap, settings, f"K={k}")
    if before and backlog.total != before:  # every K must drain the same backlog
        raise SystemExit(f"the backlog changed: {before:,} events, now {backlog.total:,}")
    result.expected = backlog.total
    log(f"  published {backlog.total:,} events in {result.publish_s:,.1f} s "
        f"({fmt_rate(backlog.total, result.publish_s)}, aiokafka, acks=all)")
    if bench.floor is None:
        quota = f" under a {args.cpu_quota:g}-CPU quota" if args.cpu_quota else ""
        log(f"  measuring the read floor on these inbound topics{quota} ...")
        bench.floor = measure_read(bench.bootstrap, settings.topic_prefix, args.cpu_quota)
        for name, (count, seconds, rounds), rate in (
                ("raw read:   ", bench.floor.raw, bench.floor.raw_rate),
                ("read+decode:", bench.floor.decode, bench.floor.decode_rate)):
            log(f"  {name} {count:,} records ({rounds} pass{'es' if rounds > 1 else ''}) in "
                f"{seconds:.2f} s = {rate:,.0f} records/s")

    workers = make_workers(bench, k)
    api = workers[0].api if bench.clickhouse is None else None
    store = WarehouseProbe(database=bench.database(k), tcp_port=args.clickhouse_port
                           if bench.clickhouse is not None else None, api=api)
    lag = LagProbe(bench.bootstrap, settings)
    result.code, fingerprint = pb.code_state()
    load_start = load_text()
    try:
        drain(bench, workers, store, lag, result)
        result.load = (load_start, load_text())
        now = pb.code_state()
        if fingerprint and now[1] != fingerprint:
            result.checks.append(f"WARNING: the code changed during the run (now {now[0]}); "
                                 "the workers ran it as it was at their start")
        if result.done:
            check_warehouse(bench, store, result)
    finally:
        result.stopped = stop_workers(workers)
        for worker in workers:
            if worker.cgroup is not None:
                drop_cgroup(worker.cgroup)
            if not result.done or result.check_failed:
                result.log_tails[worker.name] = worker.log_tail()
        lag.close()
        store.close()
    report_k(bench, result, baseline)
    return result


def drain(bench: Bench, workers: list[Worker], store: WarehouseProbe, probe: LagProbe,
          result: KResult) -> None:
    """Launch the workers and sample until every event is stored and the lag is 0."""
    args = bench.args
    broker_cpu0 = cpu_seconds(bench.kafka.pid)
    ch_cpu0 = cpu_seconds(bench.clickhouse.pid) if bench.clickhouse else None
    began = time.monotonic()
    # with --join-after, the first worker starts alone and the others join it mid-drain
    joining = list(workers[1:]) if args.join_after > 0 else []
    first = [w for w in workers if w not in joining]
    for worker in first:
        worker.launch()
    log(f"  launched {len(first)} worker(s): " + ", ".join(
        f"{w.name} pid {w.pid} port {w.api.base.rsplit(':', 1)[1]}" for w in first)
        + (f"; each in a cgroup with a {args.cpu_quota:g}-CPU quota" if args.cpu_quota else "")
        + (f"; {len(joining)} more join after {args.join_after:g} s" if joining else ""))
    header_every, lines = 15, 0
    next_line = began + args.progress
    last_line_t, last_stored = 0.0, 0
    inbound_seen = False
    try:
        while True:
            tick = time.monotonic()
            if joining and tick - began >= args.join_after:
                for worker in joining:
                    worker.launch()
                log(f"  {tick - began:6.1f}s joined: " + ", ".join(
                    f"{w.name} pid {w.pid}" for w in joining)
                    + " (the group rebalances while it drains)")
                joining = []
            dead = next((w for w in workers if w.exited() is not None), None)
            if dead is not None:
                result.status = f"worker {dead.name} exited with {dead.exited()}"
                break
            for worker in workers:  # startup: until each answers /status
                if worker.answered is None and worker.api.status(timeout=1.0) is not None:
                    worker.answered = time.monotonic() - began
                    worker.cpu_at_answer = worker.cpu()
                    worker.rss_at_answer = pb.proc_status(worker.pid or 0).get("VmRSS")
            if result.startup is None and all(w.answered is not None for w in workers):
                result.startup = max(w.answered or 0.0 for w in workers)
                log(f"  every worker answers /status after {result.startup:.1f} s")
            counts = store.stored(result.expected)
            lags = probe.lag()
            now = time.monotonic() - began
            result.elapsed = now
            if counts is not None:
                result.stored, hot = counts
                if result.t_first is None and result.stored > 0:
                    result.t_first = now
                if result.t_stored is None and result.stored >= result.expected:
                    result.t_stored = now
                if result.t_rest is None and result.stored - hot >= result.expected - result.hot:
                    result.t_rest = now
                if result.hot and result.t_hot is None and hot >= result.hot:
                    result.t_hot = now
            if lags is not None:
                result.lag = lags
                if lags.get("inbound", 0) > 0:
                    inbound_seen = True
                if inbound_seen and result.t_inbound is None and lags.get("inbound", 1) == 0:
                    result.t_inbound = now
            if result.t_stored is not None and lags is not None and sum(lags.values()) == 0:
                result.t_done = now
                result.status = "done"
            if tick >= next_line or result.done:
                if lines % header_every == 0:
                    cpu_head = "CPU % " + " ".join(w.name for w in workers)
                    log(f"  {'t':>7} {'stored':>10} {'%':>6} {'ev/s':>7}  "
                        f"{cpu_head:<{6 + 4 * len(workers)}} | lag of the group by stage topic")
                lines += 1
                rate = (result.stored - last_stored) / max(now - last_line_t, 1e-9)
                last_line_t, last_stored = now, result.stored
                log(f"  {now:6.1f}s {result.stored:>10,} "
                    f"{100 * result.stored / max(result.expected, 1):5.1f}% {rate:>7,.0f}  "
                    f"{cpu_text(workers, tick):<{6 + 4 * len(workers)}} | "
                    f"{lag_text(result.lag, lags is None)}")
                next_line = tick + args.progress
            if result.done:
                break
            if now >= args.timeout:
                result.status = f"TIMEOUT after {args.timeout:,.0f} s"
                break
            time.sleep(max(0.0, args.poll - (time.monotonic() - tick)))
    except KeyboardInterrupt:
        result.status = "INTERRUPTED"
        log("  interrupted: stopping and reporting what was reached")
    # The workers' figures at the end of the drain, before the checks that follow.
    result.cpu = [w.cpu() if w.exited() is None else None for w in workers]
    result.cpu_main = [main_thread_cpu_seconds(w.pid) if w.exited() is None else None
                       for w in workers]
    result.cpu_wait = [cpu_wait_seconds(w.pid) if w.exited() is None else None
                       for w in workers]
    result.hwm = [w.hwm() for w in workers]
    result.throttled = [w.cgroup.throttled() if w.cgroup else None for w in workers]
    result.cpu_startup = [w.cpu_at_answer for w in workers]
    result.rss_startup = [w.rss_at_answer for w in workers]
    # how identity resolved the events: from each worker's copy, or through the link stage
    for worker in workers:
        answer = worker.api.status(timeout=2.0) if worker.exited() is None else None
        identity: dict[str, Any] = (answer or {}).get("identity") or {}
        for name, count in identity.items():
            if isinstance(count, int):
                result.identity[name] = result.identity.get(name, 0) + count
        # the link stage's one partition runs on one worker: which one shows at K > 1
        result.linked_by.append(identity.get("linked", 0) if answer is not None else None)
        result.gc.append(worker.api.gc_pauses() if worker.exited() is None else None)
        for name in REBALANCE_COUNTERS:
            count = (answer or {}).get(name)
            if isinstance(count, int):
                result.rebalances[name] = result.rebalances.get(name, 0) + count
    if broker_cpu0 is not None:
        result.broker_cpu = (cpu_seconds(bench.kafka.pid) or broker_cpu0) - broker_cpu0
    if bench.clickhouse is not None and ch_cpu0 is not None:
        result.clickhouse_cpu = (cpu_seconds(bench.clickhouse.pid) or ch_cpu0) - ch_cpu0
    if store.error and not result.done:
        log(f"  last warehouse error: {store.error}")
    if probe.error and not result.done:
        log(f"  last lag probe error: {probe.error}")


#: /status counters of what the consumer did around rebalances (streams/runtime/consumer.py)
REBALANCE_COUNTERS = ("stale_acks_refused", "batches_abandoned", "records_refetched",
                      "offsets_taken_as_gaps", "records_in_recovery")

STAGE_ORDER = ("inbound", "unresolved", "links", "resolved", "deadletter", "signals")


def lag_text(lags: dict[str, int], missed: bool) -> str:
    if not lags:
        return "(no answer)" if missed else "-"
    order = [s for s in STAGE_ORDER if s in lags] + sorted(set(lags) - set(STAGE_ORDER))
    shown = [f"{s} {lags[s]:,}" for s in order if lags[s] or s in STAGE_ORDER[:4]]
    return " ".join(shown) + (" (stale)" if missed else "")


def cpu_text(workers: Sequence[Worker], tick: float) -> str:
    """Each worker's CPU % since the previous progress line."""
    parts = ["     "]  # under "CPU %"
    for worker in workers:
        now = worker.cpu()
        if now is None:
            parts.append("  -")
            continue
        if worker.last_tick is None:
            parts.append("  -")
        else:
            used = now - worker.last_cpu
            parts.append(f"{100 * used / max(tick - worker.last_tick, 1e-9):>3.0f}")
        worker.last_cpu, worker.last_tick = now, tick
    return " ".join(parts)


def check_warehouse(bench: Bench, store: WarehouseProbe, result: KResult) -> None:
    """The hot customer's events and profile; with --memory, the profiles held."""
    args, backlog = bench.args, bench.backlog
    if args.hot_customer_events:
        hot = args.hot_customer
        # Profiles are published at most every TOUCHPOINT_PROFILE_EMIT_SECONDS (2 s) and
        # then written: give the last one a moment.
        deadline = time.monotonic() + args.settle
        while True:
            events = store.rows("SELECT count(), countIf(event_id LIKE "
                                f"'{HOT_PREFIX}%') FROM touchpoint_events "
                                f"WHERE customer_id = '{hot}'")
            profile = store.rows("SELECT contacts_web + contacts_store + contacts_callcenter "
                                 "+ contacts_campaign + contacts_feedback "
                                 f"FROM customer_profiles WHERE customer_id = '{hot}'")
            total, extra = (int(events[0][0]), int(events[0][1])) if events else (-1, -1)
            contacts = int(profile[0][0]) if profile else -1
            if (total >= 0 and contacts == total) or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        normal = total - extra
        ok_extra = extra == backlog.hot_sent
        ok_profile = contacts == total
        ok_normal = normal >= backlog.hot_direct
        verdict = "OK" if ok_extra and ok_profile and ok_normal else "MISMATCH"
        result.checks.append(
            f"hot customer {hot}: {total:,} events in touchpoint_events = {extra:,} hot "
            f"(published {backlog.hot_sent:,}{'' if ok_extra else ' !'}) + {normal:,} normal "
            f"({backlog.hot_direct:,} published with its customer_id, "
            f"{normal - backlog.hot_direct:,} linked to it through other identifiers"
            f"{'' if ok_normal else ' !'}); its profile counts {contacts:,} contacts"
            f"{'' if ok_profile else ' !'}: {verdict}")
        result.check_failed = not (ok_extra and ok_profile and ok_normal)
    if args.memory or args.report_profiles:
        profiles = store.rows("SELECT count() FROM customer_profiles", timeout=600)
        customers = store.rows("SELECT uniqExact(customer_id) FROM touchpoint_events_raw",
                               timeout=600)
        result.profiles = int(profiles[0][0]) if profiles else None
        result.checks.append(
            f"profiles in customer_profiles: {result.profiles:,}" if profiles
            else f"profiles: unavailable ({store.error})")
        if customers:
            result.checks.append(f"distinct customer ids stored: {int(customers[0][0]):,} "
                                 f"(CRM customers {backlog.customers:,}; --memory added "
                                 f"{backlog.filled:,} page views)")


# --- reports ---------------------------------------------------------------------------------

def report_k(bench: Bench, r: KResult, baseline: KResult | None) -> None:
    args, floor = bench.args, bench.floor
    n = r.expected
    bar = "-" * 78
    log(bar)
    state = "complete" if r.done else f"PARTIAL ({r.status}): figures are as far as it got"
    if r.check_failed:
        state += ", but a warehouse CHECK FAILED (see below)"
    log(f"K={r.k}: {state}")
    quota = f", each limited to {args.cpu_quota:g} CPU (cgroup)" if args.cpu_quota else ""
    log(f"  workers                  {r.k}{quota}; {args.partitions} partitions a topic")
    log(f"  events                   {n:,} (simulated {bench.backlog.simulated:,}"
        + (f" + hot {bench.backlog.hot_sent:,}" if bench.backlog.hot_sent else "")
        + (f" + fill {bench.backlog.filled:,}" if bench.backlog.filled else "") + ")")
    log(f"  worker startup           {fmt_s(r.startup)} (launch until every worker answers "
        "/status)")
    if r.t_done is not None:
        log(f"  drain                    {r.t_done:,.1f} s -> {fmt_rate(n, r.t_done)} "
            "(worker start until all stored and lag 0)")
    else:
        log(f"  drain                    NOT REACHED: {r.stored:,} of {n:,} stored after "
            f"{r.elapsed:,.1f} s = {fmt_rate(r.stored, r.elapsed)}; lag "
            f"{lag_text(r.lag, False)}")
    if r.t_first is not None:
        end = r.t_done if r.t_done is not None else r.elapsed
        count = n if r.t_done is not None else r.stored
        log(f"  from first stored event  {end - r.t_first:,.1f} s -> "
            f"{fmt_rate(count, end - r.t_first)} (first stored at {r.t_first:.1f} s)")
    log(f"  milestones               inbound committed {fmt_s(r.t_inbound)}, all stored "
        f"{fmt_s(r.t_stored)}, lag 0 {fmt_s(r.t_done)}")
    if r.hot:
        log(f"  hot customer             the rest stored at {fmt_s(r.t_rest)}, the hot "
            f"customer's {r.hot:,} extra events at {fmt_s(r.t_hot)}")
    if floor is not None and r.rate:
        log(f"  vs the read floor        {100 * r.rate / floor.raw_rate:.1f} % of the raw read "
            f"({floor.raw_rate:,.0f}/s), {100 * r.rate / floor.decode_rate:.1f} % of "
            f"read+decode ({floor.decode_rate:,.0f}/s)")
    if baseline is not None and baseline.rate and r.rate and r.k != baseline.k:
        log(f"  speed-up vs K={baseline.k}          {r.rate / baseline.rate:.2f}x "
            f"({r.rate / baseline.rate / (r.k / baseline.k):.0%} of linear)")
    cpu_line = ", ".join(f"w{i} {c:,.1f} s" if c is not None else f"w{i} n/a"
                         for i, c in enumerate(r.cpu, start=1))
    total = r.cpu_total
    if total is not None:
        startup = sum(c or 0.0 for c in r.cpu_startup)
        counted = n if r.done else max(r.stored, 1)
        log(f"  worker CPU               {cpu_line} = {total:,.1f} s -> "
            f"{1000 * total / counted:.2f} CPU-s per 1,000 events (of it startup "
            f"{startup:,.1f} s)")
    else:
        log(f"  worker CPU               {cpu_line}")
    if any(m is not None for m in r.cpu_main):
        log("  main thread CPU          " + ", ".join(
            f"w{i} {m:,.1f} s of {c:,.1f} s ({100 * m / c:.0f} %)" if m is not None and c
            else f"w{i} n/a" for i, (m, c) in enumerate(zip(r.cpu_main, r.cpu, strict=True), 1)))
    if any(w is not None for w in r.cpu_wait):
        # runnable but not running: the machine's other load, or the quota
        log("  waited for a CPU         " + ", ".join(
            f"w{i} main thread {w[0]:,.1f} s (all threads {w[1]:,.1f} s)" if w is not None
            else f"w{i} n/a" for i, w in enumerate(r.cpu_wait, 1))
            + f" of {r.t_done or r.elapsed:,.1f} s")
    if any(r.gc):
        # the collector stops everything else: its seconds are the main thread's
        log("  garbage collector        " + "; ".join(
            f"w{i} " + ", ".join(f"gen{g} {s:,.1f} s ({n:,})" for g, (n, s) in enumerate(p))
            if p else f"w{i} n/a" for i, p in enumerate(r.gc, 1)))
    log("  peak RSS (VmHWM)         " + ", ".join(
        f"w{i} {h / MIB:,.0f} MiB" if h else f"w{i} n/a" for i, h in enumerate(r.hwm, 1)))
    if any(r.throttled):
        log("  CFS throttling           " + ", ".join(
            f"w{i} {t[1]:,} of {t[0]:,} periods, {t[2]:,.1f} s" if t else f"w{i} n/a"
            for i, t in enumerate(r.throttled, 1)))
    others = [f"broker {r.broker_cpu:,.1f} s" if r.broker_cpu is not None else "",
              f"ClickHouse {r.clickhouse_cpu:,.1f} s" if r.clickhouse_cpu is not None else ""]
    if any(others):
        log(f"  other CPU meanwhile      {', '.join(o for o in others if o)}")
    if r.identity.get("resolved"):
        ids = r.identity
        linked = ids.get("to_link", 0)
        log(f"  identity                 {ids['resolved']:,} events resolved: "
            f"{ids['resolved'] - ids.get('linked', 0):,} from the workers' copies of the "
            f"graph, {linked:,} sent to the link stage ({100 * linked / ids['resolved']:.1f} "
            f"%); {ids.get('merges', 0):,} merges")
        if len(r.linked_by) > 1:
            log("  link stage               events forwarded by " + ", ".join(
                f"w{i} {n:,}" if n is not None else f"w{i} n/a"
                for i, n in enumerate(r.linked_by, 1))
                + " (its one partition: that worker does it beside its share of the rest)")
    if r.rebalances:
        log("  around rebalances        " + ", ".join(
            f"{name.replace('_', ' ')} {r.rebalances.get(name, 0):,}"
            for name in REBALANCE_COUNTERS))
    for line in r.checks:
        log(f"  {line}")
    if r.profiles and r.k == 1 and r.hwm[0]:
        # With one worker every profile is in it; the RSS it had at its first /status
        # answer (code, models, no customer yet) is what the profiles did not cost.
        grown = r.hwm[0] - (r.rss_startup[0] or 0) if r.rss_startup else None
        log(f"  peak RSS per profile     {r.hwm[0] / r.profiles:,.0f} bytes of VmHWM"
            + (f"; {grown / r.profiles:,.0f} bytes over the {r.rss_startup[0] / MIB:,.0f} MiB "
               "it held at its first /status answer" if grown and r.rss_startup[0] else ""))
    if r.load[0]:
        log(f"  load average             at worker start {r.load[0]}; at the end {r.load[1]}")
    log(f"  workers stopped          {'; '.join(r.stopped)}")
    log(f"  code                     {r.code}")
    for name, tail in r.log_tails.items():
        if tail:
            log(f"  last lines of {name}'s log:")
            for line in tail:
                log(f"    | {line[:200]}")


def report_summary(bench: Bench, results: list[KResult], planned: list[int],
                   load_before: str) -> None:
    args, floor = bench.args, bench.floor
    bar = "=" * 78
    log("")
    log(bar)
    partial = len(results) < len(planned) or not all(r.done for r in results)
    log("throughput benchmark: summary" + (" -- PARTIAL" if partial else ""))
    log(bar)
    log(f"backlog     {bench.backlog.total:,} events: {args.events:,} simulated over "
        f"{args.customers:,} CRM customers (seed {args.seed}, start_ms {args.start_ms}), "
        f"{bench.backlog.refused:,} refused by the contract"
        + (f", {bench.backlog.hot_sent:,} hot ({args.hot_customer})"
           if bench.backlog.hot_sent else "")
        + (f", {bench.backlog.filled:,} --memory fill" if bench.backlog.filled else ""))
    log(f"set-up      {args.partitions} partitions a topic; warehouse {args.warehouse}; "
        f"CPU quota {f'{args.cpu_quota:g} per worker' if args.cpu_quota else 'none'}; "
        f"modules {compiled.state()}"
        + "".join(f"; TOUCHPOINT_{name.upper()}={value}" for name, value in args.set))
    if floor is not None:
        quota = f", {floor.quota:g}-CPU quota" if floor.quota else ""
        log(f"read floor  raw {floor.raw_rate:,.0f} records/s, read+decode "
            f"{floor.decode_rate:,.0f} records/s (one aiokafka consumer{quota})")
    baseline = next((r for r in results if r.k == 1 and r.rate), None)
    log("")
    log(f"{'K':>3} {'status':<11} {'startup':>8} {'drain':>8} {'events/s':>9} "
        f"{'from 1st':>9} {'speed-up':>8} {'CPU-s/1k':>8} {'max RSS':>8} {'%raw':>5} "
        f"{'%dec':>5}")
    for k in planned:
        r = next((x for x in results if x.k == k), None)
        if r is None:
            log(f"{k:>3} {'not run':<11}")
            continue
        first = (r.expected / (r.t_done - r.t_first)) if r.t_done and r.t_first is not None \
            and r.t_done > r.t_first else None
        cpu = r.cpu_total
        rss = max((h for h in r.hwm if h), default=None)
        speed = (r.rate / baseline.rate) if baseline and r.rate and baseline.rate else None
        status = ("CHECK FAIL" if r.check_failed else "done") if r.done \
            else r.status.split()[0].lower()
        cells = [
            f"{k:>3}", f"{status:<11}", f"{fmt_num(r.startup, 's'):>8}",
            f"{fmt_num(r.t_done, 's'):>8}", f"{fmt_num(r.rate):>9}", f"{fmt_num(first):>9}",
            f"{f'{speed:.2f}x' if speed else '-':>8}",
            f"{f'{1000 * cpu / r.expected:.2f}' if cpu and r.done else '-':>8}",
            f"{f'{rss / MIB:,.0f}M' if rss else '-':>8}",
            f"{f'{100 * r.rate / floor.raw_rate:.1f}' if floor and r.rate else '-':>5}",
            f"{f'{100 * r.rate / floor.decode_rate:.1f}' if floor and r.rate else '-':>5}",
        ]
        log(" ".join(cells))
    log("  (drain and events/s: from worker start until all stored and lag 0; from 1st: from "
        "the first stored event; CPU-s/1k: all workers' CPU seconds per 1,000 events; "
        "max RSS: the largest worker's VmHWM)")
    log("")
    log("machine:")
    log(f"  nproc {os.cpu_count()}, usable {len(os.sched_getaffinity(0))}; load average "
        f"before {load_before}, after {load_text()}")
    for fact in pb.machine_facts()[1:]:
        log(f"  {fact}")
    kafka_jars = sorted((bench.base / "kafka" / "lib").glob("kafka_2.13-*.jar"))
    if kafka_jars:
        log(f"  kafka {kafka_jars[0].name.removeprefix('kafka_2.13-').removesuffix('.jar')}"
            f"{'; clickhouse-server ' + clickhouse_version() if bench.clickhouse else ''}")
    log(f"  code: git describe {git_describe()}; {pb.code_state()[0]}")
    codes = {r.code for r in results if r.code}
    if len(codes) > 1:
        log("  WARNING: the code changed between the K runs: " + " | ".join(sorted(codes)))
    log(bar)


def fmt_num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{unit}" if unit else f"{value:,.0f}"


def clickhouse_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "clickhouse-server"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return out or "?"


# --- main ------------------------------------------------------------------------------------

def parse_workers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2,3") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("worker counts must be 1 or more")
    return list(dict.fromkeys(values))


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """--help: the module docstring as written, and every option with its default."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    data = parser.add_argument_group("the backlog")
    data.add_argument("--events", type=int, default=200_000,
                      help="simulated events pre-loaded into the inbound topics (the "
                           "simulator's normal mix of web, store, call-center, campaign and "
                           "feedback events)")
    data.add_argument("--customers", type=int, default=25_000,
                      help="simulated CRM customers (guests come on top)")
    data.add_argument("--seed", type=int, default=1, help="simulator seed")
    data.add_argument("--start-ms", type=int, default=DEFAULT_START_MS,
                      help="event-time origin of the simulation (epoch ms)")
    data.add_argument("--hot-customer-events", type=int, default=0, metavar="M",
                      help="mix M extra web page views of one customer evenly through the "
                           "traffic; the report says when the rest and when the hot customer "
                           "were stored, and checks its event count and profile")
    data.add_argument("--hot-customer", default="C000001",
                      help="customer_id of the hot customer (a simulated CRM customer, so it "
                           "also has normal events)")
    data.add_argument("--memory", action="store_true",
                      help="add one web page view for every CRM customer the simulated "
                           "traffic did not name, so the workers hold at least --customers "
                           "profiles; reports profiles and peak RSS per profile")
    data.add_argument("--report-profiles", action="store_true",
                      help="count profiles and distinct customers at the end (implied by "
                           "--memory)")
    run = parser.add_argument_group("the workers")
    run.add_argument("--workers", type=parse_workers, default=[1], metavar="K,K,...",
                     help="worker counts to measure, one fresh group, topics and warehouse "
                          "database each, in this order (e.g. 1,2,3)")
    run.add_argument("--cpu-quota", type=float, default=None, metavar="CPUS",
                     help="limit each worker (and the read-floor measurement) to this many "
                          "CPUs with a cgroup v1 cpu cgroup (cfs_quota_us = CPUS x 100000); "
                          "needs root and /sys/fs/cgroup/cpu")
    run.add_argument("--partitions", type=int, default=6,
                     help="TOUCHPOINT_TOPIC_PARTITIONS: partitions of every topic created")
    run.add_argument("--warehouse", choices=("server", "embedded"), default=None,
                     help="server: our own ClickHouse server (deploy/local/clickhouse.sh), "
                          "one database per K; embedded: chdb in the K's folder (one worker "
                          "only). Default: server when a K > 1 is asked for, else embedded")
    run.add_argument("--set", type=pb.worker_setting, action="append", default=[],
                     metavar="NAME=VALUE",
                     help="a worker setting, e.g. --set standby_replicas=1 for "
                          "TOUCHPOINT_STANDBY_REPLICAS (`touchpoint settings` lists them); "
                          "repeatable. Settings the benchmark sets itself cannot be changed")
    run.add_argument("--timeout", type=float, default=1800.0,
                     help="seconds from worker start before a K is given up (PARTIAL "
                          "report, exit 2, later K not run)")
    run.add_argument("--poll", type=float, default=1.0,
                     help="seconds between samples of the warehouse count and the lag (the "
                          "precision of every time)")
    run.add_argument("--progress", type=float, default=2.0,
                     help="seconds between progress lines")
    run.add_argument("--join-after", type=float, default=0.0, metavar="SECONDS",
                     help="start the first worker alone and the other K-1 this many seconds "
                          "later, while it drains: a group that grows under load. With "
                          "--set standby_replicas=0 the partitions they take over are "
                          "recovered from their changelogs. The report's 'around "
                          "rebalances' line counts what the consumers did meanwhile")
    run.add_argument("--settle", type=float, default=30.0,
                     help="seconds to wait after the drain for the hot customer's last "
                          "profile row")
    ports = parser.add_argument_group("services and folders")
    ports.add_argument("--kafka-port", type=int, default=29392, help="Kafka broker port")
    ports.add_argument("--kafka-controller-port", type=int, default=29393,
                       help="KRaft controller port")
    ports.add_argument("--clickhouse-port", type=int, default=29394,
                       help="ClickHouse native (TCP) port, --warehouse server")
    ports.add_argument("--clickhouse-http-port", type=int, default=29395,
                       help="ClickHouse HTTP port, --warehouse server")
    ports.add_argument("--keep", action="store_true",
                       help="leave Kafka and ClickHouse running and keep the folder (data, "
                            "worker logs); workers are stopped and cgroups removed anyway")
    args = parser.parse_args(argv)
    for name in ("kafka_port", "kafka_controller_port", "clickhouse_port",
                 "clickhouse_http_port"):
        if getattr(args, name) in RESERVED_PORTS:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} is reserved for "
                         "other engineers' services; pick another port")
    if args.events < 1 or args.customers < 1 or args.partitions < 1:
        parser.error("--events, --customers and --partitions must be 1 or more")
    if args.hot_customer_events < 0:
        parser.error("--hot-customer-events must be 0 or more")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.hot_customer):
        parser.error("--hot-customer must be letters, digits, _ . - (it goes into SQL)")
    if args.warehouse is None:
        args.warehouse = "server" if max(args.workers) > 1 else "embedded"
    if args.warehouse == "embedded" and max(args.workers) > 1:
        parser.error("--warehouse embedded takes one worker only (one process may open a "
                     "chdb folder): use --warehouse server for K > 1")
    if args.warehouse == "server" and not os.access(
            os.environ.get("CLICKHOUSE_SERVER_BIN", "/usr/sbin/clickhouse-server"), os.X_OK):
        parser.error("--warehouse server needs clickhouse-server (deploy/local/clickhouse.sh "
                     "install), or use --warehouse embedded with one worker")
    if args.cpu_quota is not None:
        if not 0.01 <= args.cpu_quota <= (os.cpu_count() or 1):
            parser.error(f"--cpu-quota must be between 0.01 and {os.cpu_count()} CPUs")
        if not (CGROUP_ROOT / "cpu.cfs_quota_us").exists() or os.geteuid() != 0:
            parser.error(f"--cpu-quota needs root and a cgroup v1 cpu hierarchy at "
                         f"{CGROUP_ROOT}")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)  # also when started in the background
    load_before = load_text()
    base = Path(tempfile.mkdtemp(prefix="throughput-bench-"))
    tag = uuid.uuid4().hex[:8]
    kafka = Service("kafka", "kafka.sh", base, {
        "KAFKA_PORT": str(args.kafka_port),
        "KAFKA_CONTROLLER_PORT": str(args.kafka_controller_port)})
    clickhouse = Service("clickhouse", "clickhouse.sh", base, {
        "CLICKHOUSE_TCP_PORT": str(args.clickhouse_port),
        "CLICKHOUSE_HTTP_PORT": str(args.clickhouse_http_port),
    }) if args.warehouse == "server" else None
    from touchpoint.settings import load_settings

    region = load_settings({}, create_secrets=False).phone_region
    backlog = Backlog(args.events, args.customers, args.seed, args.start_ms, region,
                      args.hot_customer, args.hot_customer_events, args.memory)
    bench = Bench(args, base, tag, secrets.token_urlsafe(24), kafka, clickhouse, backlog)
    results: list[KResult] = []
    log(f"throughput benchmark: K = {', '.join(map(str, args.workers))}; {args.events:,} "
        f"events over {args.customers:,} customers; folder {base}")
    try:
        ports = [args.kafka_port, args.kafka_controller_port]
        if clickhouse is not None:
            ports += [args.clickhouse_port, args.clickhouse_http_port]
        busy = [p for p in ports if pb.port_open(p)]
        if busy:
            raise SystemExit(f"port(s) {busy} on 127.0.0.1 already in use: stop what holds "
                             "them or pick others (--kafka-port, --clickhouse-port, ...)")
        log(f"starting Kafka on {bench.bootstrap} ...")
        log(f"  ready in {kafka.start():.1f} s")
        if clickhouse is not None:
            log(f"starting ClickHouse on 127.0.0.1:{args.clickhouse_port} ...")
            log(f"  ready in {clickhouse.start():.1f} s")
        for k in args.workers:
            baseline = next((r for r in results if r.k == 1), None)
            result = run_k(bench, k, baseline)
            results.append(result)
            if not result.done:
                break
        report_summary(bench, results, args.workers, load_before)
        complete = len(results) == len(args.workers) and all(r.done for r in results)
        return 2 if not complete else 3 if any(r.check_failed for r in results) else 0
    except KeyboardInterrupt:
        log("interrupted")
        if results:
            report_summary(bench, results, args.workers, load_before)
        return 2
    finally:
        # A second Ctrl-C must not leave servers, workers or cgroups behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(bench)


def cleanup(bench: Bench) -> None:
    stop_workers(list(STARTED))
    for group in list(CGROUPS):
        drop_cgroup(group)
    if bench.args.keep:
        log(f"--keep: Kafka on {bench.bootstrap}"
            + (f", ClickHouse on 127.0.0.1:{bench.args.clickhouse_port}"
               if bench.clickhouse else "") + f" left running; folder {bench.base}")
        return
    if bench.clickhouse is not None:
        bench.clickhouse.stop()
    bench.kafka.stop()
    shutil.rmtree(bench.base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure-read":
        sys.exit(measure_read_child(sys.argv[2:]))
    sys.exit(main())
