"""Table changelogs in aiokafka batches, shipped within milliseconds and before every commit.

:class:`Table` is Faust's table with its changelog records put into one aiokafka batch per
changelog partition (:class:`ChangelogBatches`) instead of sent one by one, its values
encoded once and read once; :class:`Producer` ships those batches before every flush, so
before every commit. Why, and what it keeps of Faust's guarantees:
``docs/design/runtime.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any, NamedTuple, cast

import faust
from faust import stores
from faust.stores import rocksdb
from faust.stores.base import SerializedStore
from faust.streams import current_event
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from touchpoint.streams.runtime.outbox import aiokafka_producer, sent_counters
from touchpoint.streams.runtime.tablestore import RocksStore

__all__ = ["LINGER", "ChangelogBatches", "Producer", "Table"]

log = logging.getLogger(__name__)

#: Seconds a changelog batch waits for more records before it is shipped (Faust's
#: ``producer_linger`` in ``app.py`` is the same).
LINGER = 0.005


class _Batch(NamedTuple):
    """An open changelog batch: its builder, its table, and the generation it began in."""

    builder: Any  # aiokafka BatchBuilder
    table: Any
    generation: int | None


class ChangelogBatches:
    """The changelog records of an app's tables, batched per changelog partition."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._open: dict[tuple[str, int], _Batch] = {}  # (topic, partition) -> open batch
        self._ready: deque[tuple[str, int, _Batch]] = deque()  # full ones, oldest first
        self._lock: asyncio.Lock | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Future[None] | None = None  # held: the loop keeps weak refs only
        self._failure: BaseException | None = None

    def add(self, table: Any, partition: int, key: Any,
            value: Any) -> tuple[bytes, bytes | None]:
        """Add a change of ``table`` (``value`` None: a deletion) to its partition's batch.

        Returns the key and value as encoded in the record (what recovery stores).
        """
        topic = table.changelog_topic
        name = topic.get_topic_name()
        store = table.data
        if isinstance(store, RocksStore):  # the same bytes, encoded directly
            key_bytes = store._encode_key(key)
            value_bytes = None if value is None else store._encode_value(value)
        else:
            key_bytes, _ = topic.prepare_key(key, table.key_serializer)
            value_bytes = None
            if value is not None:
                value_bytes, _ = topic.prepare_value(value, table.value_serializer)
        batch = self._batch_of(table, name, partition, self._generation())
        self._append(batch, name, partition, key_bytes, value_bytes)
        self._linger()
        return key_bytes, value_bytes

    def add_many(self, table: Any, partition: int,
                 items: list[tuple[Any, Any]]) -> list[tuple[bytes, bytes]]:
        """:meth:`add` for each of ``items`` of a RocksDB table (no deletions), in order.

        What the changes share (the topic, the store, the generation, the open batch) is
        looked up once. Returns each key and value as encoded in its record.
        """
        store = cast(RocksStore, table.data)
        name = table.changelog_topic.get_topic_name()
        batch = self._batch_of(table, name, partition, self._generation())
        encode_key, encode_value = store._encode_key, store._encode_value
        encoded = []
        for key, value in items:
            key_bytes, value_bytes = encode_key(key), encode_value(value)
            batch = self._append(batch, name, partition, key_bytes, value_bytes)
            encoded.append((key_bytes, value_bytes))
        if encoded:
            self._linger()
        return encoded

    def _batch_of(self, table: Any, name: str, partition: int,
                  generation: int | None) -> _Batch:
        """The open batch of ``name``'s ``partition`` in ``generation`` (started if need be)."""
        batch = self._open.get((name, partition))
        if batch is None or batch.generation != generation:
            if batch is not None:  # started before a rebalance: it goes first, as it is
                self._ready.append((name, partition, batch))
            batch = self._open[(name, partition)] = self._new(table, generation)
        return batch

    def _append(self, batch: _Batch, name: str, partition: int, key: bytes,
                value: bytes | None) -> _Batch:
        """Append a record to ``batch``; the batch open afterwards (a new one if it was full)."""
        if batch.builder.append(timestamp=None, key=key, value=value, headers=[]) is None:
            self._ready.append((name, partition, batch))  # full: it goes first
            batch = self._open[(name, partition)] = self._new(batch.table, batch.generation)
            batch.builder.append(timestamp=None, key=key, value=value, headers=[])
        return batch

    def _linger(self) -> None:
        """Ship what is open within ``LINGER`` seconds, unless that is arranged already."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LINGER, self._ship_soon)

    async def ship(self) -> None:
        """Hand every batch started so far to the producer, oldest first.

        Raises the error of a batch that was not delivered since the last call (after the
        producer's own retries): the caller (a commit) must not go on as if it was.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._ready.extend((topic, partition, batch)
                               for (topic, partition), batch in self._open.items())
            self._open.clear()
            while self._ready:
                topic, partition, batch = self._ready[0]
                count = batch.builder.record_count()  # before shipping: the producer may add
                future = await aiokafka_producer(self._app).send_batch(
                    batch.builder, topic, partition=partition)
                self._ready.popleft()
                future.add_done_callback(partial(self._delivered, topic, partition, count, batch))
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _ship_soon(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._ship_logged())

    async def _ship_logged(self) -> None:
        try:
            await self.ship()
        except Exception as exc:
            # Kept for the next flush (a commit), which raises it: the input records whose
            # changes were lost are then not committed.
            self._failure = self._failure or exc
            log.error("table changelog records not delivered: %s", exc)

    def _delivered(self, topic: str, partition: int, count: int, batch: _Batch,
                   future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._failure = self._failure or asyncio.CancelledError()
            return
        exc = future.exception()
        if exc is not None:
            self._failure = self._failure or exc
            log.error("%d changelog records of %s[%d] not delivered: %s", count, topic,
                      partition, exc)
            return
        for counter in sent_counters(self._app):
            counter(topic, count)
        if batch.generation is None or batch.generation != self._generation():
            # Written before a rebalance (or while partitions were revoked). The partition's
            # next owner may have written to the changelog since, and a persisted offset at
            # this batch would skip those records when this worker recovers the partition
            # (two workers then lost profile updates). Leaving the older offset only
            # means recovery reads a little more.
            return
        last = future.result().offset + count - 1
        # where this partition's recovery starts reading the changelog (Faust's own callback
        # does the same per record)
        batch.table.data.set_persisted_offset(TP(topic, partition), last)

    def _new(self, table: Any, generation: int | None) -> _Batch:
        return _Batch(aiokafka_producer(self._app).create_batch(), table, generation)

    def _generation(self) -> int | None:
        """The consumer generation whose partitions this worker owns; None while revoked."""
        return cast(int | None, getattr(self._app.consumer, "ack_generation", None))


class Table(faust.Table):
    """Faust's table, sending its changelog records through the app's :class:`ChangelogBatches`.

    A value set is encoded once, for its changelog record and for the store: Faust
    encodes it for each, and a profile is the largest value written per event. The
    store gets the record's bytes, which is what recovery from the changelog stores too.
    A value read is read from the store once (:meth:`get`). RocksDB tables write without
    RocksDB's write-ahead log (:mod:`touchpoint.streams.runtime.tablestore`).
    """

    def _new_store_by_url(self, url: Any) -> Any:
        if stores.by_url(url) is not rocksdb.Store:
            return super()._new_store_by_url(url)
        return RocksStore(url, self.app, self, table_name=self.name, key_type=self.key_type,
                          key_serializer=self.key_serializer,
                          value_serializer=self.value_serializer,
                          value_type=self.value_type, loop=self.loop, options=self.options)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Set ``key``: its changelog record and its stored value, from one encoding."""
        store = self.data
        if value is None or not isinstance(store, SerializedStore):
            super().__setitem__(key, value)  # Faust's way (e.g. the memory store)
            return
        encoded = self._send_set(key, value)
        if encoded is None:
            store[key] = value  # sent Faust's way: the store encodes it again
        else:
            store._set(*encoded)

    def get(self, key: Any, default: Any = None) -> Any:
        """``key``'s value, or ``default``: one store read.

        Faust's reads ask the store whether it has the key, then read it: two RocksDB
        lookups, and outside a stream (the emitter) each of them asks every partition's
        database. Every event reads its customer's profile and identifiers.
        """
        store = self.data
        if self.default is not None or not isinstance(store, SerializedStore):
            return super().get(key, default)  # a default table, the memory store: Faust's way
        self.on_key_get(key)
        # the store's own __getitem__, without raising KeyError for a missing key: most
        # reads of ``touchpoint-applied`` miss (an event not seen before)
        value = store._get(store._encode_key(key))
        if value is None:
            return default
        return store._decode_value(value)

    def get_many(self, keys: list[Any], default: Any = None) -> list[Any]:
        """Each key's value, or ``default``: :meth:`get` for each, in one RocksDB call.

        Within a stream the keys are the current record's partition's; elsewhere, and for
        other stores, one :meth:`get` a key. The profiles stage reads a batch's
        customers this way.
        """
        store = self.data
        event = current_event()
        if (event is None or self.default is not None or not isinstance(store, RocksStore)
                or not store.rocksdb_options.use_rocksdict or self.is_global
                or self.use_partitioner):
            return [self.get(key, default) for key in keys]
        for key in keys:
            self.on_key_get(key)
        db = store._db_for_partition(event.message.partition)
        found = db.get([store._encode_key(key) for key in keys])
        decode = store._decode_value
        return [default if value is None else decode(value) for value in found]

    def set_many(self, items: Iterable[tuple[Any, Any]]) -> None:
        """Set each key to its value, in the current record's partition.

        What ``table[key] = value`` does for each (:meth:`__setitem__`), with what the
        writes share looked up once: the profiles stage writes a batch's profiles, and
        its applied-event keys, this way. Otherwise (no current record, a transaction, a
        windowed table, a store other than RocksDB, a value None, which deletes), one
        ``table[key] = value`` each.
        """
        items = list(items)
        store = self.data
        event = current_event()
        if (event is None or not isinstance(store, RocksStore) or self.use_partitioner
                or self.app.in_transaction or self._should_expire_keys()
                or any(value is None for _, value in items)):
            for key, value in items:
                self[key] = value
            return
        partition = self.partition_for_key(None)  # the current record's, checked as Faust does
        assert partition is not None  # not use_partitioner
        encoded = _batches(self.app).add_many(self, partition, items)
        put = store._db_for_partition(partition).put
        for (key, value), (key_bytes, value_bytes) in zip(items, encoded, strict=True):
            self._sensor_on_set(self, key, value)
            put(key_bytes, value_bytes)

    def get_in(self, partition: int, key: Any, default: Any = None) -> Any:
        """``key``'s value in ``partition``, or ``default``: one read in that partition's store.

        Outside a stream Faust's RocksDB store finds a key's partition in an index of the
        1,000 keys used last (``table_key_index_size``) and otherwise asks every
        partition's database. The profile emitter reads a few thousand changed profiles a
        round, each of whose partitions it knows. A partition this worker does not hold
        (revoked since) has nothing.
        """
        store = self.data
        if not isinstance(store, rocksdb.Store) or self.default is not None:
            return self.get(key, default)
        db = store._dbs.get(partition)
        value = None if db is None else db.get(store._encode_key(key))
        if value is None:
            return default
        self.on_key_get(key)
        return store._decode_value(value)

    def del_in(self, partition: int, key: Any) -> None:
        """Delete ``key`` in ``partition``: its changelog tombstone, and one database's key.

        Faust's deletion deletes a key it has not read lately in every partition's
        database, a write (a RocksDB tombstone) in each. Sends the tombstone to the
        current record's partition, as a set does.
        """
        store = self.data
        if not isinstance(store, rocksdb.Store):
            if key in self:
                del self[key]
            return
        self.on_key_del(key)
        db = store._dbs.get(partition)
        if db is not None:
            db.delete(store._encode_key(key))

    def items_in(self, partition: int, prefix: str) -> Iterator[tuple[Any, Any]]:
        """The keys starting with ``prefix`` in ``partition``, with their values, in key order.

        One seek in that partition's database, then its keys in order until the prefix
        ends: the profiles stage reads a customer's applied-event keys
        (``"<customer>/<digest>"``) this way without touching any other key. Text keys
        are encoded character by character (JSON, or raw UTF-8), so the keys with a
        prefix are the encoded keys with a byte prefix, next to each other in the
        database. A partition this worker does not hold has nothing; other stores
        (memory) are scanned.
        """
        store = self.data
        if not isinstance(store, rocksdb.Store):
            items = [(k, v) for k, v in self.data.items()
                     if isinstance(k, str) and k.startswith(prefix)]
            yield from sorted(items)
            return
        db = store._dbs.get(partition)
        if db is None:
            return
        # the bytes every encoded key with this prefix starts with: the encoded prefix,
        # without what closes an encoded text (a JSON string's quote)
        a, b = store._encode_key(f"{prefix}a"), store._encode_key(f"{prefix}b")
        start = a[:next(at for at, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)]
        if store.rocksdb_options.use_rocksdict:
            items = db.items(from_key=start)
        else:  # python-rocksdb (table option driver="python-rocksdb")
            items = db.iteritems()
            items.seek(start)
        for key, value in items:
            if not key.startswith(start):
                break
            yield store._decode_key(key), store._decode_value(value)

    def on_key_set(self, key: Any, value: Any) -> None:
        """Send the change (batched), then do what Faust does after sending it."""
        self._send_set(key, value)

    def _send_set(self, key: Any, value: Any) -> tuple[bytes, bytes | None] | None:
        """Send a change; its encoded key and value, or None if Faust sent it its own way."""
        partition = self.partition_for_key(key)
        if partition is None or self.app.in_transaction:
            # Faust picks the partition as it sends (use_partitioner), or sends within
            # the transaction that commits the input (exactly-once): its own way
            super().on_key_set(key, value)
            return None
        encoded = _batches(self.app).add(self, partition, key, value)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)
        return encoded

    def on_key_del(self, key: Any) -> None:
        """Send the deletion (batched), then do what Faust does after sending it."""
        partition = self.partition_for_key(key)
        if partition is None or self.app.in_transaction:
            super().on_key_del(key)
            return
        _batches(self.app).add(self, partition, key, None)
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)


class Producer(driver.Producer):
    """Faust's aiokafka producer; a flush ships the tables' changelog batches first."""

    async def flush(self) -> None:
        """Ship the changelog batches, then wait until everything sent is delivered."""
        changelogs = getattr(self.app, "changelogs", None)
        if changelogs is not None:
            await changelogs.ship()
        await super().flush()


def _batches(app: Any) -> ChangelogBatches:
    return cast(ChangelogBatches, app.changelogs)
