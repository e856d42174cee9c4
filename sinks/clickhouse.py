"""ClickHouse, either kind: a server over the native protocol, or embedded chdb.

Both backends answer the same small interface (:class:`Warehouse`), so migrations,
sinks, reports and tests run unchanged on either. Driver errors are translated here,
at the boundary, into :class:`~touchpoint.exceptions.WarehouseUnavailable` (retry later),
:class:`~touchpoint.exceptions.WarehouseRejected` (these rows' values cannot be stored;
other rows can) or :class:`~touchpoint.exceptions.WarehouseError` (retrying will not help).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import orjson

from touchpoint.exceptions import WarehouseError, WarehouseRejected, WarehouseUnavailable
from touchpoint.settings import WarehouseURL
from touchpoint.sinks.sql_tokens import enclosed

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


def _json_columns(columns: list[list[Any]]) -> bytes:
    """A JSONCompactColumns body: orjson (~10x the standard library's speed).

    What orjson does not write as the standard library does (integers beyond 64 bits,
    NaN and infinities, which it would write as null) goes through the standard library.
    """
    try:
        body = orjson.dumps(columns, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return _dumps_stdlib(columns).encode()
    # A value orjson wrote as null that is not None can only be a NaN or an infinity: as
    # many nulls as Nones (counts in C) rules them out without a look at each value.
    nulls = body.count(b"null")
    if nulls and nulls != sum(column.count(None) for column in columns) and any(
            isinstance(v, float) and not math.isfinite(v) for column in columns for v in column):
        return _dumps_stdlib(columns).encode()
    return body


#: What the range check finds in a column whose integers are all in range.
_IN_RANGE: Final = object()


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


# --- people's queries: read-only and limited -------------------------------------------

#: Memory one person's query may take (``max_memory_usage``): 1 GiB.
READ_MAX_MEMORY_BYTES = 1 << 30
_TIMEOUT_EXCEEDED = 159
_TOO_MANY_ROWS = (158, 396)  # TOO_MANY_ROWS, TOO_MANY_ROWS_OR_BYTES
_MEMORY_LIMIT_EXCEEDED = 241
_ERROR_CODE = re.compile(r"Code: (\d+)\.")


def _error_code(message: str) -> int | None:
    """The ClickHouse error code a message names (``Code: 53.``), if any."""
    found = _ERROR_CODE.search(message)
    return int(found[1]) if found else None


def _read_settings(timeout_s: float, max_rows: int, max_memory_bytes: int) -> dict[str, Any]:
    """Settings of a person's query.

    ``readonly=1`` also refuses table functions (file, url, ...), writes, and any change
    of these settings from inside the query.
    """
    if not (timeout_s > 0 and max_rows >= 1 and max_memory_bytes >= 1):
        raise ValueError(f"read limits must be positive: timeout_s={timeout_s}, "
                         f"max_rows={max_rows}, max_memory_bytes={max_memory_bytes}")
    return {
        "max_execution_time": timeout_s, "timeout_overflow_mode": "throw",
        # throw: a result cut at max_rows would look complete
        "max_result_rows": max_rows, "result_overflow_mode": "throw",
        "max_memory_usage": max_memory_bytes, "readonly": 1,
    }


@contextmanager
def _read_limits(timeout_s: float, max_rows: int, max_memory_bytes: int) -> Iterator[None]:
    """Say which limit stopped a person's query; running it again will not help."""
    try:
        yield
    except Exception as exc:
        code = getattr(exc, "code", None)
        if not isinstance(code, int):
            code = _error_code(str(exc))
        if code == _TIMEOUT_EXCEEDED:
            raise WarehouseError(
                f"query ran longer than {timeout_s:g} s and was stopped: narrow it (a WHERE "
                "on a time column) or aggregate") from exc
        if code in _TOO_MANY_ROWS:
            raise WarehouseError(
                f"query returns more than {max_rows:,} rows: add LIMIT or aggregate "
                "(GROUP BY)") from exc
        if code == _MEMORY_LIMIT_EXCEEDED:
            raise WarehouseError(
                f"query needs more than {max_memory_bytes / 2**20:,.0f} MiB of memory: "
                "narrow it or aggregate") from exc
        raise


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
    def read(self, sql: str, *, timeout_s: float, max_rows: int,
             max_memory_bytes: int = READ_MAX_MEMORY_BYTES) -> QueryResult:
        """Run a person's SELECT read-only and within limits of time, rows and memory.

        It is stopped past ``timeout_s``, ``max_rows`` rows or ``max_memory_bytes``.
        ``sql`` should have passed :func:`~touchpoint.sinks.query_guard.checked_select`;
        the engine enforces read-only mode and the limits even when it has not. A limit
        reached is a :class:`~touchpoint.exceptions.WarehouseError` saying which, never a
        cut-off answer.
        """

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

#: Errors about the values sent, not the statement or the engine: ClickHouse's own list of
#: parse errors (``isParseError``, ``Formats/ParseError.cpp``) and the type and range
#: errors of an insert. The same rows fail again however often they are sent; the
#: writer stores the rest of their batch and dead-letters them (``sinks/writer.py``).
_CONTENT_CODES = {
    6,  # CANNOT_PARSE_TEXT
    25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
    26,  # CANNOT_PARSE_QUOTED_STRING
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  # CANNOT_PARSE_DATE
    41,  # CANNOT_PARSE_DATETIME
    53,  # TYPE_MISMATCH (clickhouse-driver: a value its column type cannot hold)
    69,  # ARGUMENT_OUT_OF_BOUND (decimals)
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    130,  # CANNOT_READ_ARRAY_FROM_TEXT
    131,  # TOO_LARGE_STRING_SIZE
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    376,  # CANNOT_PARSE_UUID
    407,  # DECIMAL_OVERFLOW
    441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
    467,  # CANNOT_PARSE_BOOL
    563,  # CANNOT_READ_MAP_FROM_TEXT
    632,  # UNEXPECTED_DATA_AFTER_PARSED_VALUE
    675,  # CANNOT_PARSE_IPV4
    676,  # CANNOT_PARSE_IPV6
    691,  # UNKNOWN_ELEMENT_OF_ENUM
}

#: What clickhouse-driver raises, in Python, for a value it cannot serialize as its
#: column's type (``None`` or a number in a String column, a surrogate in a string, ...);
#: out-of-range numbers it reports itself as TYPE_MISMATCH.
_DRIVER_VALUE_ERRORS = (AttributeError, TypeError, ValueError, OverflowError, struct.error)


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
        if code in _CONTENT_CODES:
            raise WarehouseRejected(message, code=code) from exc
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
        self._dt_columns: dict[str, dict[str, Callable[[Any], Any]]] = {}

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

    def read(self, sql: str, *, timeout_s: float, max_rows: int,
             max_memory_bytes: int = READ_MAX_MEMORY_BYTES) -> QueryResult:
        """A person's SELECT, its limits sent as the query's settings.

        As a read-only user (``clickhouse_query_url``) the limits of the user's profile
        hold instead: the server ignores (18.16) or refuses (later versions) a read-only
        user's own settings.
        """
        limits = _read_settings(timeout_s, max_rows, max_memory_bytes)
        # 18.16 truncates to whole seconds: round up rather than stop a query early
        settings: dict[str, Any] | None = {**limits, "max_execution_time": math.ceil(timeout_s)}
        if self._profile_limits is not None:
            timeout_s, max_rows, max_memory_bytes = self._profile_limits
            settings = None
        with self._lock, _server_errors(self.url), \
                _read_limits(timeout_s, max_rows, max_memory_bytes):
            rows, meta = self._client.execute(sql, with_column_types=True, settings=settings)
        return QueryResult(
            tuple(m[0] for m in meta), tuple(m[1] for m in meta), [tuple(r) for r in rows]
        )

    @cached_property
    def _profile_limits(self) -> tuple[float, int, int] | None:
        """Time, rows and memory of a read-only user's profile; ``None`` for a writer."""
        values = dict(self.query(
            "SELECT name, value FROM system.settings WHERE name IN ('readonly', "
            "'max_execution_time', 'max_result_rows', 'max_memory_usage')").rows)
        if values.get("readonly", "0") == "0":
            return None
        return (float(values["max_execution_time"]), int(values["max_result_rows"]),
                int(values["max_memory_usage"]))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               dedup_token: str | None = None) -> None:
        """Columnar insert; date-time columns converted from epoch ms to what the driver sends.

        That is the column's raw integer (``_epoch_seconds``, ``_epoch_millis``), which the
        driver sends as it is, where the driver would have made the same integer from a
        ``datetime``; anything else goes as a ``datetime``, for the driver to convert or
        refuse as before. Making and converting a ``datetime`` per value cost more than
        the rest of the column's encoding.
        """
        if not rows:
            return
        kinds = self._datetime_columns(table)
        data: list[list[Any]] = []
        for i, name in enumerate(columns):
            column = [row[i] for row in rows]
            to_raw = kinds.get(name)
            if to_raw is not None:
                try:
                    column = [to_raw(v) for v in column]
                except (TypeError, ValueError, OverflowError, OSError) as exc:
                    raise WarehouseRejected(
                        f"a value of {name} is not a time in epoch milliseconds: {exc}") from exc
            data.append(column)
        settings: dict[str, Any] = {}
        if dedup_token and self.capabilities.dedup_token:
            settings["insert_deduplication_token"] = dedup_token
        sql = f"INSERT INTO {self.database}.{table} ({', '.join(columns)}) VALUES"
        try:
            with self._lock, _server_errors(self.url):
                self._client.execute(sql, data, columnar=True, settings=settings or None)
        except _DRIVER_VALUE_ERRORS as exc:
            # raised while serializing, before the server saw a row (the driver reconnects)
            raise WarehouseRejected(
                f"a value does not fit its column's type ({type(exc).__name__}: {exc})") from exc

    def _datetime_columns(self, table: str) -> dict[str, Callable[[Any], Any]]:
        """The date-time columns of ``table``, each with its conversion from epoch ms."""
        cached = self._dt_columns.get(table)
        if cached is None:
            result = self.query(
                f"SELECT name, type FROM system.columns WHERE database = '{self.database}' "
                f"AND table = '{table}'"
            )
            cached = {name: _datetime_conversion(kind) for name, kind in result.rows
                      if "DateTime" in kind}
            self._dt_columns[table] = cached
        return cached

    def close(self) -> None:
        """Release the connection."""
        self._client.disconnect()


def _ms_to_datetime(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(value / 1000, tz=UTC)


#: Epoch ms of the first instant ``DateTime`` (UInt32 seconds) cannot hold, in 2106. Up to
#: there a float of seconds keeps every millisecond through the driver's conversion.
_DATETIME_END_MS: Final = 2**32 * 1000


def _epoch_seconds(value: Any) -> Any:
    """Epoch ms to a ``DateTime`` column's raw value (whole seconds), as the driver makes it.

    Only for whole milliseconds in the column's range: for them the driver's
    ``int(datetime.timestamp())`` is the floor of a second. The rest (``None``, floats,
    values the column cannot hold) goes as a ``datetime``, to be converted or refused.
    """
    if type(value) is int and 0 <= value < _DATETIME_END_MS:
        return value // 1000
    return _ms_to_datetime(value)


def _epoch_millis(value: Any) -> Any:
    """Epoch ms to a ``DateTime64(3)`` column's raw value (the same ms), as the driver makes it.

    Only from the epoch to 2106: before it the driver's own conversion is not the ms (it
    truncates the seconds towards zero and adds the millisecond), and later the float of
    seconds it goes through loses milliseconds.
    """
    if type(value) is int and 0 <= value < _DATETIME_END_MS:
        return value
    return _ms_to_datetime(value)


def _datetime_conversion(kind: str) -> Callable[[Any], Any]:
    """How a value in epoch ms goes to the driver for a column of type ``kind``."""
    if "DateTime64(3" in kind:
        return _epoch_millis
    if "DateTime64" in kind:
        return _ms_to_datetime  # another precision: the driver converts
    return _epoch_seconds


# --- embedded, chdb --------------------------------------------------------------------

_CHDB_LOCKED = re.compile(r"Cannot lock file|Another server instance|EmbeddedServer already")

#: Integer column types and the values they hold.
_INT_RANGES = {
    **{f"Int{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
    **{f"UInt{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
}


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
        #: per table, its integer columns: the lowest and highest value each holds
        self._int_ranges: dict[str, dict[str, tuple[int, int]]] = {}
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
            code = _error_code(message)
            if code in _CONTENT_CODES:
                raise WarehouseRejected(message, code=code) from exc
            raise WarehouseError(message) from exc

    def execute(self, sql: str) -> None:
        """Run one statement that returns nothing (DDL)."""
        self._run(sql)

    def use_database(self) -> None:
        """``USE`` our database for the rest of the session."""
        self._run(f"USE {self.database}")

    def query(self, sql: str) -> QueryResult:
        """Run one query and return its rows, typed like clickhouse-driver returns them."""
        return _json_result(self._run(sql, "JSONCompact"))

    def read(self, sql: str, *, timeout_s: float, max_rows: int,
             max_memory_bytes: int = READ_MAX_MEMORY_BYTES) -> QueryResult:
        """A person's SELECT, run as ``SELECT * FROM (<sql>) SETTINGS <limits>``.

        chdb takes per-query settings only from a SETTINGS clause, runs every statement of
        a string, and writes INTO OUTFILE files even read-only. In a subquery ``sql`` can
        only be one SELECT (INTO OUTFILE and FORMAT are syntax errors there) and the clause
        binds all of it, once :func:`~touchpoint.sinks.sql_tokens.enclosed` has made sure
        it cannot close the parentheses. The session's lock is held about ``timeout_s`` at
        most, so inserts wait no longer.
        """
        settings = _read_settings(timeout_s, max_rows, max_memory_bytes)
        enclosed(sql)
        clause = ", ".join(f"{name} = '{value}'" if isinstance(value, str) else
                           f"{name} = {value}" for name, value in settings.items())
        wrapped = f"SELECT * FROM (\n{sql}\n) SETTINGS {clause}"
        with _read_limits(timeout_s, max_rows, max_memory_bytes), self._lock:
            try:
                raw = self._session.query(wrapped, "JSONCompact")
            except Exception as exc:
                # A query stopped by a limit leaves what it had written in the session,
                # and chdb returns that ahead of the next query's output: take it with a
                # query of our own before the lock lets anyone else in.
                with suppress(Exception):
                    self._session.query("SELECT 1", "CSV")
                raise WarehouseError(str(exc).split("Stack trace")[0].strip()) from exc
        return _json_result(raw)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
               dedup_token: str | None = None) -> None:
        """Insert as JSONCompactColumns; date-time columns as epoch seconds text.

        The body is one JSON array a column, made by transposing the rows in C and
        written by one orjson call: per row and value JSON cost more than ClickHouse's
        own insert (18-22 µs an event row as JSONCompactEachRow, 12-13 as columns). A
        time is ``"<seconds>.<millis>"`` (integer seconds for ``DateTime``), which
        ClickHouse reads as a Unix time: about a tenth of the cost of formatting a
        calendar date.
        """
        if not rows:
            return
        kinds = self._datetime_columns(table)
        ranges = self._int_ranges[table]  # filled with kinds
        width = len(columns)
        try:
            data = [list(column) for column in zip(*rows, strict=True)]
        except ValueError:
            data = []  # rows of different lengths: named below
        if len(data) != width:
            uneven = next(row for row in rows if len(row) != width)
            raise WarehouseRejected(f"a row has {len(uneven)} values for {width} columns")
        try:
            for i, name in enumerate(columns):
                found = ranges.get(name)
                if found is not None:
                    # The engine reads an integer beyond its column's range from JSON as
                    # another number (40000 into Int16 as -25536), silently: refuse it, as
                    # the server does.
                    low, high = found
                    bad = next((v for v in data[i] if v is not None and not low <= v <= high),
                               _IN_RANGE)
                    if bad is not _IN_RANGE:
                        raise WarehouseRejected(
                            f"{name} = {bad!r} is out of its column's range ({low} to {high})",
                            code=321)  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
                if name in kinds:
                    to_text = _epoch_text_ms if kinds[name] else _epoch_text_s
                    data[i] = [None if v is None else to_text(v) for v in data[i]]
            body = _json_columns(data)
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            raise WarehouseRejected(f"a value cannot be written as JSON text: {exc}") from exc
        settings = ""
        if dedup_token:
            settings = f" SETTINGS insert_deduplication_token='{_quote(dedup_token)}'"
        sql = (
            f"INSERT INTO {self.database}.{table} ({', '.join(columns)}){settings} "
            "FORMAT JSONCompactColumns\n" + body.decode()
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
            self._int_ranges[table] = {
                name: _INT_RANGES[_bare_type(kind)] for name, kind in result.rows
                if _bare_type(kind) in _INT_RANGES}
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


def _bare_type(kind: str) -> str:
    """``Nullable(Int16)`` -> ``Int16``."""
    return kind[len("Nullable("):-1] if kind.startswith("Nullable(") else kind


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _json_result(raw: Any) -> QueryResult:
    """The JSONCompact output of chdb as rows typed like clickhouse-driver returns them."""
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


def _json_converter(kind: str) -> Any:
    inner = _bare_type(kind)
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
