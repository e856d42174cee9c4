"""The tables' RocksDB store: no write-ahead log, flushes when it lets go, heals damage.

Each write case writes in a child process that then dies without closing anything
(SIGKILL or ``os._exit``), and this process opens the database afterwards: what is on
disk is what a restarted worker would find. Each damage case writes a database, damages
it as a disk or a bad copy would, and opens it with a store as a starting worker does.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import faust
import pytest
from faust.stores.rocksdb import RocksDBOptions
from faust.types import TP, Message

from touchpoint.streams.runtime import changelog, tablestore
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime.outbox import make_current
from touchpoint.streams.runtime.tablestore import RocksStore

_SETUP = """
import asyncio, os, signal
from faust.types import TP
from touchpoint.streams.runtime import changelog
from touchpoint.streams.runtime.app import App
from touchpoint.streams.runtime import tablestore
from touchpoint.streams.runtime.tablestore import RocksStore

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


OFFSET_KEY = RocksStore.offset_key


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RocksStore]:
    """A worker's store of table "profiles" in ``tmp_path``, no database open yet."""
    loop = asyncio.new_event_loop()
    app = App("test-tablestore-damage", broker="kafka://127.0.0.1:1", autodiscover=False,
              store="rocksdb://", datadir=str(tmp_path), Table=changelog.Table, loop=loop)
    table = app.Table("profiles", partitions=2, key_type=str)
    assert type(table.data) is RocksStore, type(table.data)
    yield table.data
    for db in table.data._dbs.values():
        db.close()
    loop.close()


def _written(path: Path) -> None:
    """A partition's database at ``path`` with 2,000 values at persisted offset 41, closed."""
    db = RocksDBOptions().open(path)
    db.put(OFFSET_KEY, b"41")  # sorts first: in the first data block
    for i in range(2000):
        db.put(f"k{i:05d}".encode(), bytes([i % 251]) * 100)
    db.flush()
    db.close()


def _no_newline_in_current(path: Path) -> None:
    (path / "CURRENT").write_bytes((path / "CURRENT").read_bytes().rstrip(b"\n"))


def _garbage_manifest(path: Path) -> None:
    next(path.glob("MANIFEST-*")).write_bytes(b"\x00garbage" * 20)


def _truncated_sst(path: Path) -> None:
    sst = next(path.glob("*.sst"))
    sst.write_bytes(sst.read_bytes()[: sst.stat().st_size // 2])


def _no_manifest(path: Path) -> None:
    next(path.glob("MANIFEST-*")).unlink()


def _no_current(path: Path) -> None:
    (path / "CURRENT").unlink()


def _a_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_bytes(b"not a database")


def _content(path: Path) -> dict[str, bytes]:
    """The files of a database (a failed open rotates RocksDB's own LOG: left out)."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {f.name: f.read_bytes() for f in path.iterdir() if not f.name.startswith("LOG")}


@pytest.mark.parametrize(("damage", "said"), [
    pytest.param(_no_newline_in_current, "Corruption: CURRENT file does not end with newline",
                 id="CURRENT without newline"),
    pytest.param(_garbage_manifest, "Corruption: no log_file_number, next_file_number, "
                 "last_sequence entry in MANIFEST", id="garbage MANIFEST"),
    pytest.param(_truncated_sst, "Corruption: Sst file size mismatch", id="truncated SST"),
    pytest.param(_no_manifest, "IO error: No such file or directory", id="no MANIFEST"),
    pytest.param(_no_current, "(no CURRENT file)", id="no CURRENT"),
    pytest.param(_a_file, "(not a folder)", id="a file"),
])
def test_a_damaged_database_is_set_aside_and_a_new_one_opened(
        store: RocksStore, damage: Callable[[Path], None], said: str,
        caplog: pytest.LogCaptureFixture) -> None:
    path = store.partition_path(0)
    _written(path)
    damage(path)
    content = _content(path)
    topic = store.table.changelog_topic.get_topic_name()

    with caplog.at_level(logging.WARNING, logger="touchpoint.streams.runtime.tablestore"):
        offset = store.persisted_offset(TP(topic, 0))

    assert offset is None  # so recovery reads the changelog from its beginning
    db = store._dbs[0]
    assert db.get(b"k00001") is None
    db.put(b"k00001", b"new")
    assert db.get(b"k00001") == b"new"
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.corrupt-")]
    assert _content(aside) == content
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    for part in (str(path), said, f"moved to {aside}", f"changelog topic {topic}"):
        assert part in message, message


def test_a_database_whose_persisted_offset_cannot_be_read_is_set_aside(
        store: RocksStore, caplog: pytest.LogCaptureFixture) -> None:
    path = store.partition_path(0)
    _written(path)
    sst = next(path.glob("*.sst"))
    with sst.open("r+b") as file:  # the first data block: opens, but cannot be read
        file.seek(10)
        file.write(b"\xff" * 1000)
    damaged = sst.read_bytes()
    store._db_for_partition(0)  # opens, as when Faust assigns the partition

    with caplog.at_level(logging.WARNING, logger="touchpoint.streams.runtime.tablestore"):
        offset = store.persisted_offset(TP(store.table.changelog_topic.get_topic_name(), 0))

    assert offset is None
    assert store._dbs[0].get(b"k00001") is None
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.corrupt-")]
    assert (aside / sst.name).read_bytes() == damaged
    [record] = caplog.records
    assert "Corruption: block checksum mismatch" in record.getMessage()


_HOLD = """
import sys
from faust.stores.rocksdb import RocksDBOptions
db = RocksDBOptions().open(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(("holder", "said"), [
    ("this process", "lock hold by current process"),
    ("another process", "Resource temporarily unavailable"),
])
def test_a_locked_database_is_not_set_aside(
        store: RocksStore, holder: str, said: str, caplog: pytest.LogCaptureFixture) -> None:
    path = store.partition_path(0)
    _written(path)
    if holder == "this process":
        held = RocksDBOptions().open(path)
        release = held.close
    else:
        child = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == "open\n"

        def release() -> None:
            child.communicate(timeout=30)
    try:
        with pytest.raises(Exception, match=said) as raised:
            store._db_for_partition(0)
    finally:
        release()
    assert "lock" in repr(raised.value)  # what Faust waits and tries again for
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(path.name)] == [path.name]
    assert caplog.records == []
    db = store._db_for_partition(0)  # once the other lets go: the same database
    assert (db.get(OFFSET_KEY), db.get(b"k01999")) == (b"41", bytes([1999 % 251]) * 100)


def test_every_partition_database_writes_into_one_shared_budget(store: RocksStore) -> None:
    budget = tablestore.share_memory(32)
    first, second = store._db_for_partition(0), store._db_for_partition(1)
    opened = budget.write_buffers.get_usage()
    first[b"a"] = b"x" * 100_000
    after_first = budget.write_buffers.get_usage()
    second[b"b"] = b"y" * 100_000
    # both memtables are charged to the one manager: its usage grows with each database
    assert opened < after_first < budget.write_buffers.get_usage()
    assert budget.write_buffers.get_buffer_size() == 16 * 1024 * 1024
    first.flush()
    second.flush()
    assert first[b"a"] == b"x" * 100_000  # read back through the shared cache
    assert budget.cache.get_usage() > 0


def test_the_budget_is_set_once_per_size() -> None:
    budget = tablestore.share_memory(48)
    assert tablestore.share_memory(48) is budget
    assert tablestore.share_memory(64) is not budget


class _Point(faust.Record, serializer="json"):
    x: int


#: Values a table holds, and some it could: each must be stored as Faust would store it.
VALUES = [
    {"customer_id": "c-1", "contacts": {"web": 3, "store": 1}, "spend": 12.5,
     "recent": [["e-1", 1717000000000]], "held": [], "merged_from": ["c-0"], "vip": True,
     "note": "等了两个小时 \u2028 \"quoted\" \\ é", "none": None},
    [1, "two", 3.0, None, [], {}],
    17, -1, 0, 2**62, 1.5, True, "text", "",
    {"__faust": {"ns": "not.a.model"}, "x": 1},  # looks like a model: Faust's way
    {1: "int keys", "k": datetime(2026, 12, 6, tzinfo=UTC)},  # Faust's JSON converts them
]


def test_keys_and_values_are_the_bytes_faust_s_registry_makes(store: RocksStore) -> None:
    serializers = store.app.serializers
    for key in ("c-1", "客户-7", "a/b\"c", ""):
        faust_key = serializers.dumps_key(str, key, serializer=store.key_serializer)
        assert store._encode_key(key) == faust_key
        assert store._decode_key(faust_key) == key
    assert store._encode_key("c-1") == b'"c-1"'  # Faust's tables keep keys in JSON
    for value in VALUES:
        faust_bytes = serializers.dumps_value(None, value, serializer=store.value_serializer)
        assert store._encode_value(value) == faust_bytes, value
        try:
            faust_value = serializers.loads_value(None, faust_bytes,
                                                  serializer=store.value_serializer)
        except Exception as exc:  # the look-alike model: both must refuse it alike
            with pytest.raises(type(exc)):
                store._decode_value(faust_bytes)
        else:
            assert store._decode_value(faust_bytes) == faust_value
    point = _Point(x=3)  # a Faust model goes through Faust's registry, both ways
    encoded = store._encode_value(point)
    assert encoded == serializers.dumps_value(None, point, serializer=store.value_serializer)
    assert store._decode_value(encoded) == point


def test_reads_and_writes_in_a_stream_use_the_record_s_partition_and_no_key_index(
        store: RocksStore) -> None:
    app = store.app
    message = Message("p.source", 1, 0, 0.0, 0, {}, b"k", b"v", None)
    event = app.create_event(b"k", b"v", {}, message)

    def in_a_stream() -> None:
        make_current(event)
        store["c-1"] = {"orders": 2}
        assert store._dbs[1].get(b'"c-1"') == b'{"orders":2}'
        assert 0 not in store._dbs  # no other partition's database was opened
        assert store["c-1"] == {"orders": 2}
        assert len(store._key_index) == 0  # Faust's LRU of key partitions, not kept

    contextvars.Context().run(in_a_stream)
    store._db_for_partition(0)
    # outside a stream (a new context), Faust's search of every database finds it
    assert contextvars.Context().run(store.__getitem__, "c-1") == {"orders": 2}
