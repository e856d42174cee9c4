"""/health: ready, and 503 saying why when a stage stopped, Kafka is unreadable or writes fail."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from touchpoint.sinks.writer import WriterStats
from touchpoint.streams.ops.lag import OffsetSample
from touchpoint.streams.ops.metrics import health, stopped_stages

NOW = 1_795_000_000.0
READY = {"ready": True, "tables_recovered": True, "rebalancing": False, "in_recovery": False}


def _app(*, crashes: dict[str, str] | None = None, agents: dict[str, Any] | None = None) -> Any:
    completed = SimpleNamespace(is_set=lambda: True)
    app = SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
                          rebalancing=False, in_recovery=False, agents=agents or {})
    if crashes is not None:
        app.stage_crashes = crashes
    return app


def _actor(reason: BaseException | None) -> Any:
    return SimpleNamespace(crashed=reason is not None, crash_reason=reason)


def _monitor(sampled_at: float | None, error: str | None = None) -> Any:
    samples = [] if sampled_at is None else [OffsetSample(at=sampled_at, end={})]
    return SimpleNamespace(latest=samples[-1] if samples else None, error=error)


def test_a_worker_with_nothing_wrong_is_ready_and_says_only_that() -> None:
    state = health(_app(crashes={}, agents={"touchpoint.ingest": SimpleNamespace(
        _actors=[_actor(None)])}), monitor=_monitor(NOW - 11), writer_stats=WriterStats(),
        since=NOW - 600, now=NOW)
    assert state == READY


def test_a_stage_that_crashed_fails_health_until_restart() -> None:
    state = health(_app(crashes={"touchpoint.ingest": "MessageSizeTooLargeError"}), now=NOW)
    assert state == {**READY, "ready": False, "problems": [
        "stage touchpoint.ingest stopped (MessageSizeTooLargeError): restart the worker"]}


def test_an_actor_crashed_now_counts_one_cancelled_by_a_rebalance_does_not() -> None:
    agents = {"touchpoint.profiles": SimpleNamespace(_actors=[_actor(KeyError("C000123"))]),
              "touchpoint.identity": SimpleNamespace(_actors=[_actor(asyncio.CancelledError())]),
              "touchpoint.ingest": SimpleNamespace(_actors=[_actor(None)])}
    assert stopped_stages(_app(agents=agents)) == {"touchpoint.profiles": "KeyError"}
    state = health(_app(agents=agents), now=NOW)
    # the error's type only: its message may be about a customer
    assert state["problems"] == ["stage touchpoint.profiles stopped (KeyError): restart the worker"]
    assert "C000123" not in repr(state)


@pytest.mark.parametrize(("sampled_at", "error", "problem"), [
    (NOW - 29, "NoBrokersAvailable: NoBrokersAvailable", None),  # within the grace
    (NOW - 31, "NoBrokersAvailable: NoBrokersAvailable",
     "Kafka unreachable: no offsets read for 31 s (NoBrokersAvailable: NoBrokersAvailable)"),
    (NOW - 45, None, "Kafka unreachable: no offsets read for 45 s"),  # the sampling stalled
    (None, "KafkaTimeoutError: timed out", "Kafka unreachable: no offsets read for 60 s "
     "(KafkaTimeoutError: timed out)"),  # never read since the start
])
def test_kafka_unread_beyond_the_grace_fails_health(sampled_at: float | None, error: str | None,
                                                   problem: str | None) -> None:
    state = health(_app(), monitor=_monitor(sampled_at, error), since=NOW - 60, now=NOW)
    assert state.get("problems") == (None if problem is None else [problem])
    assert state["ready"] is (problem is None)


def test_a_worker_just_started_is_not_failed_for_kafka_yet() -> None:
    state = health(_app(), monitor=_monitor(None, "NoBrokersAvailable"), since=NOW - 5,
                   now=NOW)
    assert state == READY


def test_warehouse_writes_failing_for_long_fail_health() -> None:
    failing = WriterStats(retrying_since=NOW - 121, last_error="Code: 53. row C000123 ...")
    state = health(_app(), writer_stats=failing, now=NOW)
    assert state["problems"] == ["warehouse writes failing for 121 s (retried; see /status)"]
    assert "C000123" not in repr(state)
    assert health(_app(), writer_stats=WriterStats(retrying_since=NOW - 100), now=NOW) == READY


def test_every_problem_is_listed() -> None:
    state = health(_app(crashes={"b": "KeyError", "a": "ValueError"}),
                   monitor=_monitor(NOW - 100, "down"),
                   writer_stats=WriterStats(retrying_since=NOW - 500), now=NOW)
    assert state["problems"] == [
        "stage a stopped (ValueError): restart the worker",
        "stage b stopped (KeyError): restart the worker",
        "Kafka unreachable: no offsets read for 100 s (down)",
        "warehouse writes failing for 500 s (retried; see /status)"]


def test_the_app_remembers_a_crash_faust_reports_for_any_of_its_agents() -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    from touchpoint.streams.runtime.app import App

    async def scenario() -> dict[str, str]:
        app = App("health-test", broker="memory://", store="memory://", web_enabled=False,
                  loop=asyncio.get_running_loop())

        @app.agent(name="touchpoint.ingest")
        async def ingest(stream: Any) -> None:
            async for _ in stream:
                pass

        # Faust hands every agent's error to the app (Agent._execute_actor -> on_error)
        assert ingest._on_error == app._on_agent_error  # type: ignore[attr-defined]
        await app._on_agent_error(ingest, MessageSizeTooLargeError())
        return stopped_stages(app)

    assert asyncio.run(scenario()) == {"touchpoint.ingest": "MessageSizeTooLargeError"}
