"""The outbox: records delivered before a batch is acknowledged, and counted by the sensors."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest

from touchpoint.streams.outbox import Outbox


class _Producer:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.fail_on = fail_on
        self.sent: list[tuple[str, bytes | None, bytes | None, Any]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *,
                   partition: Any, timestamp: Any, headers: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value, headers))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if value == self.fail_on:
            future.set_exception(RuntimeError("broker said no"))
        else:
            future.set_result(mock.Mock(topic=topic))
        return future


def _app(producer: _Producer) -> Any:
    app = mock.Mock()
    app.producer = producer
    return app


def test_every_record_is_delivered_and_reported_to_the_sensors() -> None:
    producer = _Producer()
    app = _app(producer)
    outbox = Outbox(app)

    async def run() -> int:
        await outbox.send("t.a", b"k1", b"v1")
        await outbox.send("t.b", b"k2", b"v2", [("h", b"x")])
        return await outbox.delivered()

    assert asyncio.run(run()) == 2
    assert producer.sent == [("t.a", b"k1", b"v1", None), ("t.b", b"k2", b"v2", [("h", b"x")])]
    assert [c.args[1] for c in app.sensors.on_send_initiated.call_args_list] == ["t.a", "t.b"]
    assert [c.args[2].topic for c in app.sensors.on_send_completed.call_args_list] == \
        ["t.a", "t.b"]
    assert asyncio.run(outbox.delivered()) == 0  # nothing new since


def test_a_failed_delivery_raises_after_reporting_it() -> None:
    producer = _Producer(fail_on=b"bad")
    app = _app(producer)
    outbox = Outbox(app)

    async def run() -> int:
        await outbox.send("t", None, b"good")
        await outbox.send("t", None, b"bad")
        return await outbox.delivered()

    with pytest.raises(RuntimeError, match="broker said no"):
        asyncio.run(run())
    assert app.sensors.on_send_completed.call_count == 1
    assert app.sensors.on_send_error.call_count == 1
