"""Touchpoint: a real-time customer touchpoint pipeline (Kafka, Faust, ClickHouse)."""

from pathlib import Path

from touchpoint import compiled

__version__ = "0.1.0"

# before any compiled module is imported: an extension older than its source never runs
compiled.install(Path(__file__).parent)
