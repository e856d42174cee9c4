"""Avro wire pieces the unit tests write by hand, where no encoder would write them."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` as an Avro int/long is written: zigzag, then base-128 little-endian, any size."""
    zigzag = value * 2 if value >= 0 else -value * 2 - 1
    out = bytearray()
    while True:
        low, zigzag = zigzag & 0x7F, zigzag >> 7
        out.append(low | (0x80 if zigzag else 0))
        if not zigzag:
            return bytes(out)
