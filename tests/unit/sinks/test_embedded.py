"""The embedded warehouse's insert: every epoch-millisecond time reads back as written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from touchpoint.sinks.clickhouse import WarehouseRejected, _json_columns, connect

#: Around the edges of the Unix-time text form (ten-digit seconds) and on both sides of it.
TIMES_MS = [-1_500, 0, 5, 999_999_999_999, 1_000_000_000_000, 1_700_000_000_123,
            1_767_225_599_999, 9_999_999_999_999, 10_000_000_000_000]
DATETIME_END_MS = 2**32 * 1000


def test_times_read_back_exactly_in_datetime64_and_as_whole_seconds_in_datetime(
        tmp_path: Path) -> None:
    # DateTime holds no time before 1970 (it clamps to 0), none past 2106, no milliseconds
    whole = [ms if ms < DATETIME_END_MS else None for ms in TIMES_MS]
    with connect(f"chdb://{tmp_path}?database=edges") as warehouse:
        warehouse.execute("CREATE DATABASE IF NOT EXISTS edges")
        warehouse.execute(
            "CREATE TABLE edges.times (id Int64, precise DateTime64(3, 'UTC'), "
            "whole Nullable(DateTime('UTC')), maybe Nullable(DateTime64(3, 'UTC')), "
            "note String) ENGINE = MergeTree ORDER BY id")
        rows = [(i, ms, whole[i], None if i % 2 else ms, 'quote " and 中文')
                for i, ms in enumerate(TIMES_MS)]
        warehouse.insert("times", ["id", "precise", "whole", "maybe", "note"], rows)
        result = warehouse.query(
            "SELECT id, toUnixTimestamp64Milli(precise), toUnixTimestamp(whole), "
            "toUnixTimestamp64Milli(maybe), note FROM edges.times ORDER BY id")
    assert result.rows == [
        (i, ms, None if whole[i] is None else max(ms, 0) // 1000, None if i % 2 else ms,
         'quote " and 中文')
        for i, ms in enumerate(TIMES_MS)
    ]


def test_values_json_writes_differently_read_back_as_the_standard_library_wrote_them(
        tmp_path: Path) -> None:
    # orjson writes these unlike json (or not at all): the insert must not change them
    values = [(0, 2**64 - 1, float("nan"), {"k": 1.5}, "\U0001f600 中文 \\ \n"),
              (1, 0, float("inf"), {}, ""),
              (2, 7, -0.25, {"a": -1.0, "b": 2.0}, "\u2028")]
    with connect(f"chdb://{tmp_path}?database=edges") as warehouse:
        warehouse.execute("CREATE DATABASE IF NOT EXISTS edges")
        warehouse.execute(
            "CREATE TABLE edges.values (id Int64, big UInt64, x Float64, "
            "m Map(String, Float64), s String) ENGINE = MergeTree ORDER BY id")
        warehouse.insert("values", ["id", "big", "x", "m", "s"], values)
        result = warehouse.query(
            "SELECT id, big, toString(x), m, s FROM edges.values ORDER BY id")
    assert result.rows == [(0, 2**64 - 1, "nan", {"k": 1.5}, "\U0001f600 中文 \\ \n"),
                           (1, 0, "inf", {}, ""),
                           (2, 7, "-0.25", {"a": -1.0, "b": 2.0}, "\u2028")]


def test_a_non_finite_float_is_written_as_the_standard_library_writes_it_beside_nulls() -> None:
    # orjson writes NaN and infinities as null; the body then goes through json, whatever
    # else in it is null or reads "null"
    odd: list[list[list[Any]]] = [
        [[None, float("nan")]], [["null"], [float("inf")]], [[{"k": None}], [-math.inf]],
        [[None, "null"], [float("nan"), {"k": None}]]]
    for columns in odd:
        body = _json_columns(columns)
        assert body == json.dumps(columns, ensure_ascii=False).encode(), columns
        assert b"NaN" in body or b"Infinity" in body
    plain: list[list[list[Any]]] = [[[None, "null"]], [[{"k": None}], [1.5]],
                                    [[None, None], ["x", None]]]
    for columns in plain:
        assert _json_columns(columns) == orjson.dumps(columns), columns


def test_rows_go_in_as_columns_in_order_and_a_bad_one_is_refused_whole(tmp_path: Path) -> None:
    with connect(f"chdb://{tmp_path}?database=edges") as warehouse:
        warehouse.execute("CREATE DATABASE IF NOT EXISTS edges")
        warehouse.execute(
            "CREATE TABLE edges.small (id Int64, n Nullable(Int16), at DateTime64(3), "
            "tags Array(String)) ENGINE = MergeTree ORDER BY id")
        columns = ["id", "n", "at", "tags"]
        rows = [(i, None if i % 3 else i - 5, 1_700_000_000_000 + i, [f"t{i}"] * (i % 2))
                for i in range(7)]
        warehouse.insert("small", columns, rows)
        for bad, reason in (([(9, 40_000, 1, [])], "n = 40000 is out of its column's range "
                                                   "(-32768 to 32767)"),
                            ([(9, 1, 1)], "a row has 3 values for 4 columns")):
            with pytest.raises(WarehouseRejected) as caught:
                warehouse.insert("small", columns, rows[:2] + bad)
            assert str(caught.value) == reason
        with pytest.raises(WarehouseRejected) as caught:  # every row one value short
            warehouse.insert("small", columns, [row[:3] for row in rows])
        assert str(caught.value) == "a row has 3 values for 4 columns"
        back = warehouse.query("SELECT id, n, toUnixTimestamp64Milli(at), tags FROM edges.small "
                               "ORDER BY id")
    assert back.rows == [(i, n, at, tags) for i, n, at, tags in rows]
