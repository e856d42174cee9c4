"""What the worker's producers compress with: LZ4 at its fast level, still readable."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from aiokafka import codec
from aiokafka.record import _crecords, default_records, legacy_records

from touchpoint.streams.runtime import compression


@pytest.fixture
def restored() -> Iterator[None]:
    """Every module use_fast_lz4 changes, as it was, after the test."""
    modules = (codec, default_records, legacy_records, _crecords.default_records,
               _crecords.legacy_records)
    saved = {module: module.lz4_encode for module in modules}
    yield
    for module, encode in saved.items():
        module.lz4_encode = encode


def test_batches_are_built_at_the_fast_level_and_decode_as_before(restored: None) -> None:
    levels: list[int] = []
    original = compression._level9

    def spy(payload: object, level: int = 9) -> bytes:
        levels.append(level)
        return original(payload, level)

    compression._level9 = spy
    try:
        compression.use_fast_lz4()
        builder = default_records.DefaultRecordBatchBuilder(
            magic=2, compression_type=default_records.DefaultRecordBase.CODEC_LZ4,
            is_transactional=0, producer_id=-1, producer_epoch=-1, base_sequence=-1,
            batch_size=1 << 20)
        values = [json.dumps({"customer_id": f"c{i}", "visits": i}).encode() for i in range(50)]
        for offset, value in enumerate(values):
            builder.append(offset, timestamp=None, key=None, value=value, headers=[])
        built = builder.build()
    finally:
        compression._level9 = original
    assert levels == [compression.FAST_LEVEL]
    batch = default_records.DefaultRecordBatch(bytes(built))
    assert [record.value for record in batch] == values


def test_the_fast_level_decodes_like_level_9() -> None:
    # speed is measured in bench/, not here; level 9 (LZ4 HC) trades it for size
    payload = b"".join(json.dumps({"customer_id": f"crm:C{i:07d}", "spend": i * 1.5,
                                   "segments": ["active", "standard"]}).encode()
                       for i in range(2000))
    fast, hc = compression.fast_lz4_encode(payload), codec.lz4_encode(payload, 9)
    assert codec.lz4_decode(fast) == payload == codec.lz4_decode(hc)
    assert len(hc) < len(fast)  # HC works harder for a smaller result
