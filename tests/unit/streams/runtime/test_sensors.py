"""Sensors are called per record only for the hooks they implement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust.sensors import Sensor
from faust.types import TP

from touchpoint.streams.ops.metrics import Metrics, MetricsSensor
from touchpoint.streams.runtime import sensors
from touchpoint.streams.runtime.app import App

PARTITION = TP("p.touchpoints.web", 0)


class Timing(Sensor):
    """Keeps a state from the start of an event to its end, as Faust's monitor did."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[Any] = []

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        return {"offset": offset}

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any,
                            state: Any = None) -> None:
        self.finished.append(state)


class Counting(Sensor):
    def __init__(self) -> None:
        super().__init__()
        self.read: list[int] = []

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.read.append(offset)


@pytest.fixture
def app() -> Iterator[App]:
    loop = asyncio.new_event_loop()
    made = App("test-sensors", broker="kafka://127.0.0.1:1", autodiscover=False, loop=loop)
    made.sensors.add(made.monitor)  # as Faust's on_init_dependencies does at start
    yield made
    loop.close()


def test_the_app_has_the_lean_delegate_and_monitor(app: App) -> None:
    assert isinstance(app.sensors, sensors.Sensors)
    assert isinstance(app.monitor, sensors.Monitor)
    assert app.monitor in set(app.sensors)


def test_a_sensor_is_called_only_for_the_hooks_it_implements(app: App) -> None:
    counting, timing = Counting(), Timing()
    app.sensors.add(counting)
    app.sensors.add(timing)
    hooks = app.sensors._hooks  # type: ignore[attr-defined]
    assert [s for s, _ in hooks["on_message_in"]] == [counting]
    assert {s for s, _ in hooks["on_stream_event_in"]} == {timing, app.monitor}
    assert [s for s, _ in hooks["on_stream_event_out"]] == [timing]
    assert hooks["on_message_out"] == hooks["on_table_get"] == hooks["on_table_set"] == ()

    app.sensors.on_message_in(PARTITION, 7, object())
    state = app.sensors.on_stream_event_in(PARTITION, 7, object(), object())
    app.sensors.on_stream_event_out(PARTITION, 7, object(), object(), state)
    assert counting.read == [7]
    assert timing.finished == [{"offset": 7}]  # its own state, not the monitor's

    app.sensors.remove(counting)
    app.sensors.on_message_in(PARTITION, 8, object())
    assert counting.read == [7]


def test_without_a_sensor_keeping_state_an_event_carries_none(app: App) -> None:
    assert app.sensors.on_stream_event_in(PARTITION, 1, object(), object()) is None
    app.sensors.on_stream_event_out(PARTITION, 1, object(), object(), None)  # no error


def test_the_monitor_keeps_only_when_a_partition_last_fed_a_stream(app: App) -> None:
    monitor = app.monitor
    app.sensors.on_message_in(PARTITION, 3, object())
    state = app.sensors.on_stream_event_in(PARTITION, 3, object(), object())
    app.sensors.on_stream_event_out(PARTITION, 3, object(), object(), state)
    assert PARTITION in monitor.stream_inbound_time  # Faust's stall check reads this
    assert monitor.events_total == monitor.messages_received_total == 0


def test_the_workers_own_counters_still_count(app: App) -> None:
    metrics = Metrics()
    app.sensors.add(MetricsSensor(metrics))
    app.sensors.on_message_in(PARTITION, 3, object())
    assert metrics.messages_in[PARTITION.topic] == 1
