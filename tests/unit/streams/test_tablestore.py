"""The tables' RocksDB store writes without a write-ahead log and flushes when it lets go.

Each case writes in a child process that then dies without closing anything (SIGKILL or
``os._exit``), and this process opens the database afterwards: what is on disk is what
a restarted worker would find.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("rocksdict")

_SETUP = """
import asyncio, os, signal
from faust.types import TP
from touchpoint.streams import changelog
from touchpoint.streams.app import App
from touchpoint.streams.tablestore import RocksStore

app = App("test-tablestore", broker="kafka://127.0.0.1:1", autodiscover=False,
          store="rocksdb://", datadir={datadir!r}, Table=changelog.Table)
table = app.Table("profiles", partitions=2, key_type=str)
store = table.data
assert type(store) is RocksStore, type(store)
db = store._db_for_partition(0)  # held: dropping the database would close and flush it
print(store.partition_path(0), flush=True)
"""


def _run(tmp_path: Path, body: str) -> tuple[Path, int]:
    """Run the setup and ``body`` in a child; the partition's path and its exit code."""
    script = _SETUP.format(datadir=str(tmp_path)) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout, done.stderr
    return Path(done.stdout.splitlines()[0]), done.returncode


def _found(path: Path, *keys: bytes) -> list[bytes]:
    from faust.stores.rocksdb import RocksDBOptions

    assert path.is_dir(), path  # the child's database, not a new one
    db = RocksDBOptions().open(path)
    try:
        return [key for key in keys if db.get(key) is not None]
    finally:
        db.close()


def test_a_killed_worker_keeps_what_was_flushed_and_loses_what_was_not(
        tmp_path: Path) -> None:
    path, code = _run(tmp_path, """
        db.put(b"flushed", b"1")
        store.flush()
        db.put(b"in-memory", b"2")  # without a log: only in the memtable
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert code == -9
    assert _found(path, b"flushed", b"in-memory") == [b"flushed"]


def test_a_stop_flushes_before_the_databases_are_dropped(tmp_path: Path) -> None:
    path, code = _run(tmp_path, """
        db.put(b"written", b"1")
        asyncio.run(store.stop())
        os._exit(0)  # no finalizers: only what stop() wrote is there
    """)
    assert code == 0
    assert _found(path, b"written") == [b"written"]


def test_a_revoked_partition_is_flushed_before_it_is_dropped(tmp_path: Path) -> None:
    path, code = _run(tmp_path, """
        db.put(b"written", b"1")
        other = store._db_for_partition(1)
        other.put(b"kept", b"2")
        store.revoke_partitions(table, {TP(table.changelog_topic.get_topic_name(), 0)})
        assert 0 not in store._dbs and 1 in store._dbs
        os._exit(0)
    """)
    assert code == 0
    assert _found(path, b"written") == [b"written"]
    assert _found(path.with_name(path.name.replace("-0.db", "-1.db")), b"kept") == []
