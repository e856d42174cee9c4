"""A worker whose local table state is damaged starts anyway and rebuilds it from Kafka."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from touchpoint.streams.ops.lag import consumed_topics, partition_lag

from .conftest import Worker, WorkerFactory, offsets

pytestmark = pytest.mark.integration

T0 = 1_795_000_000_000
DAY = 86_400_000
CUSTOMERS = 6
PROFILE_SQL = (
    "SELECT customer_id, toUnixTimestamp(first_seen) AS first_seen, "
    "toUnixTimestamp(last_seen) AS last_seen, total_spend, orders, contacts_web, "
    "contacts_store FROM customer_profiles"
)


def _visits(worker: Worker, run: str, day: int) -> None:
    """Each customer: a page view as a cookie (the identity graph links it), a purchase."""
    send = worker.publisher.publish
    for i in range(CUSTOMERS):
        at = T0 + day * DAY + i * 1000
        send("web", {"event_id": f"{run}-{i}-{day}-w", "type": "page_view", "occurred_at": at,
                     "anonymous_id": f"ck-{run}-{i}", "url": "/"})
        send("store", {"event_id": f"{run}-{i}-{day}-s", "type": "purchase",
                       "occurred_at": at + 500, "customer_id": f"C-{run}-{i}",
                       "store_id": "SH-1", "amount": 10.0 * (i + 1)})
    worker.publisher.flush()


def _profiles(worker: Worker, run: str, **expected: Any) -> list[dict[str, Any]]:
    """The run's profiles, once every one of them has the ``expected`` values."""
    match = " AND ".join(f"{name} = {value!r}" for name, value in expected.items())
    worker.wait_for(f"SELECT count() FROM customer_profiles "
                    f"WHERE customer_id LIKE 'C-{run}-%' AND {match}", CUSTOMERS)
    rows = worker.query(f"{PROFILE_SQL} WHERE customer_id LIKE 'C-{run}-%' "
                        "ORDER BY customer_id").dicts()
    assert len(rows) == CUSTOMERS
    return rows


def _wait_all_committed(worker: Worker, timeout: float = 60) -> None:
    """Wait until the group has committed every record it reads: none is read again."""
    topics = consumed_topics(worker.topics)
    deadline = time.monotonic() + timeout
    while True:
        lag = partition_lag(offsets(worker.settings.app_id, topics))
        if {row["topic"] for row in lag} == set(topics) and not any(row["lag"] for row in lag):
            return
        assert time.monotonic() < deadline, f"not committed: {lag}\n{worker.log_tail()}"
        time.sleep(0.3)


def _table_databases(worker: Worker) -> list[Path]:
    """The RocksDB folders of the worker's table partitions."""
    settings = worker.settings
    datadir = settings.home / "worker" / f"{settings.app_id}-{settings.web_port}"
    return sorted(current.parent for current in datadir.rglob("*.db/CURRENT"))


def test_a_worker_with_damaged_table_databases_rebuilds_them_from_the_changelogs(
        worker_factory: WorkerFactory) -> None:
    worker = worker_factory("chdb", TOUCHPOINT_PROFILE_EMIT_SECONDS="1")
    run = uuid.uuid4().hex[:8]
    # A login links each cookie to its customer; later views come with the cookie only.
    # Both the profiles and those links are table state.
    send = worker.publisher.publish
    for i in range(CUSTOMERS):
        send("web", {"event_id": f"{run}-{i}-login", "type": "login",
                     "occurred_at": T0 + i * 1000 - 500, "anonymous_id": f"ck-{run}-{i}",
                     "customer_id": f"C-{run}-{i}"})
    _visits(worker, run, day=0)
    before = _profiles(worker, run, contacts_web=2, contacts_store=1, orders=1)
    # Nothing is read again after the restart: what the profiles know is the tables' state.
    _wait_all_committed(worker)
    assert worker.stop() == 0

    databases = _table_databases(worker)
    names = {path.name for path in databases}
    assert {f"touchpoint-profiles-{p}.db" for p in range(3)} <= names, names
    damaged = {}
    for path in databases:  # as a disk or a copy that went wrong leaves it
        damaged[path] = (path / "CURRENT").read_bytes().rstrip(b"\n")
        (path / "CURRENT").write_bytes(damaged[path])

    worker.start()  # the old code exits once it opens them: "Corruption: CURRENT file ..."
    warnings = [f"RocksDB database {path} is damaged (Corruption: CURRENT file does not end "
                f"with newline); moved to {path}.corrupt-" for path in databases]
    deadline = time.monotonic() + 60
    while missing := [w for w in warnings if w not in worker.log_path.read_text()]:
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, f"not logged: {missing}\n{worker.log_tail()}"
        time.sleep(0.3)
    for path in databases:
        [aside] = path.parent.glob(f"{path.name}.corrupt-*")
        assert (aside / "CURRENT").read_bytes() == damaged[path]
    assert _profiles(worker, run, contacts_web=2, orders=1) == before

    # The rebuilt tables go on from the old state: counts, spend, the cookie's customer.
    _visits(worker, run, day=1)
    after = _profiles(worker, run, contacts_web=3, contacts_store=2, orders=2)
    assert [(r["customer_id"], r["total_spend"], r["first_seen"], r["last_seen"])
            for r in after] == [
        (f"C-{run}-{i}", 2 * 10.0 * (i + 1), (T0 + i * 1000 - 500) // 1000,
         (T0 + DAY + i * 1000 + 500) // 1000) for i in range(CUSTOMERS)]
