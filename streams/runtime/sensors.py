"""Faust's sensors at a cost per record only for sensors that use it.

:class:`Sensors` calls a sensor only for the per-record hooks its class overrides, and
:class:`Monitor` keeps of Faust's monitor only what Faust itself reads (when each
partition last fed a stream). Why: ``docs/design/runtime.md``.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.sensors import Monitor as FaustMonitor
from faust.sensors import Sensor, SensorDelegate
from faust.types import TP, AppT, EventT, Message, SensorT, StreamT

__all__ = ["PER_RECORD_HOOKS", "Monitor", "Sensors"]

#: The hooks Faust calls per record (and per table access).
PER_RECORD_HOOKS = ("on_message_in", "on_stream_event_in", "on_stream_event_out",
                    "on_message_out", "on_table_get", "on_table_set", "on_table_del")


class Monitor(FaustMonitor):
    """Faust's monitor, keeping per record only when each partition last fed a stream."""

    on_message_in = Sensor.on_message_in
    on_stream_event_out = Sensor.on_stream_event_out
    on_message_out = Sensor.on_message_out
    on_table_get = Sensor.on_table_get
    on_table_set = Sensor.on_table_set
    on_table_del = Sensor.on_table_del

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT,
                           event: EventT) -> None:
        """Note when ``tp`` last gave a stream an event (Faust's stall check reads it)."""
        self.stream_inbound_time[tp] = monotonic()


def _overrides(sensor: SensorT, hook: str) -> bool:
    return getattr(type(sensor), hook, None) is not getattr(Sensor, hook)


class Sensors(SensorDelegate):
    """Faust's sensor delegate, calling per record only the sensors that do something."""

    def __init__(self, app: AppT) -> None:
        super().__init__(app)
        self._hooks: dict[str, tuple[Any, ...]] = {}
        self._index()

    def add(self, sensor: SensorT) -> None:
        """Add ``sensor``, and call it for the per-record hooks it overrides."""
        super().add(sensor)
        self._index()

    def remove(self, sensor: SensorT) -> None:
        """Remove ``sensor``."""
        super().remove(sensor)
        self._index()

    def _index(self) -> None:
        # sorted by class name: the same order on every start, whatever the set's
        sensors = sorted(self._sensors, key=lambda s: type(s).__qualname__)
        self._hooks = {hook: tuple((s, getattr(s, hook)) for s in sensors if _overrides(s, hook))
                       for hook in PER_RECORD_HOOKS}

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        """Call before a record is delegated to streams."""
        for _, hook in self._hooks["on_message_in"]:
            hook(tp, offset, message)

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT,
                           event: EventT) -> dict[SensorT, Any] | None:
        """Call as a stream starts an event; the states of sensors that keep one."""
        states = None
        for sensor, hook in self._hooks["on_stream_event_in"]:
            state = hook(tp, offset, stream, event)
            if state is not None:
                if states is None:
                    states = {}
                states[sensor] = state
        return states

    def on_stream_event_out(self, tp: TP, offset: int, stream: StreamT, event: EventT,
                            state: dict[SensorT, Any] | None = None) -> None:
        """Call as a stream finishes an event, with each sensor's state from the start."""
        for sensor, hook in self._hooks["on_stream_event_out"]:
            hook(tp, offset, stream, event, state.get(sensor) if state else None)

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        """Call when a record is acknowledged by every stream."""
        for _, hook in self._hooks["on_message_out"]:
            hook(tp, offset, message)

    def on_table_get(self, table: Any, key: Any) -> None:
        """Call when a table value is read."""
        for _, hook in self._hooks["on_table_get"]:
            hook(table, key)

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Call when a table value is set."""
        for _, hook in self._hooks["on_table_set"]:
            hook(table, key, value)

    def on_table_del(self, table: Any, key: Any) -> None:
        """Call when a table key is deleted."""
        for _, hook in self._hooks["on_table_del"]:
            hook(table, key)
