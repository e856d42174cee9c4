"""The business rules, with no Faust import.

Complaint signals and their TOML, campaign attribution, per-minute aggregates and text
sentiment: unit-tested without Kafka.
"""
