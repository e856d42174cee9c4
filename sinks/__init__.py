"""Warehouse sinks: the sink contract, ClickHouse backends and migrations."""
