"""The tables' RocksDB store: Faust's, without the write-ahead log, in a bounded memory.

:class:`RocksStore` turns the log off (the changelog topic is the table's truth), flushes
on stop and revocation, and moves a damaged partition database aside so that the
partition is rebuilt from its changelog instead of stopping the worker. It encodes text
keys and values in JSON itself, to the same bytes as Faust's serializer registry, which
takes several calls for what is one JSON call. Every RocksDB database of the process
(each table partition, the copy of the identity graph) shares one read cache and one
write-buffer budget (:func:`share_memory`), where Faust gives each its own 2 GiB cache
and up to 192 MiB of memtables. What that costs after a crash, and
what counts as damaged: ``docs/design/runtime.md``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import rocksdict
from faust.stores import rocksdb
from faust.types import TP
from faust.utils import json as faust_json

from touchpoint.settings import SETTINGS

__all__ = ["MemoryBudget", "RocksStore", "bounded_options", "json_bytes", "json_loads",
           "share_memory"]

log = logging.getLogger(__name__)

#: Largest memtable of one database: with a dozen or more databases per worker, the
#: shared write-buffer budget rather than this decides when they flush.
WRITE_BUFFER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class MemoryBudget:
    """The read cache and write-buffer manager every RocksDB database of the process shares."""

    megabytes: int
    cache: Any
    write_buffers: Any

    @classmethod
    def of(cls, megabytes: int) -> MemoryBudget:
        """Half of ``megabytes`` for cached blocks (with index and filters), half for memtables."""
        half = megabytes * 1024 * 1024 // 2
        return cls(megabytes, rocksdict.Cache(half), rocksdict.WriteBufferManager(half, False))


_budget: MemoryBudget | None = None
_DEFAULT_MEGABYTES = int(next(s.default for s in SETTINGS if s.name == "rocksdb_memory_mb"))


def share_memory(megabytes: int) -> MemoryBudget:
    """Set the memory the databases opened from now on share (``TOUCHPOINT_ROCKSDB_MEMORY_MB``)."""
    global _budget
    if _budget is None or _budget.megabytes != megabytes:
        _budget = MemoryBudget.of(megabytes)
    return _budget


def bounded_options(bloom_bits: int = 3) -> Any:
    """Options (rocksdict) for a database held to the shared budget, with raw bytes keys."""
    # a store opened outside a worker (tests, tools) gets the setting's default
    budget = _budget if _budget is not None else share_memory(_DEFAULT_MEGABYTES)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(bloom_bits, True)
    table.set_block_cache(budget.cache)
    # index and filter blocks count against the cache instead of growing beside it with
    # the data; level 0's stay pinned, as every read consults them
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_write_buffer_manager(budget.write_buffers)
    return options


#: Values encoded here; anything else (a Faust model, a value Faust's JSON encoder must
#: convert) goes Faust's way.
_JSON_TYPES = (dict, list, str, int, float, bool)
#: The key by which Faust recognizes a serialized model (``faust.models.base``).
_MODEL_KEY = "__faust"


class _BoundedOptions(rocksdb.RocksDBOptions):
    """Faust's options for a table partition, on the shared budget."""

    def as_options(self) -> Any:
        options = bounded_options(self.bloom_filter_size)
        if self.max_open_files is not None:
            options.set_max_open_files(self.max_open_files)
        options.set_target_file_size_base(self.target_file_size_base)
        return options


class RocksStore(rocksdb.Store):
    """Faust's RocksDB store (rocksdict), its writes without the write-ahead log.

    Text keys (``key_type=str``, in JSON as Faust's tables keep them) and JSON values
    without a model type are encoded and decoded here directly: the same bytes as
    Faust's serializer registry, which goes through a codec lookup, a codec and a model
    check for each. Reads and writes in a stream go straight to the current record's
    partition database, without Faust's index of the partitions of the keys used last:
    that index, a locked LRU updated on every read and write, only helps a read outside
    a stream, which here names its partition (``changelog.Table.get_in``) or is rare (a
    web lookup, which then asks each partition's database).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.rocksdb_options.use_rocksdict:
            # built as Faust builds its own (the options dict has lost driver and read_only)
            self.rocksdb_options = _BoundedOptions(**dict(self.options or {}),
                                                   use_rocksdict=True)
        serializers: Any = self.app.serializers
        # what Faust's registry would pick (faust/serializers/registry.py)
        self._json_keys = self.key_type is str and serializers._serializer(
            str, self.key_serializer, serializers.key_serializer) == "json"
        self._json_values = self.value_type is None and serializers._serializer(
            None, self.value_serializer, serializers.value_serializer) == "json"

    def _encode_key(self, key: Any) -> bytes:
        if self._json_keys and type(key) is str:
            return json_bytes(key)
        return cast(bytes, super()._encode_key(key))

    def _decode_key(self, key: bytes | None) -> Any:
        if self._json_keys and key is not None:
            decoded = json_loads(key)
            if type(decoded) is str:
                return decoded
        return super()._decode_key(key)

    def _encode_value(self, value: Any) -> bytes | None:
        if self._json_values and type(value) in _JSON_TYPES:
            return json_bytes(value)
        return cast(bytes | None, super()._encode_value(value))

    def _decode_value(self, value: bytes | None) -> Any:
        if self._json_values and value is not None:
            payload = json_loads(value)
            # a serialized Faust model carries this key: Faust's registry rebuilds it
            if not (type(payload) is dict and _MODEL_KEY in payload):
                return payload
        return super()._decode_value(value)

    def _get(self, key: bytes) -> bytes | None:
        event = rocksdb.current_event()
        if event is None or self.table.is_global or self.table.use_partitioner:
            return cast(bytes | None, super()._get(key))  # outside a stream: Faust's search
        return cast(bytes | None, self._db_for_partition(event.message.partition).get(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        event = rocksdb.current_event()
        if event is None:
            super()._set(key, value)  # Faust's assertion
            return
        self._db_for_partition(event.message.partition).put(key, value)

    def _open_for_partition(self, partition: int) -> Any:
        db = self._open_or_set_aside(partition)
        if not self.rocksdb_options.use_rocksdict:
            return db  # python-rocksdb (table option driver="python-rocksdb"): Faust's way
        options = rocksdb.rocksdict.WriteOptions()
        # a property at run time; rocksdict's stub declares it a method
        options.disable_wal = True  # type: ignore[method-assign,assignment]
        db.set_write_options(options)
        return db

    def _open_or_set_aside(self, partition: int) -> Any:
        """Faust's open of a partition's database; a damaged one is set aside for a new one."""
        path = self.partition_path(partition)
        damage = _damaged_on_disk(path)
        if damage is None:
            try:
                return super()._open_for_partition(partition)
            except Exception as exc:
                damage = _damage(exc, path)
                if damage is None:
                    raise  # e.g. locked by another worker: Faust retries
        self._set_aside(partition, damage)
        return super()._open_for_partition(partition)

    def persisted_offset(self, tp: TP) -> int | None:
        """The partition's persisted offset; None if it is damaged (then set aside)."""
        try:
            return super().persisted_offset(tp)
        except Exception as exc:
            damage = _damage(exc, self.partition_path(tp.partition))
            if damage is None:
                raise
        db = self._dbs.pop(tp.partition, None)
        if db is not None:
            with suppress(Exception):  # it is set aside whether it closes cleanly or not
                db.close()
        self._set_aside(tp.partition, damage)
        self._db_for_partition(tp.partition)  # an empty one: recovery starts at the beginning
        return None

    def _set_aside(self, partition: int, damage: str) -> None:
        """Move a damaged partition database aside, next to where it was, and say so."""
        path = self.partition_path(partition)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        copies = 1
        while aside.exists():  # renaming onto an empty folder would replace it
            copies += 1
            aside = path.with_name(f"{path.name}.corrupt-{stamp}-{copies}")
        path.rename(aside)
        log.warning("table %s partition %d: RocksDB database %s is damaged (%s); moved to %s, "
                    "the partition is rebuilt from changelog topic %s", self.table_name,
                    partition, path, damage, aside, self.table.changelog_topic.get_topic_name())

    def flush(self) -> None:
        """Write every open partition's memtables to disk."""
        for db in self._dbs.values():
            db.flush()

    async def stop(self) -> None:
        """Flush, then let Faust drop the databases."""
        self.flush()
        await super().stop()

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        """Flush the revoked partitions' databases before Faust drops them."""
        for tp in tps:
            db = self._dbs.get(tp.partition)
            if db is not None and tp.topic in table.changelog_topic.topics:
                db.flush()
        super().revoke_partitions(table, tps)


#: How the tables read their JSON: Faust's reader (orjson and the standard library both
#: read UTF-8 bytes and text).
json_loads = cast(Callable[[bytes | str], Any], faust_json.loads)


def json_bytes(value: Any) -> bytes:
    """``value`` in JSON as the tables write it (Faust's own call, as bytes)."""
    encoded = faust_json.dumps(value)
    return encoded if type(encoded) is bytes else encoded.encode()


def _damaged_on_disk(path: Path) -> str | None:
    """What is wrong with a partition's database before RocksDB opens it, if anything."""
    if path.is_dir():
        if (path / "CURRENT").exists() or not any(path.iterdir()):
            return None
        # RocksDB would make a new database here and delete the old one's files
        return "no CURRENT file"
    if path.exists():
        return "not a folder"
    return None  # a new partition: RocksDB makes it


def _damage(exc: Exception, path: Path) -> str | None:
    """RocksDB's error if it says the database at ``path`` is damaged, else None."""
    text = " ".join(str(exc).split())  # on one line: some span two
    if text.startswith("Corruption:"):
        return text
    if text.startswith("IO error: No such file or directory") and f"{path}{os.sep}" in text:
        return text  # a file the database names (its MANIFEST) is missing
    return None
