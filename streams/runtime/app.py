"""The worker's Faust ``App``: Faust's, with every override of this package plugged in.

Its consumer transport is the generation-safe one (:mod:`.consumer`), its flow control
keeps stream buffers on resume, its tables batch their changelogs (:mod:`.changelog`),
its sensors cost per record only where they use it (:mod:`.sensors`), and it remembers
which agents crashed. What each replaces in Faust, and why: ``docs/design/runtime.md``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import faust
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from touchpoint.streams.runtime import changelog, consumer, sensors

__all__ = ["Agent", "App", "quiet_when_stopping"]

log = logging.getLogger(__name__)


class Agent(faust.Agent):
    """Faust's agent, whose stop also ends an actor its supervisor has not started yet.

    When a stage crashes, Faust's supervisor makes the replacement actor's task at once but
    starts its service only on its next round, up to seconds later. A stop in between
    stops the supervisor and the actors it started, then waits for every actor's task.
    Faust ends the actor it never started only through the stream it reads, and our stages
    read batch streams (``batches.py``), so that wait never ended and the worker ignored
    SIGTERM. Here every actor task still running after the supervisor's stop is
    cancelled, as Faust cancels those of the actors it started. No upstream issue found.
    """

    async def on_stop(self) -> None:
        """Stop the supervisor and its actors, then cancel and await every actor's task."""
        await self._stop_supervisor()
        tasks = [aref.actor_task for aref in self._actors if aref.actor_task is not None]
        for task in tasks:
            if not task.done():
                task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
        self._actors.clear()


class App(faust.App):
    """Faust's app with the generation-safe consumer of :mod:`touchpoint.streams.runtime.consumer`.

    Its tables batch their changelogs (:mod:`touchpoint.streams.runtime.changelog`), and its
    sensors cost per record only where they use it (:mod:`touchpoint.streams.runtime.sensors`).
    """

    #: How long a fetch may wait at the broker for a batch (``consumer.ConsumerThread``).
    fetch_wait_ms: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("Monitor", sensors.Monitor)
        kwargs.setdefault("Agent", Agent)
        super().__init__(*args, **kwargs)
        lean = sensors.Sensors(self)
        for sensor in self.sensors:  # none yet; kept should Faust add one here one day
            lean.add(sensor)
        self.sensors = lean
        #: Stages (agents) that stopped with an error: name -> the error's type (/health).
        self.stage_crashes: dict[str, str] = {}

    async def _on_agent_error(self, agent: Any, exc: BaseException) -> None:
        # Every agent's error comes here before Faust restarts the agent's actor; the
        # records the failed one held stay unacknowledged, so the crash is remembered.
        self.stage_crashes[str(agent.name)] = type(exc).__name__
        await super()._on_agent_error(agent, exc)

    # Faust's own timer shadows mode's classmethod timer, unchecked (no_type_check)
    def timer(self, interval: Any, **options: Any) -> Callable[..., Any]:  # type: ignore[override]
        """Faust's ``timer``, each round of it :func:`quiet_when_stopping`."""
        define = super().timer(interval, **options)
        return lambda fun: define(quiet_when_stopping(self, fun))

    def _new_transport(self) -> Any:
        return consumer.Transport(self.conf.broker_consumer, self)

    @cached_property
    def changelogs(self) -> changelog.ChangelogBatches:
        """The tables' changelog records, batched (:mod:`touchpoint.streams.runtime.changelog`)."""
        return changelog.ChangelogBatches(self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        """Flow control that keeps stream buffers on resume (:class:`consumer.FlowControl`)."""
        return consumer.FlowControl(lambda: getattr(self.tables, "_changelog_queue", None),
                                    loop=self.loop)


def quiet_when_stopping(app: Any, fun: Callable[..., Awaitable[None]]
                        ) -> Callable[..., Awaitable[None]]:
    """``fun``, whose error while ``app`` stops is logged instead of crashing the app.

    Faust stops the producer and the tables before the timers, and an error in a timer
    crashes the app: a worker stopped by SIGTERM during a round (the profiles emitter
    sending, a flush writing) exited with status 1 ("Producer service not yet
    started"). A round cut short by a stop loses nothing: the emitter publishes every
    profile it holds at the next start, and records not yet stored are not acknowledged.
    """

    @functools.wraps(fun)
    async def round_(*args: Any) -> None:
        try:
            await fun(*args)
        except Exception as exc:
            if not app.should_stop:
                raise
            log.info("%s ended by the stop: %r", getattr(fun, "__name__", fun), exc)

    return round_
