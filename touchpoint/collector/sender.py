"""The collector's way into Kafka: send a request's accepted events, wait for ``acks=all``.

One aiokafka producer per collector process, idempotent (``acks=all``, and the broker
drops the producer's own retried duplicates). :meth:`KafkaSender.send` returns only when
Kafka has acknowledged every record of the request, or raises
:class:`~touchpoint.exceptions.KafkaUnavailable`, which the app answers with 503 and
``Retry-After``: a request answered 2xx lost nothing, and one answered 503 may be sent
again whole (docs/design/collector.md, "Retries").

The producer starts in the background and keeps trying while Kafka cannot be reached,
so a collector started before its broker serves 503 until the broker is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from touchpoint.collector.batch import Record
from touchpoint.exceptions import KafkaUnavailable

__all__ = ["ACK_TIMEOUT_SECONDS", "RETRY_AFTER_SECONDS", "KafkaSender"]

log = logging.getLogger(__name__)

#: Longest a request waits for Kafka's acknowledgement before it is answered 503.
ACK_TIMEOUT_SECONDS: Final = 10.0
#: What a 503 tells the client to wait before sending again.
RETRY_AFTER_SECONDS: Final = 5
_START_RETRY_SECONDS: Final = 2.0
_READY_CACHE_SECONDS: Final = 1.0


class KafkaSender:
    """Sends records to Kafka and waits for all of them to be acknowledged."""

    def __init__(self, *, bootstrap_servers: Sequence[str], topics: Iterable[str],
                 producer_config: dict[str, Any] | None = None, producer: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Connect to ``bootstrap_servers`` once started; ``producer``: a started one to use."""
        self._clock = clock
        self._servers = list(bootstrap_servers)
        self._topics = tuple(topics)
        self._config: dict[str, Any] = {
            "acks": "all", "enable_idempotence": True,
            # a few ms of batching: concurrent requests share produce requests
            "linger_ms": 5, "max_batch_size": 256 * 1024, "compression_type": "lz4",
            # expire a batch the broker cannot take well within ACK_TIMEOUT_SECONDS
            "request_timeout_ms": int(ACK_TIMEOUT_SECONDS * 1000 * 0.8),
            **(producer_config or {}),
        }
        self._producer: Any = producer
        self._starting: asyncio.Task[None] | None = None
        self._ready_at = float("-inf")
        self._ready = False
        self._failed = False  # the last send failed: until Kafka answers, fail at once

    async def start(self) -> None:
        """Begin connecting (in the background, retried until Kafka answers)."""
        if self._producer is not None:
            return
        self._starting = asyncio.create_task(self._connect(), name="collector-kafka-start")

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        from touchpoint.streams.runtime.compression import use_fast_lz4

        use_fast_lz4()  # as the worker's producers: aiokafka's own LZ4 level costs CPU
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=self._servers, **self._config)
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                log.warning("Kafka at %s not reachable yet (%s); retrying",
                            ",".join(self._servers), exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(_START_RETRY_SECONDS)
                continue
            self._producer = producer
            log.info("collector connected to Kafka at %s", ",".join(self._servers))
            return

    @property
    def connected(self) -> bool:
        """Whether the producer has started (Kafka answered once)."""
        return self._producer is not None

    async def stop(self) -> None:
        """Send what is buffered and close."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records``; return once Kafka acknowledged every one, or raise."""
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("Kafka is not reachable yet")
        # After a failure, ask the cluster (at most once a second) before waiting on it
        # again: during an outage every request would otherwise hold its connection for
        # ACK_TIMEOUT_SECONDS before its 503.
        if self._failed and not await self.ready():
            raise KafkaUnavailable("Kafka is still not reachable")
        from aiokafka.errors import KafkaError

        try:
            async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                pending = [await producer.send(r.topic, r.value, key=r.key or None)
                           for r in records]
                await asyncio.gather(*pending)
        except (KafkaError, TimeoutError) as exc:
            self._failed = True
            raise KafkaUnavailable(f"Kafka did not acknowledge the events: {exc!r}") from exc
        self._failed = False

    async def ready(self) -> bool:
        """Whether Kafka answers and knows every channel topic (asked at most once a second)."""
        producer = self._producer
        if producer is None:
            return False
        now = self._clock()
        if now - self._ready_at < _READY_CACHE_SECONDS:
            return self._ready
        self._ready_at = now
        try:
            async with asyncio.timeout(2.0):
                updated = await producer.client.force_metadata_update()
            topics = producer.client.cluster.topics()
            self._ready = bool(updated) and all(t in topics for t in self._topics)
        except Exception:  # not ready, whatever the cause; /ready says so
            self._ready = False
        return self._ready
