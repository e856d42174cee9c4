"""The worker's consumer refuses acknowledgements carried over a rebalance."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest import mock

import pytest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

from touchpoint.streams.app import App
from touchpoint.streams.consumer import Consumer

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
    from types import SimpleNamespace

    from touchpoint.streams.consumer import is_current, only_current

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
