"""Rebalances over and over: the two-worker profile test, repeated (opt-in).

Set ``TOUCHPOINT_STRESS_RUNS=N`` to run it N times, every other run with a third worker
that joins and leaves while the two are reading. Each run is a new consumer group over
the same simulated traffic, and must end with the profiles of one undisturbed worker, with
no offset skipped on either worker and no record handed to a stage during table
recovery. This is how the rebalance bug that ``Consumer._drain_messages`` mends (a
fetched batch still in delivery across a seek, see docs/design/runtime.md) was found: on
the code before the mend, the harness failed on its first run (the two-worker test in
test_customers.py, in about one full ``make test`` in five). ``make test`` does not run
it. Workers inherit the environment: ``TOUCHPOINT_STANDBY_REPLICAS=0`` runs it without
standby replicas, so that every rebalance recovers tables from their changelogs.

    TOUCHPOINT_STRESS_RUNS=10 .venv/bin/python -m pytest -q \
        tests/integration/test_rebalance_stress.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from . import test_customers
from .conftest import Worker, WorkerFactory
from .test_customers import (
    EVENTS,
    _records_in_recovery,
    _same_group,
    _settled,
    _sibling,
    _skipped_offsets,
)

reference = test_customers.reference  # the module fixture: one undisturbed worker

RUNS = int(os.environ.get("TOUCHPOINT_STRESS_RUNS", "0"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not RUNS, reason="opt-in: set TOUCHPOINT_STRESS_RUNS=N"),
]


def _differences(settled: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> str:
    got, want = {r[0]: r for r in settled}, {r[0]: r for r in expected}
    keys = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    return "\n".join(f"{k}: got {got.get(k)}\n{' ' * len(k)}  not {want.get(k)}"
                     for k in keys)


@pytest.mark.parametrize("run", range(max(RUNS, 1)))
def test_workers_joining_and_leaving_give_the_same_profiles_as_one(
        worker_factory: WorkerFactory, reference: tuple[Worker, list[tuple[Any, ...]]],
        run: int) -> None:
    first, expected = reference
    one = _sibling(worker_factory, first, start=False)
    same_group = _same_group(one)
    two = worker_factory("clickhouse", start=False, **same_group)
    one.start()
    two.start()
    members = [one, two]
    if run % 2:
        time.sleep(2 + run % 3)  # while the two are reading the backlog
        three = worker_factory("clickhouse", **same_group)
        members.append(three)
        time.sleep(3)
        three.stop()
    settled = _settled(one, EVENTS)
    assert settled == expected, _differences(settled, expected)
    assert [_skipped_offsets(member) for member in (one, two)] == [0, 0]
    assert [_records_in_recovery(member) for member in (one, two)] == [0, 0]
