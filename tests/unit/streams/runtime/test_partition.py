"""Kafka's key partitioner: the Java client's murmur2, and aiokafka's partitions."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from touchpoint.streams.runtime.partition import key_partition, murmur2


@pytest.mark.parametrize(("key", "signed"), [
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (bytes([ord("a"), ord("b"), ord("c")]), 479470107),
])
def test_murmur2_is_the_java_clients(key: bytes, signed: int) -> None:
    assert murmur2(key) == signed & 0xFFFFFFFF


def test_every_key_goes_where_aiokafka_sends_it() -> None:
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    # every remainder of the length by 4, bytes with the high bit set, the empty key
    keys = [b""] + [rng.randbytes(rng.randrange(1, 64)) for _ in range(5_000)]
    keys += [b"\xff" * n for n in range(9)] + ["客户-42".encode(), b"u-0f3a9c"]
    for key in keys:
        assert murmur2(key) == aiokafka_murmur2(bytearray(key)), key
        for count in (1, 2, 3, 6, 12):
            partitions = list(range(count))
            assert key_partition(key, partitions) == partitioner(key, partitions, partitions)


def test_the_partition_is_one_of_those_given() -> None:
    assert {key_partition(str(n).encode(), [3, 5, 9]) for n in range(200)} == {3, 5, 9}
