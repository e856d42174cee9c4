"""Plans (schemas/binary.py) read and write exactly what fastavro does, or step aside."""

from __future__ import annotations

import io
import math
import random
import re
import struct
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from touchpoint.exceptions import DecodeError, EncodeError
from touchpoint.schemas import HEADER_SIZE, Codec, codec_for, subjects
from touchpoint.schemas import codec as codec_module
from touchpoint.schemas.binary import Unfit, plan_for, read, write
from touchpoint.schemas.registry import default_registry

EDGE_LONGS = (0, 1, -1, 63, 64, -64, -65, 2**31 - 1, -2**31, 2**31, 2**63 - 1, -2**63)
EDGE_TEXT = ("", "a", "é", "客户投诉", "\U0001F600", "x" * 300, "\x00")


def fastavro_bytes(schema: dict[str, Any], value: Any) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, value, disable_tuple_notation=True)
    return out.getvalue()


def fastavro_value(schema: dict[str, Any], body: bytes) -> tuple[Any, int]:
    buf = io.BytesIO(body)
    value = schemaless_reader(buf, schema, None)
    return value, buf.tell()


def without_plan(subject: str) -> Codec:
    """A codec for ``subject`` that does everything with fastavro, as before plans."""
    codec = Codec(subject, registry=default_registry())
    codec._plan = None
    return codec


def random_value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value of a physical schema, with the edges of each type often."""
    if isinstance(schema, list):
        return random_value(rng.choice(schema), rng, depth)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind == "null":
        return None
    if kind == "int":
        return rng.choice((*[v for v in EDGE_LONGS if -2**31 <= v < 2**31],
                           rng.randint(-2**31, 2**31 - 1)))
    if kind == "long":
        return rng.choice((*EDGE_LONGS, rng.randint(-2**63, 2**63 - 1)))
    if kind == "double":
        return rng.choice((0.0, -0.0, 1.5, math.inf, -math.inf, 1e308, 5e-324,
                           rng.uniform(-1e6, 1e6)))
    if kind == "string":
        return rng.choice((*EDGE_TEXT, "".join(chr(rng.randint(32, 0x2FFF))
                                               for _ in range(rng.randint(0, 20)))))
    if kind == "bytes":
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 20)))
    if kind == "record":
        return {field["name"]: random_value(field["type"], rng, depth + 1)
                for field in schema["fields"]}
    if kind == "array":
        return [random_value(schema["items"], rng, depth + 1)
                for _ in range(rng.randint(0, 3 if depth < 3 else 0))]
    if kind == "map":
        return {rng.choice(EDGE_TEXT) + str(i): random_value(schema["values"], rng, depth + 1)
                for i in range(rng.randint(0, 3 if depth < 3 else 0))}
    raise AssertionError(kind)


@pytest.mark.parametrize("subject", subjects())
def test_every_shipped_schema_has_a_plan(subject: str) -> None:
    assert codec_for(subject)._plan is not None


@pytest.mark.parametrize("subject", subjects())
def test_random_records_read_and_write_as_fastavro_does(subject: str) -> None:
    schema = codec_for(subject)._schema
    plan = plan_for(schema)
    assert plan is not None
    rng = random.Random(subject)
    for _ in range(300):
        record = random_value(schema, rng)
        body = fastavro_bytes(schema, record)
        assert write(plan, record) == body
        value, end = read(plan, body + b"tail", 0)
        expected, expected_end = fastavro_value(schema, body + b"tail")
        assert (value, end) == (expected, expected_end) == (value, len(body))
        assert list(value) == list(expected)  # the fields in the schema's order


@pytest.mark.parametrize("subject", subjects())
def test_the_codec_gives_what_fastavro_alone_gives(subject: str) -> None:
    codec, before = codec_for(subject), without_plan(subject)
    rng = random.Random(f"codec {subject}")
    for _ in range(100):
        record = random_value(codec._schema, rng)
        data = before.encode(record, check=False)
        assert codec.encode(record, check=False) == data
        assert codec.decode(data) == before.decode(data)


def bits(value: Any) -> Any:
    """``value`` with every float as its bytes, so that a NaN equals itself."""
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, dict):
        return [(key, bits(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [bits(item) for item in value]
    return value


def outcome(call: Any) -> Any:
    try:
        return "ok", bits(call())
    except (DecodeError, EncodeError) as exc:
        # fastavro's messages may name its reader object by address, which varies
        message = re.sub(r" at 0x[0-9a-f]+", " at 0x...", str(exc))
        return type(exc).__name__, message, getattr(exc, "code", None)


@pytest.mark.parametrize("subject", ["web", "event", "profile", "complaint_signal"])
def test_corrupt_bodies_get_what_fastavro_alone_gives(subject: str) -> None:
    # Cut short anywhere, bytes flipped, bytes added: the same record or the same error.
    codec, before = codec_for(subject), without_plan(subject)
    rng = random.Random(f"corrupt {subject}")
    for _ in range(40):
        data = before.encode(random_value(codec._schema, rng), check=False)
        damaged = [data[:cut] for cut in range(HEADER_SIZE, len(data))]
        for _ in range(20):
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                flipped[rng.randrange(HEADER_SIZE, len(data))] = rng.randint(0, 255)
            damaged.append(bytes(flipped))
        damaged += [data + b"\x00", data + bytes([0x80] * 11) + b"\x01"]
        for value in damaged:
            assert outcome(lambda v=value: codec.decode(v)) == \
                outcome(lambda v=value: before.decode(v))


def test_a_varint_wider_than_64_bits_is_refused_as_before() -> None:
    plan = plan_for("long")
    assert plan is not None
    eleven = bytes([0xFF] * 10 + [0x01])
    with pytest.raises(Unfit):
        read(plan, eleven, 0)
    ten_too_wide = bytes([0xFF] * 9 + [0x7F])  # ten bytes, 70 bits
    with pytest.raises(Unfit):
        read(plan, ten_too_wide, 0)
    assert read(plan, bytes([0xFE] + [0xFF] * 8 + [0x01]), 0) == (2**63 - 1, 10)
    assert read(plan, bytes([0xFF] * 9 + [0x01]), 0) == (-2**63, 10)


def test_a_block_count_beyond_the_bytes_left_is_refused_at_once() -> None:
    # 2**60 items announced, none there: refused before any item is read, so a huge count
    # can neither stall a worker nor fill its memory.
    plan = plan_for({"type": "array", "items": "long"})
    assert plan is not None
    count = 2**60
    zigzag = count << 1
    varint = bytearray()
    while zigzag >= 0x80:
        varint.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    varint.append(zigzag)
    with pytest.raises(Unfit, match="more items than bytes"):
        read(plan, bytes(varint) + b"\x02\x04", 0)


def test_negative_block_counts_with_sizes_read_as_fastavro_reads_them() -> None:
    schema = parse_schema({"type": "map", "values": "long"})
    plan = plan_for(schema)
    assert plan is not None
    # a block of -2 items (4 = its byte size), then a block of 1, then the end
    body = b"\x03\x08" + b"\x02a\x02" + b"\x02b\x04" + b"\x02" + b"\x02c\x06" + b"\x00"
    assert read(plan, body, 0) == fastavro_value(schema, body) == \
        ({"a": 1, "b": 2, "c": 3}, len(body))


@pytest.mark.parametrize("schema", [
    "boolean", "float", {"type": "enum", "name": "E", "symbols": ["A"]},
    {"type": "fixed", "name": "F", "size": 2}, {"type": "array", "items": "null"},
    ["null", "int", "long"], ["null", {"type": "map", "values": "long"},
                              {"type": "record", "name": "R", "fields": []}],
    {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
])
def test_schemas_with_what_plans_do_not_cover_get_none(schema: Any) -> None:
    assert plan_for(parse_schema(schema) if not isinstance(schema, str) else schema) is None


@pytest.mark.parametrize(("schema", "value"), [
    ("long", True),             # a bool is an int to Python; fastavro's rules decide
    ("long", 1.0),
    ("long", 2**63),
    ("int", 2**31),
    ("double", "1.5"),
    ("double", 2**1100),         # too large for a float
    ("string", b"bytes"),
    ("string", "\ud800"),       # a lone surrogate has no UTF-8
    ("bytes", bytearray(b"x")),
    ({"type": "array", "items": "long"}, (1, 2)),
    ({"type": "map", "values": "long"}, {1: 2}),
    ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}, {}),
    ({"type": "record", "name": "R", "fields": [{"name": "a", "type": ["null", "long"]}]},
     {"b": 1}),
    (["null", "string"], 5),
])
def test_values_of_other_python_types_are_left_to_fastavro(schema: Any, value: Any) -> None:
    plan = plan_for(parse_schema(schema) if not isinstance(schema, str) else schema)
    assert plan is not None
    with pytest.raises((Unfit, OverflowError)):
        write(plan, value)


@pytest.mark.parametrize(("schema", "value"), [
    (["null", "long", "double"], 3),      # the first branch that takes an int
    (["null", "double", "long"], 3),      # fastavro writes it as a double here
    (["null", "int", "double"], 2**40),   # too wide for the int branch
    (["null", "double"], 7),
    ("double", 7),                        # a record field's double is float(value)
    ({"type": "map", "values": ["null", "string"]}, {"k": None, "l": "v"}),
])
def test_unions_pick_the_branch_fastavro_picks(schema: Any, value: Any) -> None:
    parsed = parse_schema(schema) if not isinstance(schema, str) else schema
    plan = plan_for(parsed)
    assert plan is not None
    assert write(plan, value) == fastavro_bytes(parsed, value)


def test_encode_falls_back_to_fastavro_for_other_types_and_still_refuses_the_unwritable(
) -> None:
    codec, before = codec_for("profile"), without_plan("profile")
    record = random_value(codec._schema, random.Random(1))
    record["orders"] = True  # a bool for an int: fastavro writes 1
    assert codec.encode(record, check=False) == before.encode(record, check=False)
    record["orders"] = "many"
    with pytest.raises(EncodeError) as raised:
        codec.encode(record, check=False)
    with pytest.raises(EncodeError) as raised_before:
        before.encode(record, check=False)
    assert str(raised.value) == str(raised_before.value)


def test_doubles_keep_their_bits() -> None:
    plan = plan_for("double")
    assert plan is not None
    nan = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
    for value in (nan, -0.0, 5e-324, math.inf):
        body = write(plan, value)
        assert body == fastavro_bytes("double", value) == struct.pack("<d", value)
        back, _ = read(plan, body, 0)
        assert struct.pack("<d", back) == body


@pytest.mark.parametrize("subject", ["web", "event", "profile"])
def test_the_codec_reads_and_writes_its_own_records_without_fastavro(
        subject: str, monkeypatch: pytest.MonkeyPatch) -> None:
    codec = codec_for(subject)
    record = random_value(codec._schema, random.Random(f"own {subject}"))
    data = without_plan(subject).encode(record, check=False)

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("fastavro was called")

    monkeypatch.setattr(codec_module, "schemaless_reader", refused)
    monkeypatch.setattr(codec_module, "schemaless_writer", refused)
    assert codec.encode(record, check=False) == data
    assert codec.decode(data) == record
