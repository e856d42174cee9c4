"""The embedded warehouse's insert: every epoch-millisecond time reads back as written."""

from __future__ import annotations

from pathlib import Path

from touchpoint.sinks.clickhouse import connect

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
