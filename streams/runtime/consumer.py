"""The worker's Kafka consumer: Faust's, with acknowledgements that cannot outlive a rebalance.

:class:`Consumer` accepts acknowledgements only of records fetched in the current
consumer generation, delivers fetched records itself so that a seek to the committed
offsets ends delivery from batches fetched before it, and notes each partition's high
water once a fetch instead of once a record. :class:`ConsumerThread` lets
fetches wait at the broker for a batch, :class:`FlowControl` keeps stream buffers when
flow resumes, :func:`is_current` / :func:`only_current` let a stage drop records of
a partition it no longer owns, and :func:`committed_offset` says up to where a
partition's records are done for good. What each replaces in Faust, and why:
``docs/design/runtime.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, EventT, Message
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.utils.futures import notify
from mode.utils.queues import FlowControlEvent

from touchpoint.streams.runtime import batches, changelog

__all__ = [
    "FETCH_MIN_BYTES",
    "Consumer",
    "ConsumerThread",
    "FlowControl",
    "Transport",
    "committed_offset",
    "first_topics",
    "is_current",
    "only_current",
]

E = TypeVar("E", bound=EventT)

#: How much a fetch gathers at the broker before it answers, unless the wait runs out.
FETCH_MIN_BYTES = 64 * 1024
#: Most records the client makes of its fetched data at a time (one ``getmany``; the
#: app's ``broker_max_poll_records``). Faust sets no bound: in a backlog every fetch of up
#: to 1 MiB a partition became tens of thousands of objects at once, which waited their
#: turn while the garbage collector walked them (docs/design/runtime.md).
UNPACK_RECORDS = 1000


def first_topics(app: object) -> set[str]:
    """Topics whose fetched records each poll hands out first (:class:`ConsumerThread`)."""
    found = getattr(app, "first_topics", None)
    if found is None:
        found = set()
        app.first_topics = found  # type: ignore[attr-defined]
    return found


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose fetches wait at the broker for a batch.

    Faust asks the broker to answer a fetch as soon as it has one byte. Under load the
    worker then fetches, delivers and commits batches of a few records each, and at
    2,000 events/s those per-batch costs (the client's thread, its hand-over to the event
    loop, the broker's requests) left too little of its core for the stages. Here a
    fetch waits up to the app's ``fetch_wait_ms`` for :data:`FETCH_MIN_BYTES`; at 0 it
    answers at once, as Faust's does.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        client = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_wait_ms", 0)
        if wait_ms:
            # read by the client's fetcher when it starts (aiokafka has no setter)
            client._fetch_min_bytes = FETCH_MIN_BYTES
            client._fetch_max_wait_ms = wait_ms
        return client

    async def _fetch_records(self, consumer: Any, active_partitions: set[TP],
                             timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        """Faust's, but the records of :func:`first_topics` go out ahead of the rest.

        The client hands out what it fetched one partition's whole fetch after another,
        in the order the fetches came back, :data:`UNPACK_RECORDS` a poll. In a backlog
        the link stage's records (a quarter or more of the events pass its one
        partition on their way to the profiles stage) then waited behind every fetch of
        the profiles stage's partitions, and the link stage waited for them. Here a poll first takes
        up to half its records from those partitions, then fills up from the others.
        With nothing waiting there it is Faust's one call, with its wait.
        """
        first_names = first_topics(self.app)
        first = {tp for tp in active_partitions if tp.topic in first_names} \
            if first_names and active_partitions and max_records else set()
        if not first:
            return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                                max_records=max_records)
        assert max_records is not None
        early = await super()._fetch_records(consumer, first, timeout=0,
                                             max_records=max(1, max_records // 2))
        rest = active_partitions - first
        if not early:
            return await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                                max_records=max_records)
        if not rest:
            return early
        taken = sum(len(records) for records in early.values())
        later = await super()._fetch_records(consumer, rest, timeout=0,
                                             max_records=max_records - taken)
        return {**early, **later}


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, acknowledging only records of the current generation."""

    #: Generation whose records may be acknowledged; ``None`` while partitions are revoked.
    ack_generation: int | None = None
    #: Acknowledgements refused because their record came from an earlier generation.
    stale_acks: int = 0
    #: Batches with records skipped because their partition was revoked (:func:`only_current`).
    batches_abandoned: int = 0
    #: Fetched records not delivered because a seek made their batch stale (fetched again).
    records_refetched: int = 0
    #: Offsets Faust counts as done because the client skipped them (a gap): transaction
    #: markers or compaction on a topic that has them, skipped records anywhere else.
    offsets_taken_as_gaps: int = 0
    #: Records handed to a stage while tables were being recovered from their changelogs,
    #: which a stage must not see (it would read and write tables not yet recovered).
    records_in_recovery: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        #: Bumped as every seek to the committed offsets starts.
        self._seek_epoch = 0
        #: Set while no seek to the committed offsets is running.
        self._seek_idle = asyncio.Event()
        self._seek_idle.set()
        self._seeks_running = 0
        #: Where the latest seek to the committed offsets put each stream partition, since
        #: its assignment (0: the group has no commit for it).
        self._seek_targets: dict[TP, int] = {}

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _seek(self, partition: TP, offset: int) -> None:
        """Seek ``partition`` on the consumer's own thread, as Faust's ``seek_wait`` does.

        Faust's seek calls the client from the worker's event loop, while the client's
        fetcher runs in the consumer thread: a seek that drops a partition's buffered
        records while that thread hands out fetched records made it fail with a
        ``KeyError`` on the partition, which crashed the fetcher and stopped the worker
        (once in a two-worker start, where a fresh group's partitions are sought to 0).
        """
        thread = self._thread

        async def seek_there() -> None:
            thread.seek(partition, offset)

        await thread.call_thread(seek_there)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets, ending delivery from batches fetched before."""
        self._seek_epoch += 1
        self._seeks_running += 1
        self._seek_idle.clear()
        try:
            await super().perform_seek()
        finally:
            self._seeks_running -= 1
            if not self._seeks_running:
                self._seek_idle.set()

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek as Faust does, and stream partitions the group never committed to their start.

        The client moves only partitions with a committed offset above zero, and leaves
        the others where its position is. After a batch was ended by a seek
        (:meth:`_reposition`) that position can be past records nobody processed, so here
        every stream partition is positioned, and the offset noted. (At 0 the client
        starts from the earliest record it still has.)
        """
        committed = await super().seek_to_committed()
        for tp, offset in committed.items():
            if self._is_changelog_tp(tp):
                continue  # table recovery positions the changelogs
            if not offset or offset < 0:
                offset = 0
                try:
                    await self.seek(tp, 0)
                except IllegalStateError:
                    continue  # revoked meanwhile: its next assignment positions it
            self._seek_targets[tp] = offset
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Refuse acknowledgements until the next assignment, then revoke as Faust does.

        A revoked partition is no longer one a full stage paused: Faust keeps that mark
        across the rebalance, and the stage's next :meth:`on_buffer_drop` would then
        fetch the partition while recovery holds it paused.
        """
        self.ack_generation = None
        for tp in revoked:
            self._seek_targets.pop(tp, None)
        self._buffered_partitions.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Accept acknowledgements of this generation, then assign as Faust does."""
        # Before Faust's own handling: streams may resume and acknowledge from inside it.
        self.ack_generation = generation_id
        await super().on_partitions_assigned(assigned, generation_id)

    def on_buffer_drop(self, tp: TP) -> None:
        """Fetch ``tp`` again now that its stage has room, unless tables are being recovered.

        Recovery pauses every stream partition until the tables are read back, and its
        end resumes them all; Faust's ``on_buffer_full`` leaves partitions alone
        meanwhile, its ``on_buffer_drop`` did not.
        """
        if self.app.in_recovery:
            return
        super().on_buffer_drop(tp)

    def ack(self, message: Message) -> bool:
        """Acknowledge ``message`` unless it was fetched in an earlier generation."""
        return self.ack_many((message,)) > 0

    def ack_many(self, messages: Iterable[Message]) -> int:
        """Acknowledge each of ``messages`` not fetched in an earlier generation; how many counted.

        Faust's ``ack`` body with the generation check, once per record under one hold of
        Faust's ``ack_lock`` and with one wake-up of a wait for acknowledgements at the
        end: a stage that stores a batch acknowledges thousands of records at once, and
        :meth:`ack` is this for one record.
        """
        counted = 0
        enabled: dict[str, bool] = {}
        acks_enabled_for = self.app.topics.acks_enabled_for
        committed_offsets, indexes, acked = self._committed_offset, self._acked_index, self._acked
        with ack_lock:
            try:
                for message in messages:
                    if message.acked:
                        continue
                    message.acked = True
                    generation = message.generation_id
                    if generation is not None and generation != self.ack_generation:
                        self._unacked_messages.discard(message)
                        self.stale_acks += 1
                        continue
                    topic = message.topic
                    on = enabled.get(topic)
                    if on is None:
                        on = enabled[topic] = acks_enabled_for(topic)
                    if not on:
                        continue
                    tp, offset = message.tp, message.offset
                    committed = committed_offsets[tp]
                    if committed is None or offset >= committed:
                        index = indexes[tp]
                        if offset not in index:
                            self._unacked_messages.discard(message)
                            index.add(offset)
                            acked[tp].append(offset)
                            counted += 1
            finally:
                self._n_acked += counted
                notify(self._waiting_for_ack)
        return counted

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's ``getmany``, noting each partition's high water once a fetch.

        Faust looks the high water up, and hands it to the monitor, for every record; it
        is the fetch's, the same for all of a partition's records in it.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        to_message = self._to_message
        buffered = self._buffered_partitions
        noted: set[TP] = set()
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active:
                break
            if self.app.consumer_generation_id != generation_id:
                self.log.dev("Generation id changed from %r to %r. Cancelling getmany.",
                             generation_id, self.app.consumer_generation_id)
                break
            if active_partitions is None or tp in active_partitions or tp in buffered:
                if tp not in noted:
                    noted.add(tp)
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        """Deliver fetched records to the streams, as Faust does, with the two changes above.

        Kept to Faust's own loop otherwise (``faust/transport/consumer.py``): the read
        offsets, the gaps, the periodic commit and how a stop ends it.
        """
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        since_yield = 0
        # topics whose records go to batch streams (batches.py), not to Faust's streams
        routes = batches.routes_of(self.app)
        app = self.app
        flow_active, acquire_flow = app.flow_control.is_active, app.flow_control.acquire
        gathered: dict[int, tuple[list[batches.BatchStream], list[Any]]] = {}
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # A seek under way could land after this fetch, and make it stale
                # unnoticed: fetch after it. One that starts later changes the epoch.
                await self._seek_idle.wait()
                epoch = self._seek_epoch
                generation = self.app.consumer_generation_id
                fetched = self.getmany(timeout=1.0)
                wait_empty = app.conf.stream_wait_empty
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in fetched:
                    if self._seek_epoch != epoch:
                        # A seek started since the fetch: this record and the rest are
                        # stale (the record delivered meanwhile kept no read offset).
                        await self._hand_over(gathered)
                        await self._reposition(generation, tp, message, fetched)
                        break
                    since_yield += 1
                    if since_yield > 100:  # let other tasks run through a long batch
                        await self._hand_over(gathered)
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # read already; fetched again after a seek
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        self.offsets_taken_as_gaps += offset - r_offset - 1
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    streams = routes.get(tp.topic)
                    if streams is not None:
                        if not flow_active():
                            # as Faust's conductor: no record reaches a stage during a
                            # rebalance or table recovery
                            await self._hand_over(gathered)
                            await self.wait_first(acquire_flow(), self.suspend_flow.wait())
                        if self.suspend_flow.is_set():
                            break  # as _deliver: the next assignment positions it again
                        entry = gathered.get(id(streams))
                        if entry is None:
                            entry = gathered[id(streams)] = (streams, [])
                        entry[1].append(batches.track(app, self, message, streams,
                                                      wait_empty=wait_empty))
                    elif not await self._deliver(message):
                        # A rebalance stopped the flow: the next assignment positions
                        # every partition at its committed offset again.
                        break
                    if self._seek_epoch == epoch:  # else its read offset is the seek's
                        read_offset[tp] = offset
                await self._hand_over(gathered)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _hand_over(self, gathered: dict[int, tuple[list[batches.BatchStream],
                                                        list[Any]]]) -> None:
        """Give the batch streams the records gathered for them (``batches.py``).

        Records a stream holds count as delivered, as records in a Faust stream's buffer
        do: the read offset is past them. Waits, as Faust's delivery does per record, while
        the producer's buffer is too full, and while a stream holds its ``limit`` of
        records (until a rebalance or a stop). A stream that is only full is not waited
        for: its partitions are paused (``BatchStream.put``), so it gets no more than was
        already fetched for them, and waiting would hold back every other stage's records.
        """
        if not gathered:
            return
        batches.deliver(self.app, gathered)
        streams = {id(s): s for routed, _ in gathered.values() for s in routed}.values()
        gathered.clear()
        await self.app.producer.buffer.wait_until_ebb()
        for stream in streams:
            # a backstop: what a stage holds stays bounded even if pausing its
            # partitions did not stop them (batches.py)
            while stream.over_limit() and not (self.suspend_flow.is_set() or self.should_stop):
                await self.wait_first(stream.room(), self.suspend_flow.wait())

    async def _deliver(self, message: Message) -> bool:
        """Hand ``message`` to the streams; ``False`` if a rebalance or stop interrupted it."""
        if self.suspend_flow.is_set():
            return False
        delivery = cast(Any, self.callback(message))
        try:
            waiting = delivery.send(None)
        except StopIteration:
            return True  # delivered without waiting: no tasks needed
        resumed = _Resumed(delivery, waiting)
        outcome = await self.wait_first(resumed, self.suspend_flow.wait())
        return resumed in outcome.done

    async def _reposition(self, generation: int, tp: TP, message: Message,
                          rest: Any) -> None:
        """Put each partition with undelivered records of a stale batch where none is skipped.

        ``message`` (of ``tp``) and what is left of ``rest`` (the batch's iterator) were
        fetched before a seek to the committed offsets, or while it ran, so the client's
        position may already be past them. Once the seek is over, a partition it
        positioned goes to the lower of its first undelivered record and the seek's offset
        (records between the two are delivered again; every stage is idempotent for
        repeats). A partition no seek has positioned since its assignment goes to its
        first undelivered record, unless the group rebalanced since the fetch: then the
        new generation's seek, still to come, positions it.

        That seek may also be the one that ended the batch: the fetch was asked for in
        one generation and answered after the next one's seek, from the committed
        offsets. Those records are then the first ones of the new generation, and must
        be fetched again (two workers lost profile updates when they were not).
        """
        first = {tp: message.offset}
        self.records_refetched += 1
        async for tp, message in rest:
            first.setdefault(tp, message.offset)
            self.records_refetched += 1
        await self._seek_idle.wait()
        rebalanced = self.app.consumer_generation_id != generation
        assigned = self.assignment()
        for tp, offset in first.items():
            if tp not in assigned:
                continue  # revoked: its next owner starts at the committed offset
            target = self._seek_targets.get(tp)
            if target is None:
                if rebalanced:
                    continue
                target = offset
            try:
                await self.seek(tp, min(offset, target))
            except IllegalStateError:
                continue  # revoked meanwhile


class _Resumed:
    """Awaitable that finishes a coroutine already run up to its first wait."""

    __slots__ = ("_coroutine", "_waiting")

    def __init__(self, coroutine: Any, waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, waiting = self._coroutine, self._waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # passed into the coroutine, as await does
                try:
                    waiting = coroutine.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


class FlowControl(FlowControlEvent):
    """Faust's flow control, except that resuming keeps what stream buffers hold.

    Faust empties every stream buffer when flow resumes after a rebalance. A record of
    the earlier generation in a buffer is skipped by its stream anyway (and its
    acknowledgement refused, above), but one of the *current* generation, delivered
    between recovery's seek and the resume, would be lost: it is neither processed nor
    fetched again. Only the table manager's changelog buffer is still emptied: a
    changelog record left from an earlier recovery must not be applied again.
    """

    def __init__(self, changelog_queue: Callable[[], object | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._changelog_queue = changelog_queue

    def clear(self) -> None:
        """Empty the changelog buffer only."""
        queue = self._changelog_queue()
        if queue is not None:
            cast(Any, queue).clear()


class Transport(driver.Transport):
    """The aiokafka transport with :class:`Consumer`, and a producer that ships changelogs."""

    Consumer = Consumer
    Producer = changelog.Producer


def is_current(app: object, message: Message) -> bool:
    """Whether ``message`` was fetched in the consumer's current generation.

    ``False`` from the moment its partition is revoked. A stage working through a batch
    checks this before each record and stops when it turns false: the partition's next
    owner reads the rest again from the committed offset, and a stale owner that went on
    would write its tables' changelogs and send outputs interleaved with the new owner's.
    """
    consumer = getattr(app, "consumer", None)
    if not isinstance(consumer, Consumer) or message.generation_id is None:
        return True  # not our consumer (unit tests), or a record without a generation
    return message.generation_id == consumer.ack_generation


def committed_offset(app: object, tp: TP) -> int | None:
    """The offset ``tp`` is read again from after a crash or rebalance; None if not known.

    Faust flushes the producer (table changelogs included) before it commits, so every
    record before this offset has its outputs and table changes in Kafka for good. Read
    from Faust's private ``_committed_offset``, which a commit and a seek to the
    committed offsets update and a revocation drops.
    """
    offsets = getattr(getattr(app, "consumer", None), "_committed_offset", None)
    return None if offsets is None else cast(int | None, offsets.get(tp))


def only_current(app: object, events: Iterable[E]) -> Iterator[E]:
    """The events of a batch fetched in the consumer's current generation, in order.

    Checked as each event is taken, so after a revocation while the stage works on the
    batch the rest is skipped; the partition's next owner reads it again. A batch can
    also *start* with records of the previous generation, followed by current ones (a
    stage's buffer may hold records across a whole rebalance). Those are skipped and the
    current ones processed. (Stopping there instead would lose the current ones: a batch
    taken with ``take_acked`` is acknowledged whole once the stage is done with it.)
    """
    skipped = False
    for event in events:
        if is_current(app, event.message):
            yield event
        elif not skipped:
            skipped = True
            consumer = getattr(app, "consumer", None)
            if isinstance(consumer, Consumer):
                consumer.batches_abandoned += 1
