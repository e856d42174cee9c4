"""Date-time values for the server go as the raw integers the driver would make of them."""

from __future__ import annotations

import random
from typing import Any

import pytest
from clickhouse_driver.columns.service import get_column_by_spec
from clickhouse_driver.context import Context

from touchpoint.sinks.clickhouse import _datetime_conversion, _ms_to_datetime

# Edges of both fast paths and of what a datetime can hold, on both sides.
EDGES = [0, 1, 999, 1000, 1001, 1_795_000_000_000, 1_795_000_000_999, 2**32 * 1000 - 1,
         2**32 * 1000, 2**32 * 1000 + 1, 253_402_300_799_999, -1, -999, -1000, -1001,
         -62_135_596_800_000, 1_795_000_000_000.5, 999.9999, True, None]


def _column(spec: str) -> Any:
    context = Context()
    context.settings = {}
    context.client_settings = {"strings_as_bytes": False, "strings_encoding": "utf-8",
                               "use_numpy": False}
    return get_column_by_spec(spec, {"context": context})


def _sent(spec: str, values: list[Any]) -> list[Any]:
    """What the driver writes for ``values`` in a column of type ``spec``."""
    column, items = _column(spec), list(values)
    nulls = [v is None for v in items] if spec.startswith("Nullable") else None
    column = getattr(column, "nested_column", column)
    column.before_write_items(items, nulls_map=nulls)
    return items


@pytest.mark.parametrize("spec", ["DateTime('UTC')", "DateTime64(3, 'UTC')",
                                  "DateTime64(6, 'UTC')", "Nullable(DateTime('UTC'))",
                                  "Nullable(DateTime64(3, 'UTC'))"])
def test_the_driver_writes_what_it_wrote_for_datetimes(spec: str) -> None:
    rng = random.Random(3)
    values = [v for v in EDGES if v is not None or spec.startswith("Nullable")]
    values += [rng.randrange(0, 2**32 * 1000) for _ in range(2000)]
    values += [rng.randrange(2**32 * 1000, 253_402_300_799_999) for _ in range(200)]
    convert = _datetime_conversion(spec)
    assert _sent(spec, [convert(v) for v in values]) == \
        _sent(spec, [_ms_to_datetime(v) for v in values])


def test_whole_milliseconds_in_range_go_as_integers() -> None:
    # The point of the conversion: no datetime made for the common case.
    assert _datetime_conversion("DateTime('UTC')")(1_795_000_000_999) == 1_795_000_000
    assert _datetime_conversion("DateTime64(3, 'UTC')")(1_795_000_000_999) == 1_795_000_000_999
    assert _datetime_conversion("DateTime('UTC')")(2**32 * 1000).year == 2106
    assert _datetime_conversion("DateTime('UTC')")(None) is None
