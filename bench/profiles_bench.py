"""Benchmark: profile-update throughput through the real broker, and the worker's peak memory.

Not a test. It starts its own single-node Kafka (``deploy/local/kafka.sh``) on ports
29092/29093 under a temporary TOUCHPOINT_HOME, publishes N simulated events (default
1,000,000 over 100,000 CRM customers, fixed seed and event-time origin) through the
project's ``Publisher``, and only then starts ONE ``touchpoint worker`` subprocess, so
the worker works off a full backlog and its figures are pure processing throughput.

While the worker runs, ``GET /status`` is polled every second, with the worker's API
token (its settings' ``api_token``: the local one in its TOUCHPOINT_HOME), and the
worker's memory is read from ``/proc/<pid>/status``. The run ends when every published
event has been ingested, resolved by the identity stage and applied to a profile (or on
--timeout).

    .venv/bin/python bench/profiles_bench.py                       # 1,000,000 / 100,000
    .venv/bin/python bench/profiles_bench.py --events 20000 --customers 2000   # smoke run

It prints: the publish rate; one progress line a second (ingested, resolved, profile
updates applied, rows stored, worker RSS and CPU); and a final report with the time
from worker start to (a) all ingested, (b) all resolved, (c) all profile updates applied,
each as events/s, the worker's startup time, its peak RSS (VmHWM), merges, the number
of customer profiles in the warehouse, and machine facts. On timeout the report says
PARTIAL and gives the figures reached so far.

Kafka and the worker are stopped, and the temporary folder removed, at the end unless
--keep is given. Ports 9092 and 19092 (other engineers' brokers) are never touched.
Ctrl-C or SIGTERM to this script while the worker runs stops it early with a PARTIAL
report; exit status 0 means every stage completed, 2 a partial result.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from touchpoint import compiled

REPO = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO / "deploy" / "local" / "kafka.sh"
# 2026-11-01T00:00:00Z: a fixed event-time origin, so every run sends the same events.
DEFAULT_START_MS = 1_793_491_200_000
MIB = 1024 * 1024
RESERVED_PORTS = {9092, 9093, 19092, 19093}


def log(message: str = "") -> None:
    print(message, flush=True)


# --- helpers -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes) of a process from /proc; empty when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def proc_cpu_seconds(pid: int, *, thread: int | None = None) -> float | None:
    """User + system CPU seconds of a process (all threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path) as fh:
            fields_ = fh.read().rsplit(")", 1)[1].split()
        return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def get_status(port: int, timeout: float, token: str | None) -> dict[str, Any] | None:
    """The worker's /status, or None if it does not answer in time (no sample).

    ``token`` is the worker's API token (its settings' ``api_token``), sent as
    ``Authorization: Bearer``; a worker that refuses it ends the run (it never will answer).
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as rsp:
            body: dict[str, Any] = json.load(rsp)
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise SystemExit(f"the worker on port {port} refused the API token (HTTP 401): "
                             "TOUCHPOINT_API_TOKEN(S) of the bench and the worker differ") from None
        return None
    except (OSError, ValueError):
        return None


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:,.1f} s"


def fmt_rate(count: int, seconds: float | None) -> str:
    return "n/a" if not seconds else f"{count / seconds:,.0f} events/s"


#: Settings the benchmarks give every worker themselves (ports, topics, warehouse, tokens).
FIXED_SETTINGS = frozenset({"home", "kafka_bootstrap", "topic_prefix", "topic_partitions",
                            "app_id", "clickhouse_url", "pii_salt", "api_tokens",
                            "api_token", "web_port"})


def worker_setting(raw: str) -> tuple[str, str]:
    """``name=value`` of a benchmark's ``--set``, checked against the worker's settings."""
    from touchpoint.settings import SETTINGS

    name, sep, value = raw.partition("=")
    name = name.strip().lower().removeprefix("touchpoint_")
    known = {setting.name for setting in SETTINGS}
    if not sep or name not in known:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: expected NAME=VALUE with NAME one of: {', '.join(sorted(known))}")
    if name in FIXED_SETTINGS:
        raise argparse.ArgumentTypeError(f"{name} is set by the benchmark itself")
    return name, value


def base_env(drop: tuple[str, ...] = ("TOUCHPOINT_", "KAFKA_PORT",
                                      "KAFKA_CONTROLLER_PORT")) -> dict[str, str]:
    """The inherited environment without variables starting with ``drop`` (ours are set
    explicitly).

    TOUCHPOINT_PURE_PYTHON stays: it picks the build measured (touchpoint/compiled.py).
    """
    return {k: v for k, v in os.environ.items()
            if not k.startswith(drop) or k == compiled.PURE_ENV}


def machine_facts() -> list[str]:
    facts = [f"nproc (os.cpu_count): {os.cpu_count()}, "
             f"usable (sched_getaffinity): {len(os.sched_getaffinity(0))}"]
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh
                          if ln.startswith("model name")), "?")
        facts.append(f"cpu: {model}")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            total = next(int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal"))
        facts.append(f"memory: {total / 1024 / 1024:.1f} GiB")
    except (OSError, StopIteration, ValueError):
        pass
    facts.append(f"python: {platform.python_implementation()} {platform.python_version()} "
                 f"({sys.executable})")
    facts.append(f"platform: {platform.platform()}")
    from importlib.metadata import PackageNotFoundError, version
    pkgs = []
    for name in ("faust-streaming", "aiokafka", "kafka-python", "chdb", "fastavro", "rocksdict"):
        with contextlib.suppress(PackageNotFoundError):
            pkgs.append(f"{name} {version(name)}")
    facts.append("packages: " + ", ".join(pkgs))
    return facts


def code_state() -> tuple[str, str]:
    """(label, fingerprint) of the code the worker runs: everything but bench/.

    The label is the commit plus "+ uncommitted changes" if any; the fingerprint covers
    the committed tree and uncommitted edits outside bench/. It is taken when the worker
    starts (that is the code it imports) and again at the end, so a tree edited during
    a long run is reported instead of silently mislabelled.
    """
    outside_bench = ("--", ".", ":(exclude)bench")

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True,
                              check=False).stdout
    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        if not commit:
            return "unknown (not a git checkout)", ""
        # ls-tree takes no ":(exclude)" pathspec, so bench/ is dropped here.
        tree = "".join(line + "\n" for line in git("ls-tree", "-r", "HEAD").splitlines()
                       if not line.split("\t", 1)[-1].startswith("bench/"))
        changes = git("diff", "HEAD", *outside_bench) + \
            git("status", "--porcelain", "--untracked-files=all", *outside_bench)
    except OSError:
        return "unknown (git not available)", ""
    digest = hashlib.blake2b((tree + changes).encode(), digest_size=4).hexdigest()
    label = f"{commit} + uncommitted changes" if changes.strip() else commit
    return f"{label} (code fingerprint {digest})", digest


# --- Kafka ---------------------------------------------------------------------------------

class Kafka:
    """Our own broker, started and stopped by deploy/local/kafka.sh."""

    def __init__(self, home: Path, port: int, controller_port: int) -> None:
        self.home, self.port, self.controller_port = home, port, controller_port
        self.env = {**base_env(), "TOUCHPOINT_HOME": str(home),
                    "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller_port)}
        self.started = False

    def _run(self, action: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(KAFKA_SCRIPT), action], env=self.env,
                              capture_output=True, text=True, check=False, timeout=timeout)

    def start(self) -> float:
        began = time.monotonic()
        result = self._run("start")
        if result.returncode != 0:
            raise SystemExit(f"kafka.sh start failed (exit {result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
        self.started = True
        return time.monotonic() - began

    def stop(self) -> None:
        if self.started:
            result = self._run("stop", timeout=120)
            if result.returncode != 0:
                log(f"warning: kafka.sh stop exited {result.returncode}: "
                    f"{result.stderr.strip()}")
            self.started = False

    @property
    def pid(self) -> int | None:
        try:
            return int((self.home / "run" / "kafka.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def version(self) -> str:
        jars = sorted((self.home / "kafka" / "lib").glob("kafka_2.13-*.jar"))
        return jars[0].name.removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "?"


# --- publishing ----------------------------------------------------------------------------

def publish(settings: Any, *, events: int, customers: int, seed: int, start_ms: int
            ) -> tuple[int, int, float]:
    """Publish ``events`` simulated events; return (published, refused, seconds)."""
    from touchpoint.exceptions import ContractError
    from touchpoint.publish import Publisher
    from touchpoint.sim.simulate import Simulator, run

    simulator = Simulator(seed=seed, customers=customers, start_ms=start_ms)
    refused = 0
    began = time.monotonic()
    next_line = began + 5.0

    with Publisher.from_settings(settings) as publisher:
        def send(sim_event: Any) -> None:
            nonlocal refused
            try:
                publisher.publish(sim_event.channel, sim_event.event)
            except ContractError:
                refused += 1

        def progress(sent: int) -> None:
            nonlocal next_line
            now = time.monotonic()
            if now >= next_line:
                log(f"  publish: {sent:>10,} / {events:,}  "
                    f"{sent / (now - began):>8,.0f} events/s")
                next_line = now + 5.0

        sent = run(simulator, send, events=events, progress=progress)
        # leaving the block flushes: every event is acknowledged by the broker
    seconds = time.monotonic() - began
    return sent - refused, refused, seconds


# --- the worker ----------------------------------------------------------------------------

@dataclass
class Sample:
    t: float  # seconds since worker start, when the answer arrived
    ingested: int
    rejected: int
    resolved: int
    merges: int
    applied: int
    repeats: int
    merged_away: int
    absorbed: int
    emitted: int
    rows: dict[str, int]
    rss: int | None
    cpu: float | None

    @classmethod
    def of(cls, t: float, body: dict[str, Any], rss: int | None, cpu: float | None) -> Sample:
        ident, prof = body.get("identity") or {}, body.get("profiles") or {}
        return cls(
            t=t, ingested=sum((body.get("ingested") or {}).values()),
            rejected=sum((body.get("rejected") or {}).values()),
            resolved=int(ident.get("resolved", 0)), merges=int(ident.get("merges", 0)),
            applied=int(prof.get("applied", 0)), repeats=int(prof.get("repeats", 0)),
            merged_away=int(prof.get("merged_away", 0)), absorbed=int(prof.get("absorbed", 0)),
            emitted=int(prof.get("emitted", 0)),
            rows={k: int(v) for k, v in ((body.get("sink") or {}).get("rows") or {}).items()},
            rss=rss, cpu=cpu)

    @property
    def profile_updates(self) -> int:
        return self.applied + self.repeats


@dataclass
class Run:
    published: int
    started_wall: float = 0.0
    startup: float | None = None  # worker start -> first /status answer
    t_ingested: float | None = None
    t_resolved: float | None = None
    t_applied: float | None = None
    t_stored: float | None = None
    last: Sample | None = None
    samples: int = 0
    missed: int = 0
    rss_max_sampled: int = 0
    hwm: int | None = None
    timed_out: bool = False
    interrupted: bool = False
    worker_died: int | None = None
    history: list[Sample] = field(default_factory=list)
    code: tuple[str, str] = ("", "")  # code_state() when the worker started

    def observe(self, s: Sample) -> None:
        self.last = s
        self.samples += 1
        self.history.append(s)
        if s.rss:
            self.rss_max_sampled = max(self.rss_max_sampled, s.rss)
        ingest_done = s.ingested + s.rejected >= self.published
        if ingest_done and self.t_ingested is None:
            self.t_ingested = s.t
        if ingest_done and s.resolved >= s.ingested and self.t_resolved is None:
            self.t_resolved = s.t
        if ingest_done and s.profile_updates >= s.ingested and self.t_applied is None:
            self.t_applied = s.t
        stored = s.rows.get("touchpoint_events_raw", 0) + s.rows.get("deadletter", 0)
        if ingest_done and stored >= self.published and self.t_stored is None:
            self.t_stored = s.t

    @property
    def done(self) -> bool:
        return self.t_ingested is not None and self.t_resolved is not None \
            and self.t_applied is not None


def worker_env(settings_env: dict[str, str], home: Path, warehouse: str, port: int,
               tag: str) -> dict[str, str]:
    return {**base_env(), **settings_env,
            "TOUCHPOINT_HOME": str(home), "TOUCHPOINT_APP_ID": f"bench-{tag}",
            "TOUCHPOINT_WEB_PORT": str(port), "TOUCHPOINT_CLICKHOUSE_URL": warehouse,
            "TOUCHPOINT_LOG_LEVEL": "warning"}


def run_worker(env: dict[str, str], log_path: Path, port: int, token: str, result: Run, *,
               timeout: float, poll: float, status_timeout: float, settle: float,
               emit_seconds: float, on_started: Any) -> subprocess.Popen[bytes]:
    """Start the worker and watch it until done, timeout or death; return the process."""
    with log_path.open("ab") as fh:
        began = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "worker"],
                                   env=env, cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    on_started(process)
    result.started_wall = time.time()
    result.code = code_state()
    log(f"  code under test: {result.code[0]}")
    try:
        _watch(process, port, token, result, began=began, deadline=began + timeout, poll=poll,
               status_timeout=status_timeout, settle=settle, emit_seconds=emit_seconds)
    except KeyboardInterrupt:
        result.interrupted = True
        log("  interrupted: stopping and reporting what was reached")
    mem = proc_status(process.pid)
    if mem.get("VmHWM"):
        result.hwm = mem["VmHWM"]
    return process


def _watch(process: subprocess.Popen[bytes], port: int, token: str, result: Run, *, began: float,
           deadline: float, poll: float, status_timeout: float, settle: float,
           emit_seconds: float) -> None:
    pid = process.pid
    header_every, lines = 20, 0
    settle_until: float | None = None
    while True:
        tick = time.monotonic()
        if process.poll() is not None:
            result.worker_died = process.returncode
            break
        body = get_status(port, status_timeout, token)
        now = time.monotonic()
        mem = proc_status(pid)
        cpu = proc_cpu_seconds(pid)
        if mem.get("VmHWM"):
            result.hwm = mem["VmHWM"]
        if body is None:
            if result.startup is not None:
                result.missed += 1
                log(f"  {now - began:7.1f}s  (no /status answer within {status_timeout:.0f}s)"
                    f"  rss {mem.get('VmRSS', 0) / MIB:,.0f} MiB")
        else:
            if result.startup is None:
                result.startup = now - began
                log(f"  worker answered /status after {result.startup:.1f} s")
            prev = result.last
            sample = Sample.of(now - began, body, mem.get("VmRSS"), cpu)
            result.observe(sample)
            if lines % header_every == 0:
                log(f"  {'t':>7}  {'ingested':>10} {'resolved':>10} {'applied':>10} "
                    f"{'emitted':>9} {'rows':>10}  {'upd/s':>7}  {'rss MiB':>8} {'cpu%':>5}")
            lines += 1
            rate = cpu_pct = ""
            if prev is not None and sample.t > prev.t:
                dt = sample.t - prev.t
                rate = f"{(sample.profile_updates - prev.profile_updates) / dt:,.0f}"
                if sample.cpu is not None and prev.cpu is not None:
                    cpu_pct = f"{100 * (sample.cpu - prev.cpu) / dt:.0f}"
            log(f"  {sample.t:6.1f}s  {sample.ingested:>10,} {sample.resolved:>10,} "
                f"{sample.profile_updates:>10,} {sample.emitted:>9,} "
                f"{sample.rows.get('touchpoint_events_raw', 0):>10,}  {rate:>7}  "
                f"{(sample.rss or 0) / MIB:>8,.0f} {cpu_pct:>5}")
            if result.done and settle_until is None:
                # Let the last profiles be emitted and the last events stored, briefly.
                settle_until = now + settle
            if settle_until is not None:
                stored_all = result.t_stored is not None
                applied_at = began + (result.t_applied or 0.0)
                if (stored_all and now >= applied_at + 2 * emit_seconds + 1.5) \
                        or now >= settle_until:
                    break
        if now >= deadline and not result.done:
            result.timed_out = True
            break
        time.sleep(max(0.0, poll - (time.monotonic() - tick)))


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 60) -> str:
    if process.poll() is not None:
        return f"already exited ({process.returncode})"
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
        return f"stopped by SIGTERM in {time.monotonic() - began:.1f} s (exit {process.returncode})"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"ignored SIGTERM for {timeout:.0f} s; killed"


def warehouse_counts(settings: Any) -> dict[str, Any]:
    """Profiles and stored events, asked through the worker (works for chdb and servers)."""
    from touchpoint.warehouse_client import query_worker

    out: dict[str, Any] = {}
    queries = {
        "profiles": "SELECT count() FROM customer_profiles",
        "events_stored": "SELECT count() FROM touchpoint_events",
        "distinct_customers_in_events": "SELECT uniqExact(customer_id) FROM touchpoint_events",
    }
    for name, sql in queries.items():
        began = time.monotonic()
        try:
            out[name] = query_worker(settings, sql, timeout=180).rows[0][0]
            out[name + "_query_s"] = time.monotonic() - began
        except Exception as exc:  # a report line, not a failure
            out[name] = f"unavailable ({exc})"
    return out


# --- report --------------------------------------------------------------------------------

def steady_rate(history: list[Sample], value: Any, n: int) -> str:
    """Events/s between the samples where ``value`` first reached 10 % and 90 % of n."""
    lo = next((x for x in history if value(x) >= 0.1 * n), None)
    hi = next((x for x in history if value(x) >= 0.9 * n), None)
    if lo is None:
        return "n/a (never reached 10 %)"
    if hi is None:  # partial: from 10 % to the last sample
        hi = history[-1]
        if hi.t <= lo.t:
            return "n/a"
        return (f"{(value(hi) - value(lo)) / (hi.t - lo.t):,.0f} events/s "
                f"(t={lo.t:.0f}..{hi.t:.0f} s, 90 % not reached)")
    if hi.t <= lo.t:
        return "n/a (too fast to measure)"
    return (f"{(value(hi) - value(lo)) / (hi.t - lo.t):,.0f} events/s "
            f"(t={lo.t:.0f}..{hi.t:.0f} s)")


def memory_line(history: list[Sample]) -> str:
    """Sampled RSS at a few points of the run: how memory grows with the state."""
    points = [x for x in history if x.rss]
    if not points:
        return "memory: no samples"
    picks = [points[min(len(points) - 1, round(i * (len(points) - 1) / 4))] for i in range(5)]
    return "sampled worker RSS over the run: " + ", ".join(
        f"t={x.t:.0f}s {x.rss / MIB:,.0f} MiB ({x.profile_updates:,} applied)"
        for x in picks if x.rss)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    cleaned = ("".join(ch for ch in ANSI.sub("", raw) if ch.isprintable()).rstrip()
               for raw in text.splitlines())
    return [ln for ln in cleaned if ln]


def report(args: argparse.Namespace, kafka: Kafka, pub: tuple[int, int, float], r: Run,
           counts: dict[str, Any], worker_stop: str, log_path: Path) -> None:
    published, refused, pub_s = pub
    s = r.last
    partial = r.timed_out or r.interrupted or r.worker_died is not None or not r.done
    bar = "=" * 78
    log()
    log(bar)
    title = "profiles benchmark"
    if partial:
        why = (f"TIMEOUT after {args.timeout:.0f} s" if r.timed_out else
               f"worker exited with {r.worker_died}" if r.worker_died is not None
               else "INTERRUPTED" if r.interrupted else "incomplete")
        title += f" -- PARTIAL RESULT ({why}): figures below are as far as it got"
    log(title)
    log(bar)
    log(f"events published      {published:,} valid ({refused:,} refused by the contract), "
        f"seed {args.seed}, start_ms {args.start_ms}")
    log(f"customers (CRM)       {args.customers:,}")
    log(f"topic partitions      {args.partitions}; warehouse {args.warehouse or 'chdb (embedded)'}")
    log(f"publish               {pub_s:,.1f} s = {fmt_rate(published + refused, pub_s)} "
        f"(Publisher, acks=all, before the worker started)")
    log(f"worker startup        {fmt_s(r.startup)} (start -> first /status answer)")
    if s is not None:
        log(f"ingested              {s.ingested:,} (+{s.rejected:,} rejected)")
        log(f"identity resolved     {s.resolved:,}; merges {s.merges:,}")
        log(f"profile updates       applied {s.applied:,}, repeats {s.repeats:,}, "
            f"merged_away {s.merged_away:,}, absorbed {s.absorbed:,}, emitted {s.emitted:,}")
        log("rows written          " + ", ".join(f"{k} {v:,}" for k, v in sorted(s.rows.items())))
    for name in ("profiles", "events_stored", "distinct_customers_in_events"):
        if name in counts:
            took = counts.get(name + "_query_s")
            log(f"warehouse {name:<29} {counts[name]:,}" if isinstance(counts[name], int)
                else f"warehouse {name:<29} {counts[name]}")
            if took is not None and took > 5:
                log(f"  (query took {took:.1f} s)")
    log("")
    log("wall time from worker start (includes startup; status sampled every "
        f"{args.poll:g} s, so +-{args.poll:g} s):")
    n = published
    stages = (("(a) all ingested", r.t_ingested),
              ("(b) all identity-resolved", r.t_resolved),
              ("(c) all profile updates applied", r.t_applied),
              ("(d) all events stored (sink rows)", r.t_stored))
    for label, t in stages:
        if t is not None:
            after = t - (r.startup or 0.0)
            log(f"  {label:<36} {t:8.1f} s  {fmt_rate(n, t):>18}   "
                f"(excluding startup: {fmt_rate(n, after)})")
        elif s is not None:
            count = {"(a) all ingested": s.ingested + s.rejected,
                     "(b) all identity-resolved": s.resolved,
                     "(c) all profile updates applied": s.profile_updates,
                     "(d) all events stored (sink rows)":
                         s.rows.get("touchpoint_events_raw", 0) + s.rows.get("deadletter", 0),
                     }[label]
            log(f"  {label:<36} NOT REACHED: {count:,} of {n:,} after {s.t:.1f} s "
                f"= {fmt_rate(count, s.t)} (partial)")
        else:
            log(f"  {label:<36} NOT REACHED (no status sample)")
    log("")
    log("rate while each stage was busy (from 10 % to 90 % of its count, startup and tails "
        "excluded):")
    for label, value in (("ingest", lambda x: x.ingested + x.rejected),
                         ("identity", lambda x: x.resolved),
                         ("profiles", lambda x: x.profile_updates),
                         ("store (event rows)", lambda x: x.rows.get("touchpoint_events_raw", 0))):
        log(f"  {label:<20} {steady_rate(r.history, value, n)}")
    log(memory_line(r.history))
    log("")
    hwm = f"{r.hwm / MIB:,.0f} MiB" if r.hwm else "n/a"
    log(f"worker peak RSS       {hwm} (VmHWM); highest sampled VmRSS "
        f"{r.rss_max_sampled / MIB:,.0f} MiB; last sampled "
        f"{(s.rss or 0) / MIB if s else 0:,.0f} MiB")
    if s is not None and s.cpu is not None:
        log(f"worker CPU            {s.cpu:,.1f} s user+sys over {s.t:,.1f} s wall "
            f"({100 * s.cpu / max(s.t, 1e-9):.0f}% of one core on average)")
    if kafka.pid:
        kmem = proc_status(kafka.pid)
        if kmem:
            log(f"kafka broker          {kafka.version()}, RSS {kmem.get('VmRSS', 0) / MIB:,.0f} "
                f"MiB, peak {kmem.get('VmHWM', 0) / MIB:,.0f} MiB")
    log(f"status samples        {r.samples} answered, {r.missed} without answer")
    log(f"worker stop           {worker_stop}")
    log(f"worker log            {log_path}{'' if args.keep else ' (removed; use --keep)'}")
    log("")
    log("machine:")
    for fact in machine_facts():
        log(f"  {fact}")
    log(f"  code under test: {r.code[0]}, at worker start")
    now = code_state()
    if r.code[1] and now[1] != r.code[1]:
        log(f"  WARNING: the code changed during the run (now {now[0]}); the worker ran the "
            "code as it was at its start")
    log(bar)


# --- main ----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Profile-update throughput (events/s) through a real Kafka broker and one "
                    "touchpoint worker, and the worker's peak memory. Starts its own Kafka on "
                    "127.0.0.1:29092 (controller 29093), publishes the events first, then runs "
                    "one worker over the full backlog and prints the time to ingest, resolve "
                    "and apply all events, events/s for each, and the worker's VmHWM.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to publish")
    parser.add_argument("--customers", type=int, default=100_000,
                        help="simulated CRM customers")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--start-ms", type=int, default=DEFAULT_START_MS,
                        help="event-time origin of the simulation (epoch ms)")
    parser.add_argument("--partitions", type=int, default=6,
                        help="TOUCHPOINT_TOPIC_PARTITIONS for the created topics")
    parser.add_argument("--warehouse", default=None,
                        help="TOUCHPOINT_CLICKHOUSE_URL for the worker (unset: embedded "
                             "chdb://<folder>/worker/chdb)")
    parser.add_argument("--home", type=Path, default=None,
                        help="folder for Kafka data, the worker's home and logs (unset: a "
                             "new temporary folder)")
    parser.add_argument("--kafka-port", type=int, default=29092, help="broker port")
    parser.add_argument("--kafka-controller-port", type=int, default=29093,
                        help="KRaft controller port")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds from worker start before giving up (partial report)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between /status polls")
    parser.add_argument("--status-timeout", type=float, default=5.0,
                        help="seconds to wait for one /status answer (slower = no sample)")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="after the last profile update, wait at most this long for the "
                             "last events to be stored and profiles emitted before querying")
    parser.add_argument("--keep", action="store_true",
                        help="leave Kafka running and keep the folder (data, worker log)")
    args = parser.parse_args(argv)
    refuse_reserved_ports(parser, args)
    if args.events < 1 or args.customers < 1:
        parser.error("--events and --customers must be 1 or more")
    return args


def refuse_reserved_ports(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when --kafka-port or --kafka-controller-port is reserved."""
    for name in ("kafka_port", "kafka_controller_port"):
        if getattr(args, name) in RESERVED_PORTS:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} is reserved for "
                         "other engineers' brokers; pick another port")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """Ctrl-C or SIGTERM raise KeyboardInterrupt: stop watching, print a PARTIAL report.

    Also when started in the background, where the shell ignores SIGINT for us.
    """
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_signals()
    sys.path.insert(0, str(REPO))
    from touchpoint.settings import load_settings

    made_home = args.home is None
    base = Path(tempfile.mkdtemp(prefix="profiles-bench-")) if made_home \
        else args.home.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    worker_home = base / "worker"
    worker_home.mkdir(parents=True, exist_ok=True)
    log_path = base / f"worker-{tag}.log"
    warehouse = args.warehouse or f"chdb://{worker_home / 'chdb'}"
    kafka = Kafka(base, args.kafka_port, args.kafka_controller_port)
    process: subprocess.Popen[bytes] | None = None

    log(f"profiles benchmark: {args.events:,} events over {args.customers:,} customers; "
        f"folder {base}")
    if port_open(args.kafka_port) and not (base / "run" / "kafka.pid").exists():
        raise SystemExit(f"127.0.0.1:{args.kafka_port} is already in use by another process; "
                         "stop it or pass --kafka-port")
    try:
        log(f"starting Kafka on 127.0.0.1:{args.kafka_port} ...")
        log(f"  Kafka ready in {kafka.start():.1f} s")
        settings_env = {
            "TOUCHPOINT_HOME": str(worker_home),
            "TOUCHPOINT_KAFKA_BOOTSTRAP": f"127.0.0.1:{args.kafka_port}",
            "TOUCHPOINT_TOPIC_PREFIX": f"bench{tag}.",
            "TOUCHPOINT_TOPIC_PARTITIONS": str(args.partitions),
            "TOUCHPOINT_PII_SALT": "bench-salt-0123456789",
        }
        settings = load_settings(settings_env)

        log(f"publishing {args.events:,} events (topic prefix {settings.topic_prefix}) ...")
        pub = publish(settings, events=args.events, customers=args.customers, seed=args.seed,
                      start_ms=args.start_ms)
        log(f"  published {pub[0]:,} events ({pub[1]:,} refused) in {pub[2]:,.1f} s = "
            f"{fmt_rate(pub[0] + pub[1], pub[2])}")

        port = free_port()
        env = worker_env(settings_env, worker_home, warehouse, port, tag)
        wsettings = load_settings(env)
        log(f"starting worker (port {port}, warehouse {wsettings.warehouse}, log {log_path}) ...")
        result = Run(published=pub[0])

        def started(p: subprocess.Popen[bytes]) -> None:
            nonlocal process
            process = p

        process = run_worker(env, log_path, port, wsettings.api_token, result,
                             timeout=args.timeout, poll=args.poll,
                             status_timeout=args.status_timeout,
                             settle=args.settle, emit_seconds=wsettings.profile_emit_seconds,
                             on_started=started)
        counts: dict[str, Any] = {}
        if process.poll() is None:
            log("querying the warehouse through the worker ...")
            counts = warehouse_counts(wsettings)
        stopped = stop_worker(process)
        lines = log_lines(log_path)
        if lines:
            log(f"worker log: {len(lines)} lines at level warning; first and last ones:")
            shown = lines if len(lines) <= 20 else [*lines[:5], "...", *lines[-15:]]
            for line in shown:
                log(f"  | {line[:200]}")
        report(args, kafka, pub, result, counts, stopped, log_path)
        return 0 if result.done and not (result.timed_out or result.interrupted) else 2
    finally:
        if process is not None and process.poll() is None:
            stop_worker(process)
        if not args.keep:
            kafka.stop()
            if made_home:
                shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"--keep: Kafka left running on 127.0.0.1:{args.kafka_port}; folder {base}")


if __name__ == "__main__":
    sys.exit(main())
