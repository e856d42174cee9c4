"""The collector's Prometheus metrics: events accepted, refused by reason, request latency.

With ``--workers`` above one, every process writes its figures to a shared folder
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by
``touchpoint collect`` before the processes start) and ``/metrics`` of any process
answers for all of them: a load balancer sends each scrape to one process at random.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS", "MULTIPROCESS_ENV", "CollectorMetrics"]

#: Seconds from a request's arrival to its answer (Kafka's acknowledgement included).
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0)
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class CollectorMetrics:
    """The figures one collector process keeps, and their exposition."""

    def __init__(self) -> None:
        shared = bool(os.environ.get(MULTIPROCESS_ENV))
        # multiprocess: the values live in files; the registry that serves them reads those
        own = None if shared else CollectorRegistry()
        self.accepted = Counter("touchpoint_collect_events_accepted",
                                "Events the collector accepted, acknowledged by Kafka.",
                                ["channel"], registry=own)
        self.refused = Counter("touchpoint_collect_events_refused",
                               "Events the collector refused, by reason code.",
                               ["code"], registry=own)
        self.requests = Counter("touchpoint_collect_requests",
                                "Requests to POST /v1/events, by HTTP status.",
                                ["status"], registry=own)
        self.latency = Histogram("touchpoint_collect_request_seconds",
                                 "Time to answer POST /v1/events, Kafka's ack included.",
                                 buckets=LATENCY_BUCKETS, registry=own)
        if own is None:
            from prometheus_client import multiprocess

            own = CollectorRegistry()
            multiprocess.MultiProcessCollector(own)
        self._registry = own

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self._registry)
