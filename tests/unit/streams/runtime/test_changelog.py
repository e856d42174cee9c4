"""Table changelogs in batches: order, serialization, linger, failures, persisted offsets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from faust.sensors import Sensor
from faust.types import TP, Message

from touchpoint.streams.runtime import changelog
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.outbox import make_current

SOURCE = "p.source"


class _Producer:
    """aiokafka's producer as the batches use it, with real builders and broker offsets."""

    def __init__(self, batch_size: int = 16384) -> None:
        self.batch_size = batch_size
        self.fail = False
        self.next_offset: dict[tuple[str, int], int] = {}
        self.batches: list[tuple[str, int, list[tuple[bytes | None, bytes | None]]]] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[Any]:
        records = [(r.key, r.value) for r in DefaultRecordBatch(bytes(batch._build()))]
        self.batches.append((topic, partition, records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(RuntimeError("broker said no"))
        else:
            base = self.next_offset.get((topic, partition), 0)
            self.next_offset[(topic, partition)] = base + len(records)
            future.set_result(SimpleNamespace(topic=topic, partition=partition, offset=base))
        return future


class _Env(SimpleNamespace):
    app: App
    table: Any
    producer: _Producer
    persisted: list[tuple[TP, int]]
    sent: dict[str, int]

    def run(self, coroutine: Any) -> Any:
        return self.app.loop.run_until_complete(coroutine)

    def on(self, partition: int) -> None:
        """Make a record of ``partition`` the current event, as a stage's loop does."""
        message = Message(SOURCE, partition, 0, 0.0, 0, {}, b"k", b"v", None)
        self.current = self.app.create_event(b"k", b"v", {}, message)  # Faust holds a weakref
        make_current(self.current)


@pytest.fixture
def env() -> Iterator[_Env]:
    loop = asyncio.new_event_loop()
    app = App("test-changelog", broker="kafka://127.0.0.1:1", autodiscover=False,
              store="memory://", Table=changelog.Table, loop=loop)
    table = app.Table("things", partitions=2, key_type=str)
    assert isinstance(table, changelog.Table)
    producer = _Producer()
    app.producer._ensure_producer = lambda: producer
    persisted: list[tuple[TP, int]] = []
    table.data.set_persisted_offset = lambda tp, offset: persisted.append((tp, offset))
    sent: dict[str, int] = {}

    class Counting(Sensor):
        def on_records_sent(self, topic: str, count: int) -> None:
            sent[topic] = sent.get(topic, 0) + count

    app.sensors.add(Counting())
    app.consumer.ack_generation = 1  # as an assignment sets it
    yield _Env(app=app, table=table, producer=producer, persisted=persisted, sent=sent)
    app.consumer._thread.thread_loop.close()  # never started
    loop.close()


def _wire(table: Any, key: str, value: Any) -> tuple[bytes, bytes | None]:
    """The key and value Faust itself would send for this change."""
    topic = table.changelog_topic
    value_bytes = None if value is None else topic.prepare_value(value, table.value_serializer)[0]
    return topic.prepare_key(key, table.key_serializer)[0], value_bytes


def test_changes_go_in_one_batch_per_partition_in_order_as_faust_would_encode_them(
        env: _Env) -> None:
    async def write() -> None:
        env.on(0)
        env.table["a"] = {"n": 1}
        env.table["b"] = {"n": 2}
        env.on(1)
        env.table["c"] = [1, 2]
        env.on(0)
        env.table["a"] = {"n": 3}
        del env.table["b"]
        await env.app.changelogs.ship()

    env.run(write())
    topic = env.table.changelog_topic.get_topic_name()
    assert topic == "test-changelog-things-changelog"
    assert env.producer.batches == [
        (topic, 0, [_wire(env.table, "a", {"n": 1}), _wire(env.table, "b", {"n": 2}),
                    _wire(env.table, "a", {"n": 3}), _wire(env.table, "b", None)]),
        (topic, 1, [_wire(env.table, "c", [1, 2])]),
    ]
    # once per delivered batch, at its last record
    assert sorted(env.persisted) == [(TP(topic, 0), 3), (TP(topic, 1), 0)]
    assert env.sent == {topic: 5}
    assert dict(env.table.items()) == {"a": {"n": 3}, "c": [1, 2]}


def test_a_full_batch_waits_its_turn_and_order_is_kept(env: _Env) -> None:
    env.producer.batch_size = 200  # a few records a batch

    async def write() -> None:
        env.on(0)
        for i in range(30):
            env.table[f"k{i % 3}"] = {"i": i, "pad": "x" * 20}
        await env.app.changelogs.ship()

    env.run(write())
    assert len(env.producer.batches) > 3
    shipped = [record for _, _, records in env.producer.batches for record in records]
    assert shipped == [_wire(env.table, f"k{i % 3}", {"i": i, "pad": "x" * 20})
                       for i in range(30)]
    assert env.persisted[-1][1] == 29


def test_a_batch_ships_by_itself_a_few_milliseconds_after_its_first_change(env: _Env) -> None:
    async def write() -> int:
        env.on(1)
        env.table["a"] = 1
        assert env.producer.batches == []  # not at once: later changes may join it
        env.table["b"] = 2
        deadline = asyncio.get_running_loop().time() + 2.0
        while not env.producer.batches and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(changelog.LINGER)
        return len(env.producer.batches[0][2]) if env.producer.batches else 0

    assert env.run(write()) == 2


def test_an_undelivered_batch_fails_the_next_ship_and_persists_no_offset(env: _Env) -> None:
    env.producer.fail = True

    async def write() -> None:
        env.on(0)
        env.table["a"] = 1
        await env.app.changelogs.ship()  # hands the batch over; delivery fails after
        await asyncio.sleep(0)  # the delivery callback runs
        await env.app.changelogs.ship()  # what a commit's flush calls

    with pytest.raises(RuntimeError, match="broker said no"):
        env.run(write())
    assert env.persisted == []
    assert env.sent == {}
    env.producer.fail = False
    env.run(env.app.changelogs.ship())  # reported once: the next one is clean



def test_a_batch_written_before_a_rebalance_moves_no_persisted_offset(env: _Env) -> None:
    async def write() -> None:
        env.on(0)
        env.table["a"] = 1  # generation 1
        env.app.consumer.ack_generation = None  # revoked ...
        env.app.consumer.ack_generation = 2  # ... and assigned again
        env.table["b"] = 2  # generation 2: a batch of its own, after the first
        await env.app.changelogs.ship()

    env.run(write())
    topic = env.table.changelog_topic.get_topic_name()
    assert env.producer.batches == [(topic, 0, [_wire(env.table, "a", 1)]),
                                    (topic, 0, [_wire(env.table, "b", 2)])]
    # The first batch may land after records the partition's other owner wrote in
    # between: an offset at its end could skip those in this worker's next recovery.
    assert env.persisted == [(TP(topic, 0), 1)]
    assert env.sent == {topic: 2}


def test_a_batch_delivered_while_partitions_are_revoked_moves_no_persisted_offset(
        env: _Env) -> None:
    async def write() -> None:
        env.on(1)
        env.table["a"] = 1
        env.app.consumer.ack_generation = None  # revoked before the batch was delivered
        await env.app.changelogs.ship()

    env.run(write())
    assert len(env.producer.batches) == 1
    assert env.persisted == []


@pytest.fixture
def rocks(tmp_path: Any) -> Iterator[_Env]:
    """An app whose table "profiles" is stored in RocksDB, as a worker's are."""
    loop = asyncio.new_event_loop()
    app = App("test-changelog-rocksdb", broker="kafka://127.0.0.1:1", autodiscover=False,
              store="rocksdb://", datadir=str(tmp_path), Table=changelog.Table, loop=loop)
    table = app.Table("profiles", partitions=2, key_type=str)
    producer = _Producer()
    app.producer._ensure_producer = lambda: producer
    table.data.set_persisted_offset = lambda tp, offset: None
    app.consumer.ack_generation = 1
    yield _Env(app=app, table=table, producer=producer)
    for db in table.data._dbs.values():
        db.close()
    app.consumer._thread.thread_loop.close()
    loop.close()


def test_a_stored_value_is_encoded_once_for_its_record_and_the_store(rocks: _Env) -> None:
    app, table, producer, env = rocks.app, rocks.table, rocks.producer, rocks
    store = table.data
    encoded: list[Any] = []
    encode_value = store._encode_value

    def counting(value: Any) -> Any:
        encoded.append(value)
        return encode_value(value)

    store._encode_value = counting
    profile = {"customer_id": "c-1", "recent": ["ab", "cd"], "orders": 2}

    async def write() -> None:
        env.on(1)
        table["c-1"] = profile
        await app.changelogs.ship()

    env.run(write())
    assert encoded == [profile]  # Faust encodes it twice: the record, then the store
    topic = table.changelog_topic.get_topic_name()
    assert producer.batches == [(topic, 1, [_wire(table, "c-1", profile)])]
    key_bytes, value_bytes = _wire(table, "c-1", profile)
    assert table.data._dbs[1].get(key_bytes) == value_bytes  # as recovery would store
    env.on(1)
    assert table["c-1"] == profile


def test_a_value_is_read_from_the_store_once(rocks: _Env) -> None:
    app, table, env = rocks.app, rocks.table, rocks
    store = table.data
    lookups: list[str] = []

    def counted(name: str) -> Any:
        method = getattr(store, name)

        def lookup(key: bytes) -> Any:
            lookups.append(name)
            return method(key)
        return lookup

    for name in ("_get", "_contains"):
        setattr(store, name, counted(name))

    async def read() -> None:
        env.on(1)
        table["c-1"] = {"orders": 2}
        await app.changelogs.ship()
        lookups.clear()
        assert table.get("c-1") == {"orders": 2}
        assert lookups == ["_get"]  # Faust's get: _contains, then _get
        lookups.clear()
        assert table.get("c-2") is None and table.get("c-2", "none") == "none"
        assert lookups == ["_get", "_get"]

    async def read_outside_a_stream() -> None:  # as the emitter does: still one read
        lookups.clear()
        assert table.get("c-1") == {"orders": 2} and lookups == ["_get"]

    env.run(read())
    env.current = None
    env.run(asyncio.ensure_future(read_outside_a_stream(), loop=app.loop))  # a new context


def test_many_keys_set_at_once_give_the_records_and_bytes_of_one_at_a_time(
        rocks: _Env) -> None:
    app, table, producer, env = rocks.app, rocks.table, rocks.producer, rocks
    topic = table.changelog_topic.get_topic_name()
    profiles = [(f"c-{i}", {"customer_id": f"c-{i}", "orders": i, "tags": ["a", "é"]})
                for i in range(5)]
    stamps = [(f"c-{i}/0123456789abcdef", i) for i in range(5)]
    seen: list[tuple[str, Any]] = []

    class Watching(Sensor):
        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            seen.append((key, value))

    app.sensors.add(Watching())

    async def write() -> None:
        env.on(1)
        for key, value in profiles[:2]:
            table[key] = value
        table.set_many(profiles[2:] + stamps)
        table.set_many([])
        await app.changelogs.ship()

    env.run(write())
    items = profiles + stamps
    assert producer.batches == [(topic, 1, [_wire(table, k, v) for k, v in items])]
    assert seen == items  # the sensors hear of each key, as for single writes
    for key, value in items:
        key_bytes, value_bytes = _wire(table, key, value)
        assert table.data._dbs[1].get(key_bytes) == value_bytes
        assert table.data._dbs.get(0) is None or table.data._dbs[0].get(key_bytes) is None

    async def read() -> None:
        env.on(1)
        keys = [k for k, _ in items] + ["c-9"]
        assert table.get_many(keys) == [v for _, v in items] + [None]
        assert table.get_many(["c-9", "c-0"], "none") == ["none", profiles[0][1]]
        assert table.get_many([]) == []
        env.on(0)
        assert table.get_many(["c-0"]) == [None]  # the current record's partition only

    env.run(read())


def test_many_keys_outside_a_stream_or_with_a_deletion_go_one_at_a_time(rocks: _Env) -> None:
    app, table, producer, env = rocks.app, rocks.table, rocks.producer, rocks
    topic = table.changelog_topic.get_topic_name()

    async def write() -> None:
        env.on(0)
        table["gone"] = {"orders": 1}
        table.set_many([("c-1", {"orders": 2}), ("gone", None)])  # None: a deletion
        await app.changelogs.ship()

    env.run(write())
    assert producer.batches[-1] == (topic, 0, [_wire(table, "gone", {"orders": 1}),
                                               _wire(table, "c-1", {"orders": 2}),
                                               _wire(table, "gone", None)])
    env.current = None

    async def read_outside_a_stream() -> None:  # Faust's search of every partition
        assert table.get_many(["c-1", "gone"]) == [{"orders": 2}, None]

    env.run(asyncio.ensure_future(read_outside_a_stream(), loop=app.loop))  # a new context


def test_a_value_read_in_its_partition_asks_only_that_partitions_database(
        rocks: _Env) -> None:
    app, table, env = rocks.app, rocks.table, rocks
    store = table.data
    asked: list[int] = []

    async def write() -> None:
        env.on(0)
        table["c-0"] = {"orders": 1}
        env.on(1)
        table["c-1"] = {"orders": 2}
        await app.changelogs.ship()

    env.run(write())
    env.current = None
    store._key_index.clear()  # as for most keys once more than 1,000 were used since

    class Counted:
        def __init__(self, partition: int, db: Any) -> None:
            self.partition, self.db = partition, db

        def get(self, key: bytes) -> Any:
            asked.append(self.partition)
            return self.db.get(key)

        def key_may_exist(self, key: bytes) -> Any:
            asked.append(self.partition)
            return self.db.key_may_exist(key)

    real = dict(store._dbs)
    store._dbs.update({p: Counted(p, db) for p, db in real.items()})

    async def read() -> None:  # outside a stream, as the emitter reads
        assert table.get("c-1") == {"orders": 2}
        assert sorted(set(asked)) == [0, 1]  # Faust's get searched both databases
        asked.clear()
        assert table.get_in(1, "c-1") == {"orders": 2}
        assert asked == [1]
        asked.clear()
        assert table.get_in(0, "c-1") is None and asked == [0]
        assert table.get_in(5, "c-1", "gone") == "gone"  # a partition not held
        assert 5 not in store._dbs  # and not opened for the read

    try:
        env.run(asyncio.ensure_future(read(), loop=app.loop))
    finally:
        store._dbs.update(real)


def test_keys_with_a_prefix_are_read_in_one_partition_in_key_order(rocks: _Env) -> None:
    app, table, env = rocks.app, rocks.table, rocks

    async def write() -> None:
        env.on(1)
        for key, value in (("c-1/bb", 2), ("c-10/cc", 3), ("c-1", 4), ("c-1/aa", 1),
                           ("c-0/zz", 5), ("c-1é/dd", 6)):
            table[key] = value
        env.on(0)
        table["c-1/ee"] = 7
        await app.changelogs.ship()

    env.run(write())
    env.current = None  # as a stage reads it, or outside one: the partition is named
    assert list(table.items_in(1, "c-1/")) == [("c-1/aa", 1), ("c-1/bb", 2)]
    assert list(table.items_in(0, "c-1/")) == [("c-1/ee", 7)]
    assert list(table.items_in(1, "c-1é/")) == [("c-1é/dd", 6)]
    assert list(table.items_in(1, "c-2/")) == []
    assert list(table.items_in(5, "c-1/")) == []  # a partition not held
    assert 5 not in table.data._dbs


def test_a_key_deleted_in_one_partition_leaves_the_others_untouched(rocks: _Env) -> None:
    app, table, env = rocks.app, rocks.table, rocks

    async def write() -> None:
        env.on(1)
        table["1/late/x/0"] = 1
        env.on(0)
        table["0/late/x/0"] = 2
        env.on(1)
        table.del_in(1, "1/late/x/0")
        table.del_in(1, "1/late/never/0")  # not there: a tombstone all the same
        await app.changelogs.ship()

    deleted: list[int] = []
    store = table.data
    real = dict(store._dbs)

    class Counted:
        def __init__(self, partition: int, db: Any) -> None:
            self.partition, self.db = partition, db

        def __getattr__(self, name: str) -> Any:
            return getattr(self.db, name)

        def delete(self, key: bytes) -> None:
            deleted.append(self.partition)
            self.db.delete(key)

    async def again() -> None:
        env.on(1)
        table["1/late/y/1"] = 3
        table.del_in(1, "1/late/y/1")
        await app.changelogs.ship()

    env.run(write())  # opens both partitions' databases
    store._dbs.update({p: Counted(p, db) for p, db in store._dbs.items()})
    try:
        env.run(again())
    finally:
        store._dbs.update(real)
    assert deleted == [1]  # Faust's deletion would have asked every partition's database
    topic = table.changelog_topic.get_topic_name()
    tombstones = [(p, k) for t, p, records in rocks.producer.batches if t == topic
                  for k, v in records if v is None]
    assert tombstones == [(1, _wire(table, key, None)[0])
                          for key in ("1/late/x/0", "1/late/never/0", "1/late/y/1")]
    env.current = None
    assert list(table.items_in(1, "1/late/")) == []
    assert list(table.items_in(0, "0/late/")) == [("0/late/x/0", 2)]


def test_keys_with_a_prefix_in_the_memory_store_are_scanned(env: _Env) -> None:
    async def write() -> None:
        env.on(0)
        env.table["c-1/bb"] = 2
        env.table["c-1/aa"] = 1
        env.table["c-10/cc"] = 3

    env.run(write())
    assert list(env.table.items_in(0, "c-1/")) == [("c-1/aa", 1), ("c-1/bb", 2)]
