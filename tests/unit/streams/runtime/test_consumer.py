"""The worker's consumer refuses acknowledgements carried over a rebalance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

from touchpoint.settings import load_settings
from touchpoint.streams.app import create_app
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.consumer import (
    FETCH_MIN_BYTES,
    UNPACK_RECORDS,
    Consumer,
    first_topics,
)

TOPIC = "p.touchpoints.web"
PARTITION = TP(TOPIC, 0)


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    loop = asyncio.new_event_loop()
    app = App("test-consumer", broker="kafka://127.0.0.1:1", autodiscover=False, loop=loop)
    made = app.consumer
    assert isinstance(made, Consumer)
    # acknowledgements count only for topics a stream subscribed to; none does here
    with mock.patch.object(app.topics, "acks_enabled_for", return_value=True):
        yield made
    made._thread.thread_loop.close()  # the consumer thread's own loop, never started
    loop.close()


def message(offset: int, generation: int | None) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, {}, b"k", b"v", None, generation_id=generation)


def assign(consumer: Consumer, generation: int) -> None:
    with mock.patch.object(driver.Consumer, "on_partitions_assigned") as faust_assign:
        consumer.app.loop.run_until_complete(
            consumer.on_partitions_assigned({PARTITION}, generation))
    faust_assign.assert_awaited_once_with({PARTITION}, generation)


def revoke(consumer: Consumer) -> None:
    with mock.patch.object(driver.Consumer, "on_partitions_revoked") as faust_revoke:
        consumer.app.loop.run_until_complete(consumer.on_partitions_revoked({PARTITION}))
    faust_revoke.assert_awaited_once_with({PARTITION})


def test_a_record_of_the_current_generation_is_acknowledged(consumer: Consumer) -> None:
    assign(consumer, 3)
    assert consumer.ack(message(10, 3)) is True
    assert consumer._acked[PARTITION] == [10]
    assert consumer.stale_acks == 0


def test_a_record_of_an_earlier_generation_is_not_counted(consumer: Consumer) -> None:
    assign(consumer, 4)
    stale = message(57, 3)
    assert consumer.ack(stale) is False
    assert stale.acked, "marked done, so nothing waits for it"
    assert consumer._acked[PARTITION] == []
    assert consumer.stale_acks == 1
    assert consumer.ack(stale) is False
    assert consumer.stale_acks == 1, "one refusal per record"
    # the new owner reads the record again; that copy counts
    assert consumer.ack(message(57, 4)) is True
    assert consumer._acked[PARTITION] == [57]


def test_nothing_is_acknowledged_between_revocation_and_assignment(consumer: Consumer) -> None:
    assign(consumer, 5)
    revoke(consumer)
    assert consumer.ack_generation is None
    assert consumer.ack(message(8, 5)) is False
    assign(consumer, 6)
    assert consumer.ack(message(8, 6)) is True


def test_the_commit_cannot_jump_past_unprocessed_records(consumer: Consumer) -> None:
    # Generation 7 re-reads from the committed offset 100; a stage still holding
    # record 140 of generation 6 finishes it first.
    assign(consumer, 7)
    consumer.ack(message(140, 6))
    assert consumer._new_offset(PARTITION) is None, "nothing of generation 7 is done yet"
    for offset in (100, 101, 102):
        consumer.ack(message(offset, 7))
    assert consumer._new_offset(PARTITION) == 103


def test_faust_alone_would_commit_past_them(consumer: Consumer) -> None:
    # The same sequence through Faust's own ack: the commit would skip 100..139.
    assign(consumer, 7)
    driver.Consumer.ack(consumer, message(140, 6))
    assert consumer._new_offset(PARTITION) == 141


def test_a_batch_yields_only_records_of_the_current_generation(consumer: Consumer) -> None:

    from touchpoint.streams.runtime.consumer import is_current, only_current

    app = consumer.app
    assign(consumer, 5)
    batch = [SimpleNamespace(message=message(n, 5)) for n in range(4)]
    taken = []
    for event in only_current(app, batch):
        taken.append(event.message.offset)
        if len(taken) == 2:
            revoke(consumer)  # while the stage works on the second record
    assert taken == [0, 1]
    assert consumer.batches_abandoned == 1
    assert not is_current(app, message(9, 5))
    assign(consumer, 6)  # the next generation: its records are current, old ones not
    assert is_current(app, message(9, 6)) and not is_current(app, message(9, 5))
    assert [e.message.offset for e in only_current(app, batch)] == []
    # A batch that starts with a record that waited through the rebalance: that one is
    # skipped, the current ones after it are processed (take_events acknowledges them all).
    mixed = [SimpleNamespace(message=message(3, 5)),
             *(SimpleNamespace(message=message(n, 6)) for n in (1, 2, 3))]
    assert [e.message.offset for e in only_current(app, mixed)] == [1, 2, 3]
    assert consumer.batches_abandoned == 3


# --- delivery: the consumer's own loop over fetched batches --------------------------

OTHER = TP(TOPIC, 1)


class Fetcher:
    """What ``_drain_messages`` needs of Faust's fetcher service: whether it stopped."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def record(tp: TP, offset: int, generation: int = 2) -> Message:
    return Message(tp.topic, tp.partition, offset, 0.0, 0, {}, b"k", b"v", None,
                   generation_id=generation)


def drain(consumer: Consumer, batches: list[list[Message]], on_delivery: Any = None,
          *, loop: Any = None, on_fetch: Any = None) -> list[tuple[int, int]]:
    """Run ``consumer``'s delivery loop (or ``loop``) over ``batches``; what it delivered.

    ``on_fetch`` is awaited while each batch is being fetched, before the client returns it.
    """
    fetcher = Fetcher()
    delivered: list[tuple[int, int]] = []
    queue = list(batches)

    async def getmany(timeout: float) -> Any:
        if not queue:
            fetcher._stopped.set()
            return
        if on_fetch is not None:
            await on_fetch()
        for message in queue.pop(0):
            yield message.tp, message

    async def callback(message: Message) -> None:
        delivered.append((message.partition, message.offset))
        if on_delivery is not None:
            await on_delivery(message)

    consumer.app.consumer_generation_id = 2
    with mock.patch.object(consumer, "getmany", getmany), \
            mock.patch.object(consumer, "callback", callback):
        # the consumer's own loop: the one its services (wait_first) run on
        consumer.loop.run_until_complete(
            (loop or type(consumer)._drain_messages)(consumer, fetcher))
    return delivered


@pytest.fixture
def seeking(consumer: Consumer) -> Iterator[tuple[Consumer, mock.AsyncMock]]:
    """``consumer`` whose partitions 0 (committed at 7) and 1 (never committed) are assigned."""
    assign(consumer, 2)
    with mock.patch.object(driver.Consumer, "seek_to_committed",
                           mock.AsyncMock(return_value={PARTITION: 7, OTHER: None})), \
            mock.patch.object(consumer, "assignment", return_value={PARTITION, OTHER}), \
            mock.patch.object(consumer, "_seek", mock.AsyncMock()) as seek:
        yield consumer, seek


def stale_batch() -> list[Message]:
    # Fetched before recovery's seek: partition 0 from 120 on, partition 1 from 0 on.
    return [record(tp, offset) for n in range(4)
            for tp, offset in ((PARTITION, 120 + n), (OTHER, n))]


def seek_while_delivering_121(consumer: Consumer) -> Any:
    """A delivery callback: recovery seeks to the committed offsets while 121 is delivered."""

    async def recovery_seeks_meanwhile(message: Message) -> None:
        if (message.partition, message.offset) == (0, 121):
            await consumer.perform_seek()

    return recovery_seeks_meanwhile


def test_a_seek_during_delivery_ends_the_stale_batch_and_loses_nothing(
        seeking: tuple[Consumer, mock.AsyncMock]) -> None:
    consumer, seek = seeking

    delivered = drain(consumer, [stale_batch()], seek_while_delivering_121(consumer))
    assert delivered == [(0, 120), (1, 0), (0, 121)], "nothing of the batch after the seek"
    # Partition 0 goes back to its committed offset 7 (below its first undelivered record,
    # 122); partition 1, never committed, to its start: the seek put it there, and the
    # stale batch's end put it there again (record 0 is delivered twice: a repeat).
    assert sorted(seek.await_args_list) == [
        mock.call(PARTITION, 7), mock.call(OTHER, 0), mock.call(OTHER, 0)]
    assert consumer._read_offset[PARTITION] == 7, "not the record delivered during the seek"
    assert not consumer._gap[PARTITION], "no offsets taken for acknowledged"
    assert consumer.records_refetched == 5

    # What the client fetches next starts at the committed offset, and is delivered.
    assert drain(consumer, [[record(PARTITION, 7), record(PARTITION, 8)]]) == [(0, 7), (0, 8)]


def test_faust_alone_would_never_deliver_the_records_fetched_again(
        seeking: tuple[Consumer, mock.AsyncMock]) -> None:
    consumer, _ = seeking

    delivered = drain(consumer, [stale_batch(), [record(PARTITION, 7)]],
                      seek_while_delivering_121(consumer), loop=driver.Consumer._drain_messages)
    # Faust delivers the rest of the stale batch, its read offset is then past the
    # committed one, and record 7 fetched again is dropped: never processed.
    assert (0, 122) in delivered and (0, 7) not in delivered
    assert consumer._read_offset[PARTITION] == 123


def test_a_batch_fetched_across_a_rebalance_is_fetched_again_from_the_committed_offset(
        seeking: tuple[Consumer, mock.AsyncMock]) -> None:
    # The delivery loop asks for records in generation 2. Before the client answers, the
    # group rebalances (this worker keeps both partitions) and recovery seeks them to
    # their committed offsets. The client then returns what it fetched from there, moving
    # its position past the batch, which the loop drops as fetched across a seek: without
    # a seek back, a later fetch starts after them, the jump reads as a gap, and the next
    # commit passes over records nobody processed (two workers lost profile updates so).
    consumer, seek = seeking

    async def rebalance_and_seek() -> None:
        with mock.patch.object(driver.Consumer, "on_partitions_revoked"), \
                mock.patch.object(driver.Consumer, "on_partitions_assigned"):
            await consumer.on_partitions_revoked({PARTITION, OTHER})
            consumer.app.consumer_generation_id = 3
            await consumer.on_partitions_assigned({PARTITION, OTHER}, 3)
        await consumer.perform_seek()
        seek.reset_mock()  # what recovery's seek itself did is not the point here

    batch = [record(tp, offset, generation=3) for n in range(3)
             for tp, offset in ((PARTITION, 7 + n), (OTHER, n))]
    assert drain(consumer, [batch], on_fetch=rebalance_and_seek) == []
    assert sorted(seek.await_args_list) == [mock.call(PARTITION, 7), mock.call(OTHER, 0)]
    assert not consumer._gap[PARTITION] and not consumer._gap[OTHER]


def test_a_partition_not_yet_positioned_in_a_new_generation_is_left_to_its_seek(
        seeking: tuple[Consumer, mock.AsyncMock]) -> None:
    # Fetched in generation 2 from where the partitions were then; a seek of generation 2
    # ended the batch, and before the loop sees it the group rebalanced. The partitions
    # are assigned again but not positioned yet: the seek of generation 3 will do that,
    # and moving them to the stale batch's records meanwhile could only be wrong.
    consumer, seek = seeking

    async def seek_then_rebalance() -> None:
        await consumer.perform_seek()
        with mock.patch.object(driver.Consumer, "on_partitions_revoked"), \
                mock.patch.object(driver.Consumer, "on_partitions_assigned"):
            await consumer.on_partitions_revoked({PARTITION, OTHER})
            consumer.app.consumer_generation_id = 3
            await consumer.on_partitions_assigned({PARTITION, OTHER}, 3)
        seek.reset_mock()

    batch = [record(tp, offset) for n in range(3) for tp, offset in ((PARTITION, 120 + n),
                                                                     (OTHER, 50 + n))]
    assert drain(consumer, [batch], on_fetch=seek_then_rebalance) == []
    assert seek.await_args_list == []
    assert consumer.records_refetched == 6


def test_offsets_the_client_skipped_are_counted(consumer: Consumer) -> None:
    # Faust takes them for done (transaction markers, compaction); on the stage topics,
    # which have neither, any such count means records were skipped.
    assign(consumer, 2)
    delivered = drain(consumer, [[record(PARTITION, n) for n in (0, 1, 2, 6, 7)]])
    assert delivered == [(0, 0), (0, 1), (0, 2), (0, 6), (0, 7)]
    assert consumer.offsets_taken_as_gaps == 3
    assert drain(consumer, [[record(PARTITION, 8)]]) == [(0, 8)]
    assert consumer.offsets_taken_as_gaps == 3


def test_a_delivery_that_does_not_wait_needs_no_tasks(consumer: Consumer) -> None:
    assign(consumer, 2)
    with mock.patch.object(consumer, "wait_first", side_effect=AssertionError("a task")):
        delivered = drain(consumer, [[record(PARTITION, n) for n in range(3)]])
    assert delivered == [(0, 0), (0, 1), (0, 2)]
    assert consumer._read_offset[PARTITION] == 2


def test_a_delivery_that_waits_is_finished_where_it_waited(consumer: Consumer) -> None:
    assign(consumer, 2)
    finished: list[int] = []

    async def full_buffer(message: Message) -> None:
        await asyncio.sleep(0.01)  # the stream's buffer is full for a moment
        finished.append(message.offset)

    assert drain(consumer, [[record(PARTITION, n) for n in range(3)]], full_buffer) == [
        (0, 0), (0, 1), (0, 2)]
    assert finished == [0, 1, 2]


def test_a_rebalance_interrupts_a_waiting_delivery_and_the_rest_of_the_batch(
        consumer: Consumer) -> None:
    assign(consumer, 2)

    async def rebalance_while_waiting(message: Message) -> None:
        if message.offset == 1:
            consumer.stop_flow()  # the revocation, while this delivery waits
            await asyncio.sleep(10)

    delivered = drain(consumer, [[record(PARTITION, n) for n in range(4)]],
                      rebalance_while_waiting)
    assert delivered == [(0, 0), (0, 1)]
    assert consumer._read_offset[PARTITION] == 0, "the interrupted record is not read"


def test_resuming_flow_keeps_stream_buffers_and_empties_the_changelog_buffer(
        consumer: Consumer) -> None:
    app = consumer.app
    stream_buffer = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
    stream_buffer.put_nowait("record delivered after the seek")
    changelog = app.tables.changelog_queue
    changelog.put_nowait("changelog record of an earlier recovery")
    app.flow_control.resume()
    assert stream_buffer.qsize() == 1
    assert changelog.qsize() == 0


def test_no_fetch_starts_while_a_seek_is_under_way(consumer: Consumer) -> None:
    # A batch fetched before the seek lands would be stale without anyone noticing.
    assign(consumer, 2)
    order: list[str] = []
    seek_may_finish = asyncio.Event()

    async def slow_seek(self: Consumer) -> dict[TP, int]:
        order.append("seek starts")
        await seek_may_finish.wait()
        order.append("seek lands")
        return {PARTITION: 7}

    async def getmany(timeout: float) -> Any:
        order.append("fetch")
        fetcher._stopped.set()
        return
        yield

    fetcher = Fetcher()

    async def scenario() -> None:
        seeking = asyncio.ensure_future(consumer.perform_seek())
        await asyncio.sleep(0)  # the seek is under way
        draining = asyncio.ensure_future(consumer._drain_messages(fetcher))
        await asyncio.sleep(0.05)
        seek_may_finish.set()
        await asyncio.gather(seeking, draining)

    with mock.patch.object(driver.Consumer, "seek_to_committed", slow_seek), \
            mock.patch.object(consumer, "getmany", getmany):
        consumer.loop.run_until_complete(scenario())
    assert order == ["seek starts", "seek lands", "fetch"]


def fetch_settings(consumer: Consumer, wait_ms: int) -> tuple[int, int, int | None]:
    """What the worker's Kafka client is told about fetches when ``fetch_wait_ms`` is given.

    The least bytes and longest wait of a fetch, and the most records one ``getmany``
    makes of the fetched data.
    """
    consumer.app.fetch_wait_ms = wait_ms  # type: ignore[attr-defined]

    async def made() -> tuple[int, int, int | None]:  # aiokafka builds its client in a loop
        client = consumer._thread._create_worker_consumer(consumer.transport)
        try:
            return client._fetch_min_bytes, client._fetch_max_wait_ms, client._max_poll_records
        finally:
            await client.stop()  # never started: no connection to close

    return consumer.app.loop.run_until_complete(made())


@pytest.mark.parametrize("wait_ms", [20, 250])
def test_fetches_wait_at_the_broker_for_a_batch(consumer: Consumer, wait_ms: int) -> None:
    assert fetch_settings(consumer, wait_ms)[:2] == (FETCH_MIN_BYTES, wait_ms)


def test_without_a_fetch_wait_the_broker_answers_at_once(consumer: Consumer) -> None:
    min_bytes, _, _ = fetch_settings(consumer, 0)
    assert min_bytes == 1  # Faust's and aiokafka's: whatever there is


def test_faust_alone_makes_records_of_all_fetched_data_at_once(consumer: Consumer) -> None:
    assert consumer.app.conf.broker_max_poll_records is None
    assert fetch_settings(consumer, 0)[2] is None  # getmany takes every record fetched


def test_the_worker_s_client_makes_records_of_fetched_data_a_thousand_at_a_time(
        tmp_path: Path) -> None:
    settings = load_settings({"TOUCHPOINT_HOME": str(tmp_path),
                              "TOUCHPOINT_PII_SALT": "unit-test-salt-0123"})
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = create_app(settings, mock.MagicMock(), faust_options={"loop": loop}).app
        made = app.consumer
        assert isinstance(made, Consumer)
        assert fetch_settings(made, 20)[2] == UNPACK_RECORDS == 1000
        made._thread.thread_loop.close()  # the consumer thread's own loop, never started
    finally:
        asyncio.set_event_loop(None)
        loop.close()



def _paused_by_a_stage_then_rebalanced(consumer: Consumer, *, ours: bool = True) -> None:
    """Generation 5: a full stage pauses PARTITION. A rebalance; recovery starts in 6."""
    assign(consumer, 5)
    consumer._set_active_tps({PARTITION})
    consumer.on_buffer_full(PARTITION)
    assert PARTITION not in consumer._get_active_partitions()
    if ours:
        revoke(consumer)  # Faust's own revocation leaves the stage's mark as it is
    assign(consumer, 6)
    consumer._set_active_tps({PARTITION})
    consumer.pause_partitions({PARTITION})  # as Faust does on every assignment
    consumer.app.in_recovery = True


def test_a_stage_with_room_again_does_not_fetch_a_partition_recovery_holds(
        consumer: Consumer) -> None:
    # A stage that paused PARTITION before the rebalance takes its held records during
    # recovery (flow is on while changelogs are read) and says it has room. Fetched then,
    # PARTITION's records would reach the stages before their tables were recovered.
    _paused_by_a_stage_then_rebalanced(consumer)
    consumer.on_buffer_drop(PARTITION)
    assert PARTITION not in consumer._get_active_partitions()
    consumer.app.in_recovery = False
    consumer.resume_partitions({PARTITION})  # as recovery's end does
    assert PARTITION in consumer._get_active_partitions()


def test_a_revoked_partition_is_no_longer_marked_as_paused_by_a_stage(
        consumer: Consumer) -> None:
    _paused_by_a_stage_then_rebalanced(consumer)
    assert PARTITION not in consumer._buffered_partitions


def test_in_recovery_a_partition_a_stage_paused_stays_paused(consumer: Consumer) -> None:
    # Whatever the revocation left, as Faust's on_buffer_full does in recovery.
    _paused_by_a_stage_then_rebalanced(consumer, ours=False)
    consumer.on_buffer_drop(PARTITION)
    assert PARTITION not in consumer._get_active_partitions()


def test_faust_alone_would_fetch_it_during_recovery(consumer: Consumer) -> None:
    _paused_by_a_stage_then_rebalanced(consumer, ours=False)
    driver.Consumer.on_buffer_drop(consumer, PARTITION)
    assert PARTITION in consumer._get_active_partitions()


def test_a_seek_runs_on_the_consumer_thread(consumer: Consumer) -> None:
    # The client's fetcher hands out records on that thread; a seek from the worker's
    # loop could drop a partition's records under it (a KeyError that stopped a worker).
    thread = consumer._thread
    on_thread: list[bool] = []
    seeks: list[tuple[bool, TP, int]] = []

    async def call_thread(fun: Any, *args: Any) -> Any:
        on_thread.append(True)
        try:
            return await fun(*args)
        finally:
            on_thread.pop()

    def seek(tp: TP, offset: int) -> None:
        seeks.append((bool(on_thread), tp, offset))

    with mock.patch.object(thread, "call_thread", new=call_thread), \
            mock.patch.object(thread, "seek", new=seek):
        consumer.app.loop.run_until_complete(consumer.seek(PARTITION, 42))
    assert seeks == [(True, PARTITION, 42)]
    assert consumer._read_offset[PARTITION] == 42


def fetched(tp: TP, offset: int) -> Any:
    """A record as the client returns it."""
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset,
                           timestamp=1_000, timestamp_type=0, headers=(), key=b"k",
                           value=b"v", checksum=None, serialized_key_size=1,
                           serialized_value_size=1)


@pytest.mark.parametrize("getmany", [Consumer.getmany, driver.Consumer.getmany])
def test_a_fetch_notes_each_partitions_high_water_and_yields_as_faust_does(
        consumer: Consumer, getmany: Any) -> None:
    records = {PARTITION: [fetched(PARTITION, n) for n in (5, 6, 7)],
               OTHER: [fetched(OTHER, 0)]}
    consumer.app.flow_control.resume()
    with mock.patch.object(consumer, "_wait_next_records",
                           mock.AsyncMock(return_value=(records, {PARTITION, OTHER}))), \
            mock.patch.object(consumer, "highwater", side_effect=lambda tp: 100 + tp.partition), \
            mock.patch.object(consumer.app.monitor, "track_tp_end_offset") as noted:

        async def take() -> list[tuple[TP, int, float]]:
            return [(tp, m.offset, m.timestamp) async for tp, m in getmany(consumer, 1.0)]

        taken = consumer.loop.run_until_complete(take())
    # Faust's round robin over the fetch, each record as Faust makes it
    assert taken == [(PARTITION, 5, 1.0), (OTHER, 0, 1.0), (PARTITION, 6, 1.0),
                     (PARTITION, 7, 1.0)]
    assert {c.args for c in noted.call_args_list} == {(PARTITION, 100), (OTHER, 101)}
    if getmany is Consumer.getmany:
        assert noted.call_count == 2, "once a partition, not once a record"
    else:
        assert noted.call_count == 4


class _Fetched:
    """The client's fetched records as aiokafka hands them out: a partition's whole fetch
    after another, in the order the fetches came back, ``max_records`` a poll."""

    def __init__(self, fetches: list[tuple[TP, int]]) -> None:
        self._records = {tp: [f"{tp.topic}:{tp.partition}:{n}" for n in range(count)]
                         for tp, count in fetches}
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=contextlib.nullcontext)
        self.calls: list[tuple[set[TP], float | None]] = []

    async def fetched_records(self, partitions: set[TP], timeout: float | None = 0,
                              max_records: int | None = None) -> dict[TP, list[str]]:
        self.calls.append((set(partitions), timeout))
        drained: dict[TP, list[str]] = {}
        left = max_records
        for tp in list(self._records):
            if partitions and tp not in partitions:
                continue
            taken = self._records[tp][:left]
            del self._records[tp][:len(taken)]
            if not self._records[tp]:
                del self._records[tp]
            drained[tp] = taken
            left -= len(taken)
            if not left:
                break
        return drained


def test_a_poll_hands_out_the_first_topics_records_ahead_of_earlier_fetches(
        consumer: Consumer) -> None:
    # In a backlog the link stage's records waited behind every fetch of the profiles
    # stage's partitions that came back before theirs.
    links, resolved = TP("p.links", 0), [TP("p.resolved", n) for n in range(3)]
    fetcher = _Fetched([(resolved[0], 3000), (resolved[1], 3000), (links, 700),
                        (resolved[2], 3000)])
    client = SimpleNamespace(_fetcher=fetcher, _closed=False)
    thread = consumer._thread
    active = {links, *resolved}

    def poll() -> dict[TP, list[str]]:
        return consumer.app.loop.run_until_complete(
            thread._fetch_records(client, active, timeout=1.0, max_records=UNPACK_RECORDS))

    assert {tp: len(r) for tp, r in poll().items()} == {resolved[0]: 1000}, "Faust's order"
    first_topics(consumer.app).add("p.links")
    handed = poll()
    assert {tp: len(r) for tp, r in handed.items()} == {links: 500, resolved[0]: 500}
    assert handed[links][0] == "p.links:0:0" and handed[resolved[0]][0] == "p.resolved:0:1000"
    assert {tp: len(r) for tp, r in poll().items()} == {links: 200, resolved[0]: 800}
    fetcher.calls.clear()
    assert {tp: len(r) for tp, r in poll().items()} == {resolved[0]: 700, resolved[1]: 300}
    assert fetcher.calls == [({links}, 0), (active, 1.0)], \
        "nothing of the first topics waiting: Faust's one call, with its wait"
