"""Faust app and agents: ingest, identity, profiles, signals, aggregates."""
