"""The embedded warehouse's insert: every epoch-millisecond time reads back as written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import orjson

from touchpoint.sinks.clickhouse import _json_row, connect

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
    # orjson writes NaN and infinities as null; the row then goes through json, whatever
    # else in it is null or reads "null"
    for values in ([None, float("nan")], ["null", float("inf")], [{"k": None}, -math.inf],
                   [None, "null", float("nan"), {"k": None}]):
        line = _json_row(values)
        assert line == json.dumps(values, ensure_ascii=False).encode(), values
        assert b"NaN" in line or b"Infinity" in line
    for values in ([None, "null"], [{"k": None}, 1.5], [None, None, "x"]):
        assert _json_row(values) == orjson.dumps(values), values
