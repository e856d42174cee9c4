"""The business rules, with no Faust import.

Per event: normalization into the contract's event (``normalize``), the identity graph
(``identity``), profile arithmetic and segments (``profile``, ``segments``), complaint
signals and their TOML (``complaints``, ``signals``), text sentiment, campaign
attribution (``attribution``, ``campaigns``), per-minute aggregates (``aggregates``,
``minute_rows``) and the warehouse rows (``rows``). Unit-tested without Kafka.
"""
