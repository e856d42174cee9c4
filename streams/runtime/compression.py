"""LZ4 at its fast level for everything the worker produces (aiokafka compresses at level 9).

aiokafka 0.11 moved LZ4 from python-lz4 (level 0) to cramjam and set level 9, LZ4's
high-compression mode, with no setting to change it
(`aio-libs/aiokafka#1028 <https://github.com/aio-libs/aiokafka/issues/1028>`_, fix
proposed in `#1121 <https://github.com/aio-libs/aiokafka/pull/1121>`_). On a batch of
profile JSON that level compresses about 95 MB/s, level 1 about 1,300 MB/s for about a
fifth more bytes; level 9 was 5 % of a worker's CPU. :func:`use_fast_lz4` points the
record builders (the compiled one and the pure-Python one) at level 1. Consumers are
unaffected: LZ4 frames decode the same whatever the level.
"""

from __future__ import annotations

from typing import Any

from aiokafka import codec

__all__ = ["FAST_LEVEL", "fast_lz4_encode", "use_fast_lz4"]

#: LZ4's fast mode (levels below 3 are the same fast compressor).
FAST_LEVEL = 1
_level9 = codec.lz4_encode


def fast_lz4_encode(payload: Any, level: int = FAST_LEVEL) -> bytes:
    """Aiokafka's LZ4 encoder with the fast level as its default."""
    return _level9(payload, level)


def use_fast_lz4() -> None:
    """Make aiokafka's producers in this process compress LZ4 at :data:`FAST_LEVEL`."""
    from aiokafka.record import default_records, legacy_records

    modules: list[Any] = [codec, default_records, legacy_records]
    try:
        from aiokafka.record._crecords import default_records as c_default
        from aiokafka.record._crecords import legacy_records as c_legacy
    except ImportError:  # no compiled extensions (AIOKAFKA_NO_EXTENSIONS)
        pass
    else:
        modules += [c_default, c_legacy]
    for module in modules:
        if hasattr(module, "lz4_encode"):
            module.lz4_encode = fast_lz4_encode
