"""Real services for integration tests: Kafka, ClickHouse server, chdb, and workers.

Services are started once per session by the project's own scripts, on test ports so
a running demo is left alone, and stopped at the end if this session started them. A
service that cannot start fails the run; nothing is skipped silently.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from touchpoint.publish import Publisher
from touchpoint.settings import Settings, load_settings
from touchpoint.sinks.clickhouse import QueryResult, Warehouse, connect
from touchpoint.sinks.migrate import migrate
from touchpoint.streams.ops.lag import OffsetMonitor, OffsetSample
from touchpoint.streams.topics import TopicNames, ensure_topics
from touchpoint.warehouse_client import query_worker
from touchpoint.worker_api import WorkerAPI

REPO = Path(__file__).resolve().parents[2]
TEST_HOME = REPO / ".touchpoint-test"
ARTIFACTS = REPO / "test-artifacts"
# The test services' ports; TOUCHPOINT_TEST_KAFKA_PORT etc. move them, so two checkouts
# can run their suites side by side.
PORTS = {
    name: os.environ.get(f"TOUCHPOINT_TEST_{name}", default)
    for name, default in (("KAFKA_PORT", "19092"), ("KAFKA_CONTROLLER_PORT", "19093"),
                          ("CLICKHOUSE_TCP_PORT", "19000"), ("CLICKHOUSE_HTTP_PORT", "18123"))
}
KAFKA = f"127.0.0.1:{PORTS['KAFKA_PORT']}"
CLICKHOUSE = f"127.0.0.1:{PORTS['CLICKHOUSE_TCP_PORT']}"
BACKENDS = ("chdb", "clickhouse")
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")

pytestmark = pytest.mark.integration


def _service_env(home: Path = TEST_HOME, **extra: str) -> dict[str, str]:
    return {**os.environ, "TOUCHPOINT_HOME": str(home), **PORTS, **extra}


def _script(name: str, action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(REPO / "deploy" / "local" / name), action], env=env,
                          capture_output=True, text=True, check=False, timeout=600)


@contextmanager
def _running_service(name: str, env: dict[str, str]) -> Iterator[None]:
    """Start a service for the session unless it already runs; stop it if we started it."""
    if _script(name, "status", env).returncode == 0:
        yield
        return
    started = _script(name, "start", env)
    if started.returncode != 0:
        pytest.fail(f"{name} start failed (integration tests need it):\n"
                    f"{started.stdout}\n{started.stderr}", pytrace=False)
    try:
        yield
    finally:
        _script(name, "stop", env)


@pytest.fixture(scope="session")
def kafka() -> Iterator[str]:
    """A real Kafka broker (KRaft, single node); its bootstrap address."""
    with _running_service("kafka.sh", _service_env()):
        yield KAFKA


@pytest.fixture(scope="session")
def clickhouse_server() -> Iterator[str]:
    """A real ClickHouse server (Debian's 18.16); its native-protocol address."""
    with _running_service("clickhouse.sh", _service_env()):
        yield CLICKHOUSE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def migrated_warehouse(backend: str, folder: Path, prefix: str) -> Iterator[Warehouse]:
    """A migrated warehouse of its own on ``backend``, dropped afterwards on the server."""
    database = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = (f"chdb://{folder / 'chdb'}?database={database}" if backend == "chdb"
           else f"clickhouse://{CLICKHOUSE}/{database}")
    with connect(url) as found:
        migrate(found)
        yield found
        if backend != "chdb":
            found.execute(f"DROP DATABASE IF EXISTS {database}")


@dataclass
class Worker:
    """A `touchpoint worker` subprocess with its own topics, group and database."""

    settings: Settings
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _publisher: Publisher | None = field(default=None, repr=False)

    @property
    def topics(self) -> TopicNames:
        return TopicNames.of(self.settings)

    @property
    def backend(self) -> str:
        return self.settings.warehouse.backend

    def start(self, timeout: float = 90) -> None:
        """Start the worker process and wait until it answers ``/status``."""
        self.launch()
        self.wait_answering(timeout)

    def launch(self) -> None:
        """Start the worker process without waiting for it (``wait_answering``)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchpoint.cli", "worker"], env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_answering(self, timeout: float = 90) -> None:
        """Wait until the launched worker answers ``/status``."""
        assert self.process is not None, "not launched"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited at start:\n{self.log_tail()}", pytrace=False)
            if self.status() is not None:
                return
            time.sleep(0.3)
        pytest.fail(f"worker did not answer within {timeout}s:\n{self.log_tail()}", pytrace=False)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"worker ignored SIGTERM for {timeout}s:\n{self.log_tail()}")
        return self.process.returncode

    def status(self) -> dict[str, Any] | None:
        return WorkerAPI(self.settings).status()

    def get(self, path: str, *, token: str | None = "", data: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
        """Ask the worker's web server; ``token`` "" is this worker's own, ``None`` none."""
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token or self.settings.api_token}")
        request = urllib.request.Request(f"http://127.0.0.1:{self.settings.web_port}{path}",
                                         data=data, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def query(self, sql: str) -> QueryResult:
        """Ask the warehouse: through the worker for chdb, directly for the server."""
        if self.backend == "chdb" and self.process is not None and self.process.poll() is None:
            return query_worker(self.settings, sql)
        with connect(self.settings.warehouse) as warehouse:
            warehouse.use_database()
            return warehouse.query(sql)

    def scalar(self, sql: str) -> Any:
        return self.query(sql).rows[0][0]

    def wait_for(self, sql: str, expected: Any, timeout: float = 60) -> Any:
        """Poll ``sql`` until it returns ``expected`` (a scalar); fail with the last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(sql)
            if value == expected:
                return value
            time.sleep(0.3)
        pytest.fail(f"{sql!r} gave {value!r}, expected {expected!r} within {timeout}s\n"
                    f"status: {self.status()}\n{self.log_tail()}", pytrace=False)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher.from_settings(self.settings)
        return self._publisher

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        if self.process is not None:
            self.stop()


WorkerFactory = Callable[..., Worker]


def offsets(group: str, topics: list[str], timeout: float = 15) -> OffsetSample:
    """One reading of ``topics``' end offsets and ``group``'s commits, as the dashboard's.

    A new client may not have a topic's partitions at first: read again (within
    ``timeout``) until every topic has some.
    """
    monitor = OffsetMonitor(bootstrap=[KAFKA], group=group, topics=topics)
    deadline = time.monotonic() + timeout
    try:
        sample = monitor.sample()
        while {t for t, _ in sample.end} != set(topics) and time.monotonic() < deadline:
            time.sleep(0.2)
            sample = monitor.sample()
        return sample
    finally:
        monitor.close_clients()


def topic_records(topic: str) -> list[Any]:
    """Every record on ``topic`` now, partition by partition, each in order."""
    consumer = KafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list[Any] = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=1000).values():
                found += records
        return found
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def worker_factory(kafka: str, clickhouse_server: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFactory]:
    """Make workers on either backend, each with its own topics, group and database."""
    made: list[Worker] = []

    def make(backend: str, *, start: bool = True, **overrides: str) -> Worker:
        tag = uuid.uuid4().hex[:10]
        home = tmp_path_factory.mktemp(f"worker-{backend}")
        url = (f"chdb://{home / 'chdb'}?database=tp_{tag}" if backend == "chdb"
               else f"clickhouse://{CLICKHOUSE}/tp_{tag}")
        # people's SQL on the server goes through its read-only user, as deployed
        reader = ({"TOUCHPOINT_CLICKHOUSE_QUERY_URL":
                   f"clickhouse://touchpoint_reader@{CLICKHOUSE}/tp_{tag}"}
                  if backend == "clickhouse" else {})
        env = {
            **os.environ, **reader,
            "TOUCHPOINT_HOME": str(home), "TOUCHPOINT_KAFKA_BOOTSTRAP": KAFKA,
            "TOUCHPOINT_TOPIC_PREFIX": f"t{tag}.", "TOUCHPOINT_APP_ID": f"tp-test-{tag}",
            "TOUCHPOINT_TOPIC_PARTITIONS": "3", "TOUCHPOINT_CLICKHOUSE_URL": url,
            "TOUCHPOINT_WEB_PORT": str(free_port()), "TOUCHPOINT_PII_SALT": "test-salt-of-16-chars",
            "TOUCHPOINT_SINK_FLUSH_SECONDS": "0.3", "TOUCHPOINT_LOG_LEVEL": "info",
            **overrides,
        }
        settings = load_settings(env)
        ensure_topics(settings)
        worker = Worker(settings, env, home / "worker.log")
        made.append(worker)
        if start:
            worker.start()
        return worker

    make.made = made  # type: ignore[attr-defined]  # for _stop_the_test_s_own_workers
    yield make
    # Stop every worker while Kafka still runs (a worker whose broker is gone cannot
    # commit and hangs in shutdown); SIGKILL what does not stop; raise only at the end.
    running = [w for w in made if w.process is not None and w.process.poll() is None]
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    stuck = []
    for worker in running:
        try:
            remaining = max(deadline - time.monotonic(), 0.1)
            worker.process.wait(timeout=remaining)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            worker.process.kill()  # type: ignore[union-attr]
            worker.process.wait()  # type: ignore[union-attr]
            stuck.append(worker.settings.app_id)
    ARTIFACTS.mkdir(exist_ok=True)
    for worker in made:
        if worker._publisher is not None:
            worker._publisher.close()
        if worker.log_path.exists():
            shutil.copy(worker.log_path, ARTIFACTS / f"{worker.settings.app_id}.log")
    assert not stuck, f"workers ignored SIGTERM for 60 s and were killed: {stuck}"


@pytest.fixture(autouse=True)
def _stop_the_test_s_own_workers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the workers a test started itself once it is over.

    Workers of module fixtures are made before this runs and live on for their module;
    left running, every test's workers would share the machine's cores until the
    session ends, and a loaded machine slows every later test.
    """
    if "worker_factory" not in request.fixturenames:
        yield
        return
    made: list[Worker] = request.getfixturevalue("worker_factory").made
    before = len(made)
    yield
    for worker in made[before:]:
        if worker.process is not None and worker.process.poll() is None:
            worker.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def worker(request: pytest.FixtureRequest, worker_factory: WorkerFactory) -> Worker:
    """One running worker per backend for the module's tests."""
    return worker_factory(request.param)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's chromium and chromium-driver; `make test` installs them)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make test` installs Debian's chromium "
                    "and chromium-driver (apt-get install chromium chromium-driver)",
                    pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,900", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
