"""Batch delivery: a stage takes its topic's records a batch at a time, past Faust's streams.

Faust hands every record to a stream through its conductor, a channel queue, the
stream's iterator and a take buffer, and acknowledges it through the stream again: about
a quarter of a worker's CPU went there, once per record and per stage. A
:class:`BatchStream` gets the records of its topics straight from the consumer's delivery
loop (``consumer.Consumer._drain_messages``), a fetched batch at a time, as light
stand-ins for Faust's ``Event`` (:class:`Delivered`), so the stages keep their code for
events, tables and changelogs. What
Faust's path did per record is done here per batch, or kept as it was:

- The consumer tracks each record for acknowledgement (``Consumer.track_message``, the
  sensors' ``on_message_in``; the set of unacknowledged records only where the app waits
  for it, ``stream_wait_empty``) and counts one reference per stage reading its topic;
  an acknowledgement from each stage makes the record committable, as with streams.
- Flow control: the delivery loop hands records over only while flow is active (not
  during a rebalance or table recovery), as Faust's conductor does, and a batch taken
  while flow is not active, or holding records fetched in an earlier generation, gives
  the stage only the current ones; the others stay unacknowledged and are read again
  by the partition's owner.
- Back-pressure: a stage that holds ``maxsize`` records pauses fetching of the
  partitions that filled it (``Consumer.on_buffer_full``) until it has taken half.
  Unlike Faust's delivery into a full stream buffer, the delivery loop does not wait
  for it: it hands the full stage the rest of what was already fetched for those
  partitions and goes on with the other stages' records. Waiting held back every stage
  behind the slowest: in a backlog the link stage, whose records came in the same
  fetches as the profiles stage's, spent most of its time waiting for them. Only a stage
  holding ``limit`` records (four times ``maxsize``) makes the loop wait until it has
  room.

The agent stays a Faust agent (subscription, assignment, restart after a crash); its
function reads its :class:`BatchStream` instead of the stream Faust gives it, which stays
empty.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from time import monotonic
from typing import Any, cast

import faust
from faust.types import TP, EventT, Message
from faust.types.tuples import ack_lock

__all__ = ["FORWARD_WITHIN", "LIMIT_FACTOR", "MAXSIZE", "BatchStream", "Delivered", "ack_all",
           "batch_stream", "decoded", "routes_of"]

#: Records a stage may hold before the partitions feeding it are paused (Faust's default
#: ``stream_buffer_maxsize``).
MAXSIZE = 4096
#: Records a stage may hold, as a multiple of its ``maxsize``, before the delivery loop
#: waits for it. What it holds past ``maxsize`` is what was fetched for its partitions
#: before they were paused, so this is a backstop (how often it is reached is not measured).
LIMIT_FACTOR = 4
#: The longest a stage that forwards what it reads (ingest, identity, link) waits to fill
#: a batch, in seconds. At 2,000 events/s 50 ms rather than 20 took 5 % off the worker's
#: CPU and added about 0.1 s to signal latency (``docs/benchmarks.md``); a backlog fills
#: a batch at once.
FORWARD_WITHIN = 0.05


class BatchStream:
    """The records of some topics, for one stage, taken in batches.

    Filled by the consumer's delivery loop (:meth:`put`); read by one agent with
    :meth:`take` (acknowledged by the stage) or :meth:`take_acked` (acknowledged once
    the stage asks for the next batch, like Faust's ``take_events``).
    """

    def __init__(self, app: faust.App, topics: Iterable[str], *, maxsize: int = MAXSIZE) -> None:
        self.app = app
        self.topics = tuple(topics)
        self.maxsize = maxsize
        self.limit = LIMIT_FACTOR * maxsize
        #: Faust's ``Stream.enable_acks``; kept for code that turns it off (``behind.py``).
        self.enable_acks = True
        self._events: deque[EventT] = deque()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._room = asyncio.Event()  # set while it is not full()
        self._room.set()
        self._paused: set[TP] = set()
        self._fill_to = 0  # the batch size a taker waits for (``_full``)

    def __len__(self) -> int:
        return len(self._events)

    def full(self) -> bool:
        """Whether the delivery loop waits: ``maxsize`` records held, none awaited.

        A stage waiting to fill a batch larger than ``maxsize`` (minutes takes as many
        records as a warehouse insert holds) is not full until it has its batch: the
        loop waiting on it would stop every stage until the stage's wait ran out.
        """
        held = len(self._events)
        return held >= self.maxsize and held >= self._fill_to

    def over_limit(self) -> bool:
        """Whether the delivery loop waits for it: ``limit`` records held, none awaited."""
        held = len(self._events)
        return held >= self.limit and held >= self._fill_to

    async def room(self) -> None:
        """Wait until it is not :meth:`full`."""
        await self._room.wait()

    def put(self, events: list[EventT]) -> None:
        """Hand over ``events`` (delivery loop); pause their partitions if this is full."""
        held = self._events
        held.extend(events)
        self._arrived.set()
        if len(held) >= self._fill_to:
            self._full.set()
        if self.full():
            self._room.clear()
        if len(held) >= self.maxsize and not self.app.in_recovery:
            consumer = self.app.consumer
            # Faust's own TP: the consumer's partition sets assert it (a message's
            # ``tp`` is the client's TopicPartition)
            for tp in {TP(event.message.topic, event.message.partition) for event in events}:
                if tp not in self._paused:
                    self._paused.add(tp)
                    consumer.on_buffer_full(tp)

    async def take(self, max_: int, within: float) -> AsyncIterator[list[EventT]]:
        """Batches of at most ``max_`` records, waiting up to ``within`` s to fill one.

        The stage acknowledges each record (:meth:`ack`) when it is done with it.
        """
        while True:
            yield await self._next(max_, within)

    async def take_acked(self, max_: int, within: float) -> AsyncIterator[list[EventT]]:
        """Like :meth:`take`; each batch is acknowledged when the next one is asked for."""
        while True:
            batch = await self._next(max_, within)
            yield batch
            ack_all(self.app, batch)

    async def ack(self, event: EventT) -> bool:
        """Acknowledge ``event`` for this stage (Faust's ``Stream.ack``)."""
        return event.ack()

    def ack_all(self, events: Iterable[EventT]) -> None:
        """Acknowledge ``events`` for this stage, as :meth:`ack` each (:func:`ack_all`)."""
        ack_all(self.app, events)

    async def _next(self, max_: int, within: float) -> list[EventT]:
        held = self._events
        while not held:
            self._arrived.clear()
            await self._arrived.wait()
        if len(held) < max_ and within > 0:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes
            # as the wait ends, and a stage that ignores its cancellation keeps the
            # worker from stopping.
            self._fill_to = max_
            self._full.clear()
            self._room.set()  # not full while it waits for more (full())
            timer = asyncio.get_running_loop().call_later(within, self._full.set)
            try:
                await self._full.wait()
            finally:
                timer.cancel()
                self._fill_to = 0
        batch = [held.popleft() for _ in range(min(max_, len(held)))]
        if not self.full():
            self._room.set()
        if self._paused and len(held) <= self.maxsize // 2:
            consumer, paused = self.app.consumer, self._paused
            self._paused = set()
            for tp in paused:
                consumer.on_buffer_drop(tp)
        return self._current(batch)

    def _current(self, batch: list[EventT]) -> list[EventT]:
        """The records of ``batch`` that flow and generation allow.

        Faust's stream skips a record while flow is not active (a rebalance or table
        recovery under way) or when it was fetched in an earlier generation; so does
        this. A skipped record is not acknowledged: the partition's owner, this worker
        or another, reads it again from the committed offset.
        """
        app = self.app
        generation = app.consumer_generation_id
        if not app.flow_control.is_active():
            return []
        if all(event.message.generation_id == generation for event in batch):
            return batch
        return [event for event in batch if event.message.generation_id == generation]


def batch_stream(app: faust.App, topic: faust.TopicT, **options: Any) -> BatchStream:
    """A :class:`BatchStream` of ``topic``'s records, routed to it by ``app``'s consumer.

    Every stage that reads ``topic`` must read it this way: once a topic is routed, the
    Faust streams subscribed to it get none of its records.
    """
    stream = BatchStream(app, topic.topics, **options)
    routes = routes_of(app)
    for name in stream.topics:
        routes.setdefault(name, []).append(stream)
    return stream


def routes_of(app: object) -> dict[str, list[BatchStream]]:
    """Topic name -> the batch streams its records go to (empty: every topic via Faust)."""
    routes = getattr(app, "batch_routes", None)
    if routes is None:
        routes = {}
        app.batch_routes = routes  # type: ignore[attr-defined]
    return routes


def deliver(app: Any, batches: dict[int, tuple[list[BatchStream], list[EventT]]]) -> None:
    """Hand each gathered batch to its streams (delivery loop; see ``consumer.py``)."""
    inbound_time = app.monitor.stream_inbound_time
    now = monotonic()
    if app.in_recovery:  # counted per batch here, not per record in the delivery loop
        app.consumer.records_in_recovery += sum(len(e) for _, e in batches.values())
    for streams, events in batches.values():
        for stream in streams:
            stream.put(events)
        for tp in {event.message.tp for event in events}:
            # Faust's stall check reads when each partition last fed a stream
            inbound_time[tp] = now


class Delivered:
    """A record as a stage gets it: what stages and tables use of Faust's ``Event``.

    ``key``, ``value``, ``message`` and :meth:`ack`, as on an ``Event`` (a table write
    reads the current event's ``message`` for its changelog partition, and
    ``outbox.make_current`` keeps a weak reference to it), without Faust's per-record
    copy of the headers into a dict. ``decoded`` lets the stages that read one topic
    decode each record once (:func:`decoded`).
    """

    __slots__ = ("__weakref__", "app", "decoded", "key", "message", "readers", "value")

    def __init__(self, app: Any, message: Message, readers: int = 1) -> None:
        self.app = app
        self.key = message.key
        self.value = message.value
        self.message = message
        self.decoded: Any = None
        #: stages still to read ``decoded``: the last one lets it go (it may be held,
        #: unacknowledged, for seconds after)
        self.readers = readers

    @property
    def headers(self) -> dict[str, bytes]:
        """The record's headers as a dict (as ``Event.headers``)."""
        return dict(self.message.headers or ())

    def ack(self) -> bool:
        """Acknowledge the record for one stage (as ``Event.ack``)."""
        return bool(self.message.ack(self.app.consumer))


def decoded(event: EventT, decode: Callable[[bytes], Any]) -> Any:
    """``decode(event.value)``, once for all the stages that get the same record.

    The decoded value is shared: the stages only read it. Each stage asks once per
    record; the last one to ask drops it from the record.
    """
    if isinstance(event, Delivered):
        found = event.decoded
        if found is None:
            found = decode(event.value)
        event.readers -= 1
        event.decoded = found if event.readers > 0 else None
        return found
    return decode(event.value)


def ack_all(app: Any, events: Iterable[EventT]) -> None:
    """Acknowledge each of ``events`` for one stage, as ``event.ack()`` does, in one go.

    A record's last reader makes it committable (``Consumer.ack_many``): the same
    reference counts as Faust's ``Message.ack``, under one hold of its lock for the
    whole batch instead of three a record. The records are the consumer's (:func:`track`),
    whose final acknowledgement is the consumer's, as ``ConsumerMessage.on_final_ack``.
    """
    final = []
    with ack_lock:
        for event in events:
            message = event.message
            if message.acked:
                continue
            # Message.decref, whose lock this already holds
            refcount = message.refcount = max(message.refcount - 1, 0)
            if not refcount:
                final.append(message)
        if final:
            app.consumer.ack_many(final)


def track(app: Any, consumer: Any, message: Message, streams: list[BatchStream], *,
          wait_empty: bool | None = None) -> EventT:
    """The event for ``message``, tracked for acknowledgement by each of ``streams``.

    ``message`` is new from this fetch: no other thread has it yet, so its count is set
    without ``Message.incref``'s lock (one acquire a record). ``wait_empty`` is the app's
    ``stream_wait_empty``, which the delivery loop reads once a fetch: a Faust setting
    costs a lookup through its registry.
    """
    message.refcount += len(streams)
    if app.conf.stream_wait_empty if wait_empty is None else wait_empty:
        consumer.track_message(message)
    else:
        # Consumer.track_message but its weak set of unacknowledged records, which only
        # wait_empty reads: the worker does not wait for them (stream_wait_empty)
        consumer._on_message_in(message.tp, message.offset, message)
    return cast(EventT, Delivered(app, message, len(streams)))
