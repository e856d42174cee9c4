"""Batch streams: records reach stages a batch at a time and count as Faust's streams did."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from aiokafka import TopicPartition
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage

from touchpoint.streams.runtime import batches
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.batches import BatchStream, Delivered, batch_stream, decoded
from touchpoint.streams.runtime.consumer import Consumer

TOPIC = "p.touchpoints.unresolved"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)
NO_ACKS = "p.touchpoints.deadletter"  # a topic whose offsets are not committed


@pytest.fixture
def app() -> Iterator[App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    made = App("test-batches", broker="kafka://127.0.0.1:1", autodiscover=False, loop=loop)
    consumer = made.consumer
    assert isinstance(consumer, Consumer)
    made.consumer_generation_id = 2
    consumer.ack_generation = 2
    made.flow_control.resume()  # as after an assignment and recovery
    with mock.patch.object(made.topics, "acks_enabled_for", return_value=True):
        yield made
    consumer._thread.thread_loop.close()
    asyncio.set_event_loop(None)
    loop.close()


def record(tp: TP, offset: int, generation: int = 2) -> Message:
    # What the consumer makes of a fetched record: its final acknowledgement reaches the
    # consumer, and its ``tp`` is the client's TopicPartition, not Faust's TP.
    return ConsumerMessage(tp.topic, tp.partition, offset, 0.0, 0, {}, b"k", b"v", None,
                           tp=TopicPartition(tp.topic, tp.partition),
                           generation_id=generation)


def topic(*names: str) -> Any:
    return mock.Mock(topics=names)


def handed(app: App, streams: list[BatchStream], messages: list[Message]) -> list[Any]:
    """What the delivery loop does with fetched ``messages`` of a routed topic."""
    events = [batches.track(app, app.consumer, m, streams) for m in messages]
    batches.deliver(app, {id(streams): (streams, events)})
    return events


def run(app: App, coroutine: Any) -> Any:
    return app.loop.run_until_complete(asyncio.wait_for(coroutine, 5))


async def first(iterator: Any) -> Any:
    return await iterator.__anext__()


def test_a_batch_holds_at_most_max_records_in_order(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, n) for n in range(5)])
    taking = stream.take(3, within=0)
    assert [e.message.offset for e in run(app, first(taking))] == [0, 1, 2]
    assert [e.message.offset for e in run(app, first(taking))] == [3, 4]


def test_a_taker_waits_up_to_within_for_a_full_batch(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 0)])

    async def more_arrives_soon() -> list[Any]:
        taking = asyncio.ensure_future(first(stream.take(2, within=1.0)))
        await asyncio.sleep(0.01)
        handed(app, [stream], [record(P0, 1)])
        return await taking

    assert [e.message.offset for e in run(app, more_arrives_soon())] == [0, 1]


def test_take_acked_acknowledges_a_batch_when_the_next_is_asked_for(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 0), record(P0, 1)])
    taking = stream.take_acked(2, within=0)
    batch = run(app, first(taking))
    assert app.consumer._acked[P0] == [], "not while the stage works on it"
    handed(app, [stream], [record(P0, 2)])
    run(app, first(taking))
    assert sorted(app.consumer._acked[P0]) == [0, 1]
    assert all(e.message.acked for e in batch)


def test_a_record_read_by_two_stages_is_committable_once_both_acknowledged(app: App) -> None:
    identity, minutes = batch_stream(app, topic(TOPIC)), batch_stream(app, topic(TOPIC))
    streams = batches.routes_of(app)[TOPIC]
    assert streams == [identity, minutes]
    (event,) = handed(app, streams, [record(P0, 7)])
    one = run(app, first(identity.take(10, within=0)))
    other = run(app, first(minutes.take(10, within=0)))
    assert one == other == [event], "one event, shared"
    run(app, identity.ack(event))
    assert app.consumer._acked[P0] == []
    run(app, minutes.ack(event))
    assert app.consumer._acked[P0] == [7]


@pytest.mark.parametrize("wait_empty", [False, True])
def test_a_tracked_record_counts_its_stages_and_is_waited_for_only_if_the_app_waits(
        app: App, wait_empty: bool) -> None:
    streams = [batch_stream(app, topic(TOPIC)), batch_stream(app, topic(TOPIC))]
    message = record(P0, 3)
    with mock.patch.object(type(app.conf), "stream_wait_empty", wait_empty), \
            mock.patch.object(app.consumer, "_on_message_in") as on_message_in:
        batches.track(app, app.consumer, message, streams)
    assert message.refcount == 2
    on_message_in.assert_called_once_with(message.tp, 3, message)
    assert (message in app.consumer._unacked_messages) is wait_empty
    batches.ack_all(app, [Delivered(app, message)])
    assert message.refcount == 1 and app.consumer._acked[P0] == []
    batches.ack_all(app, [Delivered(app, message)])
    assert message.refcount == 0 and app.consumer._acked[P0] == [3]


def test_records_of_an_earlier_generation_are_skipped_and_not_counted(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 3, generation=1), record(P0, 4), record(P0, 5)])
    batch = run(app, first(stream.take(10, within=0)))
    assert [e.message.offset for e in batch] == [4, 5]
    assert app.consumer._acked[P0] == []


def test_nothing_reaches_a_stage_while_flow_is_suspended(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 0), record(P0, 1)])
    app.flow_control.suspend()
    assert run(app, first(stream.take(10, within=0))) == []
    # not acknowledged either: the partition's owner reads them again
    assert app.consumer._acked[P0] == []
    assert not any(m.acked for m in app.consumer._unacked_messages)


def test_a_full_stage_pauses_the_partitions_that_filled_it_until_it_took_half(
        app: App) -> None:
    stream = BatchStream(app, [TOPIC], maxsize=4)
    consumer = app.consumer
    with mock.patch.object(consumer, "on_buffer_full") as full, \
            mock.patch.object(consumer, "on_buffer_drop") as drop:
        handed(app, [stream], [record(P0, 0), record(P1, 0), record(P0, 1), record(P1, 1)])
        assert sorted(call.args[0] for call in full.call_args_list) == [P0, P1]
        assert all(type(call.args[0]) is TP for call in full.call_args_list), "Faust's TP"
        run(app, first(stream.take(1, within=0)))
        drop.assert_not_called()  # 3 held, more than half
        run(app, first(stream.take(1, within=0)))
        assert sorted(call.args[0] for call in drop.call_args_list) == [P0, P1]


def test_a_delivered_record_offers_what_stages_and_tables_use_of_an_event(app: App) -> None:
    message = Message(TOPIC, 1, 9, 0.0, 0, [("h", b"v")], b"key", b"value", None,
                      generation_id=2)
    event = Delivered(app, message, readers=2)  # e.g. identity and minutes
    assert (event.key, event.value, event.message) == (b"key", b"value", message)
    assert event.headers == {"h": b"v"}
    calls: list[bytes] = []

    def decode(value: bytes) -> dict[str, Any]:
        calls.append(value)
        return {"decoded": value}

    assert decoded(event, decode) is decoded(event, decode)
    assert calls == [b"value"], "decoded once for every stage"
    assert event.decoded is None, "let go by the last reader: the record may be held on"


def test_a_stage_cancelled_as_its_batch_fills_is_cancelled(app: App) -> None:
    # A stage that swallowed this cancellation would keep the worker from stopping
    # (asyncio.wait_for on Python 3.11 does, when the wait ends as it is cancelled).
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 0)])

    async def cancelled_as_the_batch_fills() -> None:
        taking = asyncio.ensure_future(first(stream.take(2, within=5.0)))
        for _ in range(3):
            await asyncio.sleep(0)  # the taker waits to fill its batch
        handed(app, [stream], [record(P0, 1)])  # the wait is over ...
        assert not taking.done()
        taking.cancel()  # ... and the stage is stopped before it resumes
        with pytest.raises(asyncio.CancelledError):
            await taking

    run(app, cancelled_as_the_batch_fills())


def test_a_full_stage_does_not_hold_back_the_records_of_another(app: App) -> None:
    # In a backlog the link stage's records come in the same fetches as the profiles
    # stage's: waiting for the full one kept the other waiting for its records.
    full = BatchStream(app, [TOPIC], maxsize=2)
    other = BatchStream(app, ["p.links"], maxsize=2)
    consumer = app.consumer
    events = [batches.track(app, consumer, record(P0, n), [full]) for n in range(3)]
    link = [batches.track(app, consumer, Message("p.links", 0, 0, 0.0, 0, [], b"k", b"v",
                                                 None, generation_id=2), [other])]

    async def hand_over() -> None:
        await asyncio.wait_for(consumer._hand_over({1: ([full], events), 2: ([other], link)}), 1)

    with mock.patch.object(consumer, "on_buffer_full") as paused:
        run(app, hand_over())
    assert full.full() and not full.over_limit()
    assert [call.args[0] for call in paused.call_args_list] == [P0], \
        "the full stage's partition is paused: it gets no more than was fetched"
    assert run(app, first(other.take(10, within=0))) == link
    assert [e.message.offset for e in run(app, first(full.take(10, within=0)))] == [0, 1, 2]


def test_the_delivery_loop_waits_while_a_stage_holds_its_limit(app: App) -> None:
    # The backstop: what a stage holds stays bounded however its partitions were fetched.
    stream = BatchStream(app, [TOPIC], maxsize=2)
    consumer = app.consumer
    events = [batches.track(app, consumer, record(P0, n), [stream])
              for n in range(stream.limit)]

    async def hand_over_then_take() -> tuple[bool, bool]:
        handing = asyncio.ensure_future(consumer._hand_over({1: ([stream], events)}))
        for _ in range(3):
            await asyncio.sleep(0)
        waited = not handing.done()
        await first(stream.take(stream.limit, within=0))  # room again
        await asyncio.wait_for(handing, 1)
        return waited, handing.done()

    assert stream.limit == batches.LIMIT_FACTOR * 2
    with mock.patch.object(consumer, "on_buffer_full"):
        assert run(app, hand_over_then_take()) == (True, True)


def test_a_stage_waiting_for_a_batch_larger_than_maxsize_does_not_stop_delivery(
        app: App) -> None:
    # Minutes takes as many records as one warehouse insert: were its stream full at
    # maxsize, the delivery loop would wait on it while it waits for more records.
    stream = BatchStream(app, [TOPIC], maxsize=2)
    consumer = app.consumer

    async def fill_a_batch_of_four() -> list[Any]:
        taking = asyncio.ensure_future(first(stream.take(4, within=5.0)))
        await asyncio.sleep(0)
        for offsets in ((0, 1), (2, 3)):
            events = [batches.track(app, consumer, record(P0, n), [stream]) for n in offsets]
            await asyncio.wait_for(consumer._hand_over({1: ([stream], events)}), 1)
        return await asyncio.wait_for(taking, 1)

    with mock.patch.object(consumer, "on_buffer_full"):
        batch = run(app, fill_a_batch_of_four())
    assert [e.message.offset for e in batch] == [0, 1, 2, 3]


def test_records_handed_over_during_table_recovery_are_counted(app: App) -> None:
    stream = batch_stream(app, topic(TOPIC))
    handed(app, [stream], [record(P0, 0)])
    assert app.consumer.records_in_recovery == 0
    app.in_recovery = True
    handed(app, [stream], [record(P0, 1), record(P0, 2)])
    assert app.consumer.records_in_recovery == 2



def test_a_batch_acknowledged_in_one_go_counts_as_each_record_acknowledged_alone(
        app: App) -> None:
    """``ack_all`` (a stored batch) leaves the consumer as ``ack`` record by record does."""
    consumer = app.consumer
    states = []
    for tp, one_go in ((P0, False), (P1, True)):
        identity, minutes = BatchStream(app, [TOPIC]), BatchStream(app, [TOPIC])
        consumer._committed_offset[tp] = 5
        fetched = [record(tp, 3), record(tp, 6), record(tp, 7), record(tp, 8, generation=1),
                   record(tp, 9), record(tp, 10), record(TP(NO_ACKS, tp.partition), 11)]
        events = [batches.track(app, consumer, m, [identity, minutes]) for m in fetched]
        run(app, minutes.ack(events[4]))  # one record minutes had acknowledged already
        before = (consumer._n_acked, consumer.stale_acks)
        with mock.patch.object(app.topics, "acks_enabled_for", lambda name: name != NO_ACKS):
            if one_go:
                identity.ack_all(events)
                counted_by_identity = list(consumer._acked[tp])
                minutes.ack_all(events[:4] + events[5:])
            else:
                for event in events:
                    run(app, identity.ack(event))
                counted_by_identity = list(consumer._acked[tp])
                for event in events[:4] + events[5:]:
                    run(app, minutes.ack(event))
        states.append((counted_by_identity, sorted(consumer._acked[tp]),
                       sorted(consumer._acked_index[tp]),
                       consumer._n_acked - before[0], consumer.stale_acks - before[1],
                       [e.message.acked for e in events],
                       [e.message in consumer._unacked_messages for e in events]))
    alone, in_one_go = states
    assert in_one_go == alone
    # record 9 had both acknowledgements once identity's came; 3 is below the committed
    # offset, 8 was fetched in an earlier generation, 11 is of a topic without commits
    assert alone[0] == [9] and alone[1] == [6, 7, 9, 10] and alone[3] == 4
    assert alone[4] == 1 and all(alone[5])
    # as in Faust: a record below the committed offset or of a topic without commits
    # stays in the consumer's set of unacknowledged records
    assert alone[6] == [True, False, False, False, False, False, True]
