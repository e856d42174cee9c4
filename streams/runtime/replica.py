"""Replica: a worker's local, read-only copy of a compacted topic, kept on disk.

Every worker follows the identity graph's changelog with a :class:`Replica`, so that the
partitioned identity stage resolves ordinary events without asking the one worker that
owns the graph (``streams/stages/identity.py``). The copy is a RocksDB database of its
own (rocksdict, raw bytes, no write-ahead log), rebuilt from the topic's beginning at
every start: it is a cache of the topic, never a truth of its own, and a worker's
memory does not grow with the keys it holds. Records are applied in offset order, one
fetched batch at a time between two awaits, so a reader on the event loop always sees
the topic as it was at some offset.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mode import Service

from touchpoint.streams.runtime.tablestore import bounded_options

__all__ = ["Replica"]

log = logging.getLogger(__name__)

#: What is stored for a record: ``(key, value)`` -> bytes to keep, or None to keep nothing.
Transform = Callable[[bytes, bytes], bytes | None]
#: The key a record is kept under (e.g. its text, decoded from the topic's encoding).
KeyTransform = Callable[[bytes], bytes]


class Replica(Service):
    """Follows partition 0 of ``topic`` into a local database at ``path``.

    ``key`` turns a record's key into the one it is kept under, ``transform`` its value
    into what is kept (None: the key is dropped); a tombstone deletes the key.
    :attr:`caught_up` is set once the copy has reached the end offset the topic had when
    following began.
    """

    def __init__(self, *, bootstrap: Sequence[str], topic: str, path: Path,
                 transform: Transform, key: KeyTransform = lambda k: k,
                 client_options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.bootstrap = list(bootstrap)
        self.topic = topic
        self.path = path
        self.transform = transform
        self.key = key
        self.caught_up = asyncio.Event()
        self.applied = 0
        self.position = 0
        self._options = dict(client_options or {})
        self._db: Any = None
        self._consumer: Any = None
        super().__init__(**kwargs)

    def get(self, key: bytes) -> bytes | None:
        """What is kept for ``key``, if anything."""
        db = self._db
        return None if db is None else db.get(key)

    async def on_start(self) -> None:
        """Open an empty database (the topic is the truth) and start following."""
        import rocksdict

        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = rocksdict.Rdict(str(self.path), bounded_options())
        write = rocksdict.WriteOptions()
        write.disable_wal = True  # type: ignore[method-assign,assignment]
        self._db.set_write_options(write)
        self.add_future(self._follow())

    async def on_stop(self) -> None:
        """Stop following and close (the copy is deleted at the next start)."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.topic, 0)
        while not self.should_stop:
            try:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                    group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024,
                    **self._options)
                await consumer.start()
                break
            except Exception as exc:  # Kafka not there yet: keep trying, as the worker does
                log.warning("replica of %s: cannot reach Kafka (%s); retrying", self.topic, exc)
                await self.sleep(2.0)
        else:
            return
        self._consumer = consumer
        # The worker may create the topic after this starts; a client that assigned it
        # before would not see it until its next metadata refresh (minutes).
        while self.topic not in await consumer.topics():
            if self.should_stop:
                return
            await self.sleep(0.2)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        started = time.monotonic()
        if end == 0:
            self.caught_up.set()
        while not self.should_stop:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=20_000)
            records = batches.get(tp, [])
            if records:
                self._apply(records)
                self.position = records[-1].offset + 1
            if not self.caught_up.is_set() and self.position >= end:
                log.info("replica of %s: %d records in %.1f s", self.topic, self.applied,
                         time.monotonic() - started)
                self.caught_up.set()

    def _apply(self, records: Sequence[Any]) -> None:
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            if record.key is None:
                continue
            key = self.key(record.key)
            kept = None if record.value is None else self.transform(key, record.value)
            if kept is None:
                batch.delete(key)
            else:
                batch.put(key, kept)
        self._db.write(batch)
        self.applied += len(records)
