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
"""

from __future__ import annotations

import logging
from typing import Any

from faust.stores import rocksdb
from faust.types import TP

__all__ = ["RocksStore"]

log = logging.getLogger(__name__)


class RocksStore(rocksdb.Store):
    """Faust's RocksDB store (rocksdict), its writes without the write-ahead log."""

    def _open_for_partition(self, partition: int) -> Any:
        db = super()._open_for_partition(partition)
        if not self.rocksdb_options.use_rocksdict:
            return db  # python-rocksdb (table option driver="python-rocksdb"): Faust's way
        options = rocksdb.rocksdict.WriteOptions()
        # a property at run time; rocksdict's stub declares it a method
        options.disable_wal = True  # type: ignore[method-assign,assignment]
        db.set_write_options(options)
        return db

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
