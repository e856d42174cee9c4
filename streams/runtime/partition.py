"""Kafka's default key partitioner (murmur2), compiled with the worker's hot modules.

A record with a key goes to the partition Kafka's default partitioner gives it: the Java
client's, aiokafka's ``DefaultPartitioner`` and every stage's outbox agree, so a
customer's records meet in one partition whoever sends them. aiokafka computes murmur2
in Python, about 3 µs a key, once per record the stages send; compiled with mypyc on
64-bit native integers (``docs/design/compiled.md``) it takes about 0.1 µs, and holds
the interpreter throughout, so the outbox needs no memory of keys it has seen.
"""

from __future__ import annotations

from mypy_extensions import i64

__all__ = ["key_partition", "murmur2"]

#: Kafka's murmur2 seed and multiplier (``org.apache.kafka.common.utils.Utils.murmur2``).
_SEED = 0x9747B28C
_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data``: an unsigned 32-bit integer."""
    # Every product is of two numbers below 2**32 and 2**31, so it fits in 63 bits.
    m: i64 = _M
    length: i64 = len(data)
    h: i64 = (_SEED ^ length) & 0xFFFFFFFF
    end: i64 = length & ~3
    i: i64 = 0
    while i < end:
        k: i64 = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
        i += 4
    extra: i64 = length & 3
    if extra >= 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: list[int]) -> int:
    """The partition of ``partitions`` (sorted) Kafka's default partitioner gives ``key``."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
