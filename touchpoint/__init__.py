"""Touchpoint: a real-time customer touchpoint pipeline (Kafka, Faust, ClickHouse)."""

__version__ = "0.1.0"
