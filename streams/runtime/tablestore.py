"""The tables' RocksDB store: Faust's, writing without RocksDB's write-ahead log.

A table's truth is its changelog topic. The local RocksDB database is a copy that saves
reading the changelog again on restart: each partition's database holds the offset of
the last changelog record it has stored (Faust's "persisted offset"), and recovery reads
the changelog from there. Faust's store writes every put into RocksDB's write-ahead log
as well, one ``write(2)`` per put: a profile, an identity-graph entry and a persisted
offset for every few events. That log was most of the cost of a put: 4.2 µs against
1.0 µs for a 1.5 KB value (200,000 puts through rocksdict with Faust's options,
2026-11-24). ``Store._set`` and ``set_persisted_offset`` were 5.5 % of a worker's
samples at 2,000 events/s.

:class:`RocksStore` turns the log off. What that means:

- **A clean stop, a revocation** flush the memtables, so nothing is lost (RocksDB also
  flushes when a database without a log is closed).
- **A killed worker** (``SIGKILL``, out of memory) loses what was only in the memtables,
  values and persisted offsets together: a flush writes a prefix of the database's
  writes, and a persisted offset is written after the values of the records it covers.
  So the database comes back at an older persisted offset with at least the values it
  covers, and recovery reads the changelog from there, which takes longer (up to the
  write buffers' size, 3 x 64 MiB a partition by Faust's defaults) but gives the same
  tables. It also narrows a crash window: a value put before its changelog record was
  sent used to survive a kill and be ahead of the changelog; now it survives only if a
  flush happened in between.

A damaged database (a disk or a copy that went wrong, e.g. ``Corruption: CURRENT file
does not end with newline``) would stop the worker at start. As the changelog holds the
whole table, :class:`RocksStore` moves such a database aside instead, to
``<partition>.db.corrupt-<UTC time>`` next to it for an operator to inspect (it deletes
nothing; remove those folders once done), logs a warning and opens an empty one: with no
persisted offset, recovery reads the changelog from its beginning. Damaged means RocksDB
said ``Corruption`` when opening the database or reading its persisted offset (recovery
reads that first, before any value), a file it names is missing, the folder has no
``CURRENT`` file (RocksDB would start a new database in it and delete the old files),
or it is not a folder. Other errors are raised as before: a database locked by another
worker is one Faust waits for. Corruption found later, in a value read while events are
processed, is raised too: the partition cannot be rebuilt under a running agent.
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faust.stores import rocksdb
from faust.types import TP

__all__ = ["RocksStore"]

log = logging.getLogger(__name__)


class RocksStore(rocksdb.Store):
    """Faust's RocksDB store (rocksdict), its writes without the write-ahead log."""

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
