"""ClickHouse, either kind: a server over the native protocol, or embedded chdb.

Both backends answer the same small interface (:class:`Warehouse`), so migrations,
sinks, reports and tests run unchanged on either. Driver errors are translated here,
at the boundary, into :class:`~touchpoint.exceptions.WarehouseUnavailable` (retry later)
or :class:`~touchpoint.exceptions.WarehouseError` (retrying will not help).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from touchpoint.exceptions import WarehouseError, WarehouseUnavailable
from touchpoint.settings import WarehouseURL

__all__ = ["Capabilities", "QueryResult", "Warehouse", "connect", "format_datetime"]


@dataclass(frozen=True)
class Capabilities:
    """What the connected engine can do; migrations and sinks adapt to it.

    Detected from the server itself (its version and ``system`` tables), so the oldest
    supported server (18.16) and the newest take the same code path where they can.
    """

    version: tuple[int, ...]
    datetime64: bool  # DateTime64(3): millisecond event times (20.1+)
    ttl: bool  # table TTL (19.6+)
    dedup_token: bool  # insert_deduplication_token + non_replicated_deduplication_window
    map_type: bool  # Map(K, V) (21.1+)

    @property
    def version_text(self) -> str:
        """Version as ClickHouse prints it."""
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class QueryResult:
    """Rows with their column names and ClickHouse types."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as dictionaries keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        """The single value of a one-row, one-column result."""
        if len(self.rows) != 1 or len(self.columns) != 1:
            raise WarehouseError(f"expected one value, got {len(self.rows)} rows")
        return self.rows[0][0]


#: Epoch milliseconds written as Unix time text: those with ten-digit seconds (2001-09-09
#: to 2286-11-20). ClickHouse reads shorter digit strings as calendar forms (YYYYMMDD...).
_UNIX_TEXT_LOW, _UNIX_TEXT_HIGH = 10**12, 10**13


_dumps_stdlib = json.JSONEncoder(ensure_ascii=False).encode


def _json_row(values: list[Any]) -> bytes:
    """One JSONCompactEachRow line: orjson (~10x the standard library's speed).

    What orjson does not write as the standard library does (integers beyond 64 bits,
    NaN and infinities, which it would write as null) goes through the standard library.
    """
    try:
        line = orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return _dumps_stdlib(values).encode()
    if b"null" in line and any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return _dumps_stdlib(values).encode()
    return line


def _epoch_text_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ``DateTime64(3)`` input text: ``"<seconds>.<millis>"``."""
    if _UNIX_TEXT_LOW <= epoch_ms < _UNIX_TEXT_HIGH:
        return f"{epoch_ms // 1000}.{epoch_ms % 1000:03d}"
    return format_datetime(epoch_ms)


def _epoch_text_s(epoch_ms: int) -> str:
    """Epoch milliseconds as ``DateTime`` input text: whole seconds."""
    if _UNIX_TEXT_LOW <= epoch_ms < _UNIX_TEXT_HIGH:
        return str(epoch_ms // 1000)
    return format_datetime(epoch_ms)


def format_datetime(epoch_ms: int) -> str:
    """Epoch milliseconds as ClickHouse's text form (UTC), which every version reads."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{epoch_ms % 1000:03d}"


class Warehouse(ABC):
    """A connection to ClickHouse. Not for sharing between threads without its lock."""

    url: WarehouseURL

    def __init__(self, url: WarehouseURL) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._capabilities: Capabilities | None = None

    @property
    def database(self) -> str:
        """The database our tables live in."""
        return self.url.database

    @property
    def capabilities(self) -> Capabilities:
        """Engine capabilities, detected once per connection."""
        if self._capabilities is None:
            self._capabilities = self._detect()
        return self._capabilities

    def _detect(self) -> Capabilities:
        raw = str(self.query("SELECT version()").scalar())
        version = tuple(int(p) for p in re.findall(r"\d+", raw)[:4])
        settings = {
            r[0] for r in self.query(
                "SELECT name FROM system.settings WHERE name = 'insert_deduplication_token'"
            ).rows
        }
        merge_tree = self._merge_tree_settings()
        return Capabilities(
            version=version,
            datetime64=version >= (20, 1),
            ttl=version >= (19, 6),
            dedup_token="insert_deduplication_token" in settings
            and "non_replicated_deduplication_window" in merge_tree,
            map_type=version >= (21, 1),
        )

    def _merge_tree_settings(self) -> set[str]:
        try:
            rows = self.query(
                "SELECT name FROM system.merge_tree_settings "
                "WHERE name = 'non_replicated_deduplication_window'"
            ).rows
        except WarehouseError:  # 18.16 has no system.merge_tree_settings
            return set()
        return {r[0] for r in rows}

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement that returns nothing (DDL)."""

    @abstractmethod
    def query(self, sql: str) -> QueryResult:
        """Run one query and return its rows."""

    @abstractmethod
    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        dedup_token: str | None = None,
    ) -> None:
        """Insert ``rows`` (values in ``columns`` order) into ``database.table``.

        Date-time values are given as epoch milliseconds. ``dedup_token`` makes a retried
        insert of the same batch a no-op where the engine supports it.
        """

    @abstractmethod
    def use_database(self) -> None:
        """Make bare table names refer to our database (for people's queries)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- server, over the native protocol ------------------------------------------------

_UNAVAILABLE_CODES = {
    159,  # TIMEOUT_EXCEEDED
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    252,  # TOO_MANY_PARTS
    425,  # SYSTEM_ERROR
}


@contextmanager
def _server_errors(url: WarehouseURL) -> Iterator[None]:
    """Translate clickhouse-driver errors into ours (the httpx ``map_exceptions`` idea)."""
    from clickhouse_driver import errors

    try:
        yield
    except (errors.NetworkError, errors.SocketTimeoutError, OSError, EOFError) as exc:
        raise WarehouseUnavailable(
            f"ClickHouse at {url.host}:{url.port} unreachable: {exc}") from exc
    except errors.Error as exc:
        code = getattr(exc, "code", None)
        message = str(exc).split("Stack trace")[0].strip()
        if code in _UNAVAILABLE_CODES:
            raise WarehouseUnavailable(message) from exc
        raise WarehouseError(message) from exc


class ServerWarehouse(Warehouse):
    """ClickHouse server reached with clickhouse-driver (native protocol, port 9000)."""

    def __init__(self, url: WarehouseURL, *, connect_timeout: float = 5.0,
                 send_receive_timeout: float = 60.0) -> None:
        super().__init__(url)
        self._timeouts = {"connect_timeout": connect_timeout,
                          "send_receive_timeout": send_receive_timeout}
        # No database in the connection at first: the migrations create it.
        self._client = self._new_client("default")
        self._dt_columns: dict[str, dict[str, bool]] = {}

    def _new_client(self, database: str) -> Any:
        from clickhouse_driver import Client

        url = self.url
        return Client(host=url.host, port=url.port, user=url.user, password=url.password,
                      database=database, client_name="touchpoint", **self._timeouts)

    def use_database(self) -> None:
        """Reconnect with our database as the default one."""
        with self._lock:
            self._client.disconnect()
            self._client = self._new_client(self.database)

    def execute(self, sql: str) -> None:
        """Run one statement that returns nothing (DDL)."""
        with self._lock, _server_errors(self.url):
            self._client.execute(sql)

    def query(self, sql: str) -> QueryResult:
        """Run one query and return its rows."""
        with self._lock, _server_errors(self.url):
            rows, meta = self._client.execute(sql, with_column_types=True)
        return QueryResult(
            tuple(m[0] for m in meta), tuple(m[1] for m in meta), [tuple(r) for r in rows]
        )

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               dedup_token: str | None = None) -> None:
        """Columnar insert; date-time columns converted from epoch ms to ``datetime``."""
        if not rows:
            return
        kinds = self._datetime_columns(table)
        data: list[list[Any]] = []
        for i, name in enumerate(columns):
            column = [row[i] for row in rows]
            if name in kinds:
                column = [_ms_to_datetime(v) for v in column]
            data.append(column)
        settings: dict[str, Any] = {}
        if dedup_token and self.capabilities.dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        sql = f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) VALUES"
        with self._lock, _server_errors(self.url):
            self._client.execute(sql, data, columnar=True, settings=settings or None)

    def _datetime_columns(self, table: str) -> dict[str, bool]:
        cached = self._dt_columns.get(table)
        if cached is None:
            result = self.query(
                f"SELECT name, type FROM system.columns WHERE database = '{self.database}' "
                f"AND table = '{table}'"
            )
            cached = {name: True for name, kind in result.rows if "DateTime" in kind}
            self._dt_columns[table] = cached
        return cached

    def close(self) -> None:
        """Release the connection."""
        self._client.disconnect()


def _ms_to_datetime(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value / 1000, tz=UTC)


# --- embedded, chdb --------------------------------------------------------------------

_CHDB_LOCKED = re.compile(r"Cannot lock file|Another server instance|EmbeddedServer already")


class EmbeddedWarehouse(Warehouse):
    """ClickHouse engine in-process (chdb), data in a local folder.

    One process at a time may open a folder: a second one gets
    :class:`WarehouseUnavailable` saying who to ask instead (the running worker).
    """

    def __init__(self, url: WarehouseURL) -> None:
        super().__init__(url)
        from chdb import session

        assert url.path is not None
        url.path.mkdir(parents=True, exist_ok=True)
        if _folder_locked(url.path):
            raise WarehouseUnavailable(
                f"the embedded warehouse {url.path} is open in another process "
                "(a running worker?): query through the worker, or stop it first"
            )
        try:
            self._session = session.Session(str(url.path))
        except Exception as exc:  # chdb raises RuntimeError / ChdbError without codes
            if _CHDB_LOCKED.search(str(exc)):
                raise WarehouseUnavailable(
                    f"the embedded warehouse {url.path} is open in another process "
                    "(a running worker?): query through the worker, or stop it first"
                ) from exc
            raise WarehouseError(f"cannot open embedded warehouse {url.path}: {exc}") from exc
        #: per table, its date-time columns: whether each is a DateTime64
        self._dt_columns: dict[str, dict[str, bool]] = {}
        # Session-wide: 64-bit integers as JSON numbers, as clickhouse-driver returns them.
        self._run("SET output_format_json_quote_64bit_integers = 0")

    def _run(self, sql: str, fmt: str = "CSV") -> Any:
        try:
            with self._lock:
                return self._session.query(sql, fmt)
        except Exception as exc:
            message = str(exc).split("Stack trace")[0].strip()
            if "MEMORY_LIMIT_EXCEEDED" in message or "TOO_MANY_PARTS" in message:
                raise WarehouseUnavailable(message) from exc
            raise WarehouseError(message) from exc

    def execute(self, sql: str) -> None:
        """Run one statement that returns nothing (DDL)."""
        self._run(sql)

    def use_database(self) -> None:
        """``USE`` our database for the rest of the session."""
        self._run(f"USE {self.database}")

    def query(self, sql: str) -> QueryResult:
        """Run one query and return its rows, typed like clickhouse-driver returns them."""
        raw = self._run(sql, "JSONCompact")
        payload = raw.bytes() if hasattr(raw, "bytes") else raw
        if not payload:
            return QueryResult((), (), [])
        doc = json.loads(payload)
        names = tuple(m["name"] for m in doc["meta"])
        types = tuple(m["type"] for m in doc["meta"])
        converters = [_json_converter(t) for t in types]
        rows = [
            tuple(conv(v) for conv, v in zip(converters, row, strict=True))
            for row in doc["data"]
        ]
        return QueryResult(names, types, rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               dedup_token: str | None = None) -> None:
        """Insert as JSONCompactEachRow; date-time columns as epoch seconds text.

        A row is a JSON array in ``columns`` order (no per-row dict of names), and a time
        is ``"<seconds>.<millis>"`` (integer seconds for ``DateTime``), which ClickHouse
        reads as a Unix time: about a tenth of the cost of formatting a calendar date.
        """
        if not rows:
            return
        kinds = self._datetime_columns(table)
        dt_index = [(i, _epoch_text_ms if kinds[name] else _epoch_text_s)
                    for i, name in enumerate(columns) if name in kinds]
        lines = []
        for row in rows:
            values = list(row)
            for i, to_text in dt_index:
                if values[i] is not None:
                    values[i] = to_text(values[i])
            lines.append(_json_row(values))
        settings = ""
        if dedup_token:
            settings = f" SETTINGS insert_deduplication_token='{_quote(dedup_token)}'"
        sql = (
            f"INSERT INTO {self.database}.{table} ({', '.join(columns)}){settings} "
            "FORMAT JSONCompactEachRow\n" + b"\n".join(lines).decode()
        )
        self._run(sql)

    def _datetime_columns(self, table: str) -> dict[str, bool]:
        cached = self._dt_columns.get(table)
        if cached is None:
            result = self.query(
                f"SELECT name, type FROM system.columns WHERE database = '{self.database}' "
                f"AND table = '{table}'"
            )
            cached = {name: "DateTime64" in kind for name, kind in result.rows
                      if "DateTime" in kind}
            self._dt_columns[table] = cached
        return cached

    def close(self) -> None:
        """Close the session and release the folder for other processes."""
        with self._lock:
            self._session.close()


def _folder_locked(path: Path) -> bool:
    """Whether another process holds the engine's lock on ``path/status``.

    chdb only reports this on stderr, after a noisy failure; the engine takes an
    exclusive ``flock`` on that file, so try the same lock first and let go of it.
    """
    try:
        fd = os.open(path / "status", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _json_converter(kind: str) -> Any:
    inner = kind
    if inner.startswith("Nullable("):
        inner = inner[len("Nullable("):-1]
    if inner.startswith("LowCardinality("):
        inner = inner[len("LowCardinality("):-1]
    if inner.startswith("DateTime"):
        return _parse_datetime
    if inner == "Date":
        return lambda v: None if v is None else datetime.strptime(v, "%Y-%m-%d").date()
    if inner.startswith(("Int", "UInt")) and "(" not in inner:
        return lambda v: None if v is None else int(v)
    if inner.startswith("Float"):
        return lambda v: None if v is None else float(v)
    return lambda v: v


def _parse_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    fmt = "%Y-%m-%d %H:%M:%S.%f" if "." in value else "%Y-%m-%d %H:%M:%S"
    return datetime.strptime(value, fmt).replace(tzinfo=UTC)


def connect(url: WarehouseURL | str) -> Warehouse:
    """Open the warehouse named by ``url`` (see ``TOUCHPOINT_CLICKHOUSE_URL``)."""
    parsed = WarehouseURL.parse(url) if isinstance(url, str) else url
    if parsed.backend == "chdb":
        return EmbeddedWarehouse(parsed)
    warehouse = ServerWarehouse(parsed)
    try:
        warehouse.capabilities  # noqa: B018 - connect now, so a wrong URL fails here
    except (OSError, WarehouseError):
        warehouse.close()
        raise
    return warehouse


def quote_literal(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + _quote(value) + "'"
