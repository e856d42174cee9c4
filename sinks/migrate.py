"""Versioned warehouse migrations, applied in order at start; safe to run again.

Each migration is a numbered SQL file in ``sinks/migrations/``. Placeholders adapt the
DDL to what the engine can do (see :class:`~touchpoint.sinks.clickhouse.Capabilities`),
so ClickHouse 18.16 and a current engine get the same tables, each with the best types
it has. Every statement is idempotent (``IF NOT EXISTS``) and applied versions are
recorded in ``schema_migrations``; two workers migrating at once do no harm.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from importlib import resources

from touchpoint.sinks.clickhouse import Capabilities, Warehouse
from touchpoint.sinks.tables import SCHEMA_MIGRATIONS
from touchpoint.sinks.views import VIEW_SQL

__all__ = ["DEADLETTER_RETENTION_DAYS", "Migration", "applied", "migrate", "migrations"]

log = logging.getLogger(__name__)

DEADLETTER_RETENTION_DAYS = 90
_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    def statements(self, database: str, caps: Capabilities) -> list[str]:
        """The file's statements with placeholders filled for this engine."""
        datetime = "DateTime64(3, 'UTC')" if caps.datetime64 else "DateTime('UTC')"
        values = {
            "db": database,
            "datetime": datetime,
            "dedup_window": (
                ", non_replicated_deduplication_window = 1000" if caps.dedup_token else ""
            ),
            "channel_counts": "Map(String, UInt64)" if caps.map_type else "String",
            "ttl_deadletter": (
                f"TTL toDateTime(rejected_at) + INTERVAL {DEADLETTER_RETENTION_DAYS} DAY"
                if caps.ttl else ""
            ),
            # views whose SQL a report runs too (sinks/views.py)
            **{name: build(database) for name, build in VIEW_SQL.items()},
        }
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip().format(**values) for s in body.split(";") if s.strip()]


def migrations() -> list[Migration]:
    """All migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("touchpoint.sinks.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


def applied(warehouse: Warehouse) -> set[int]:
    """Versions already applied to the warehouse's database."""
    db = warehouse.database
    exists = warehouse.query(
        f"SELECT count() FROM system.tables WHERE database = '{db}' "
        "AND name = 'schema_migrations'"
    ).scalar()
    if not exists:
        return set()
    result = warehouse.query(f"SELECT DISTINCT version FROM {db}.schema_migrations")
    return {int(row[0]) for row in result.rows}


def migrate(warehouse: Warehouse) -> list[Migration]:
    """Create the database and apply every migration not yet applied; return those applied."""
    db = warehouse.database
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", db):
        raise ValueError(f"database name {db!r} must be letters, digits and underscores")
    caps = warehouse.capabilities
    warehouse.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    warehouse.execute(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, applied_at DateTime) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = applied(warehouse)
    newly = []
    for migration in migrations():
        if migration.version in done:
            continue
        log.info("applying migration %04d_%s to %s", migration.version, migration.name, db)
        for statement in migration.statements(db, caps):
            warehouse.execute(statement)
        warehouse.insert(
            SCHEMA_MIGRATIONS, ("version", "name", "applied_at"),
            [(migration.version, migration.name, int(time.time() * 1000))],
        )
        newly.append(migration)
    return newly
