"""The table-name constants against the migrations that create the tables."""

from __future__ import annotations

import inspect
import re

from touchpoint.sinks import migrate, tables
from touchpoint.sinks.query_guard import INTERNAL, QUERYABLE

_CREATED = re.compile(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS \{db\}\.(\w+)")


def _constants() -> dict[str, str]:
    return {name: value for name, value in vars(tables).items()
            if name.isupper() and isinstance(value, str)}


def _created_by_migrations() -> list[str]:
    # touchpoint_events is dropped and created again by 0003 (it then reads the aliases)
    return [name for m in migrate.migrations() for name in _CREATED.findall(m.sql)]


def test_each_table_and_view_the_migrations_create_has_one_constant() -> None:
    created = set(_created_by_migrations())
    assert created == tables.MIGRATED
    values = sorted(_constants().values())
    assert values == sorted(created | {tables.SCHEMA_MIGRATIONS})  # each named once
    assert len(created) == 22


def test_the_constants_are_exported_and_spelled_as_their_names() -> None:
    constants = _constants()
    assert sorted(tables.__all__) == sorted([*constants, "MIGRATED"])
    assert constants["EVENTS_RAW"] == "touchpoint_events_raw"
    assert constants["EVENTS"] == "touchpoint_events"
    for name, value in constants.items():
        if name not in ("EVENTS", "EVENTS_RAW"):
            assert value == name.lower()


def test_the_bookkeeping_table_is_created_by_migrate() -> None:
    assert _CREATED.findall(inspect.getsource(migrate.migrate)) == [tables.SCHEMA_MIGRATIONS]


def test_the_query_guard_s_lists_are_the_constants() -> None:
    assert QUERYABLE == tables.MIGRATED
    assert sorted(INTERNAL) == [tables.SCHEMA_MIGRATIONS]
