"""Single-object encoding: round trips, byte layout, decode failures as reasons, loud encodes."""

from __future__ import annotations

import io
import json
import random
import re
import struct
from datetime import UTC, datetime
from typing import Any

import avro.io
import avro.schema
import pytest

from touchpoint.exceptions import DecodeError, EncodeError, SchemaError
from touchpoint.schemas import HEADER_SIZE, MARKER, PACKED_MARKER, Codec, codec_for, subjects
from touchpoint.schemas import codec as codec_module
from touchpoint.schemas.codec import subject_of
from touchpoint.schemas.registry import default_registry, physical_schema

ALL_SUBJECTS = (
    "absorb", "callcenter", "campaign", "complaint_signal", "deadletter", "event", "feedback",
    "merge", "profile", "store", "web",
)
PUBLISH = "publish with `touchpoint publish` or the touchpoint.publish API"


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    result = empty
    for byte in data:
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result


def full(subject: str, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every field the schema has, defaults filled in."""
    fields = default_registry().latest(subject).schema["fields"]
    return {field["name"]: record.get(field["name"], field.get("default")) for field in fields}


def decode_error(codec: Codec, data: bytes | None) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        codec.decode(data)
    return caught.value


# --- round trips and layout ------------------------------------------------------------------


def test_subjects_and_cached_codecs() -> None:
    assert subjects() == ALL_SUBJECTS
    assert codec_for("web") is codec_for("web")
    assert (codec_for("web").subject, codec_for("web").version) == ("web", 1)
    assert repr(codec_for("web")) == (
        f"<Codec 'web' v1 {default_registry().latest('web').fingerprint_hex}>"
    )
    with pytest.raises(SchemaError):
        codec_for("touchpoints.web")


@pytest.mark.parametrize("subject", ALL_SUBJECTS)
def test_round_trip(subject: str, samples: dict[str, dict[str, Any]]) -> None:
    codec = codec_for(subject)
    record = samples[subject]

    decoded = codec.decode(codec.encode(record))

    assert decoded == full(subject, record)


def test_timestamps_stay_epoch_millisecond_ints(samples: dict[str, dict[str, Any]]) -> None:
    event = codec_for("event").decode(codec_for("event").encode(samples["event"]))
    signal = codec_for("complaint_signal").decode(
        codec_for("complaint_signal").encode(samples["complaint_signal"])
    )

    assert (type(event["occurred_at"]), event["occurred_at"]) == (int, 1_795_314_300_000)
    assert (type(event["ingested_at"]), event["ingested_at"]) == (int, 1_795_314_300_950)
    assert signal["escalated_at"] == 1_795_314_300_000


@pytest.mark.parametrize("subject", ALL_SUBJECTS)
def test_byte_layout_is_the_avro_single_object_encoding(
    subject: str, samples: dict[str, dict[str, Any]]
) -> None:
    version = default_registry().latest(subject)
    record = samples[subject]

    data = codec_for(subject).encode(record)

    assert data[:2] == b"\xc3\x01" == MARKER
    assert data[2:10] == struct.pack("<Q", rabin64(version.canonical_form.encode("utf-8")))
    # The body is plain Avro binary that the reference implementation reads back.
    reader = avro.io.DatumReader(avro.schema.parse(json.dumps(physical_schema(version.schema))))
    assert reader.read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:]))) == full(
        subject, record
    )


def test_exact_bytes_for_a_small_schema(schema_dir: Any) -> None:
    schema_dir.write(
        "tiny", 1,
        {"type": "record", "name": "foo", "fields": [{"name": "f1", "type": "boolean"}]},
    )
    codec = Codec("tiny", registry=schema_dir.load())

    data = codec.encode({"f1": True})

    # Rabin 7843277075252814651 is the spec's test vector for this schema.
    assert data == b"\xc3\x01" + (7843277075252814651).to_bytes(8, "little") + b"\x01"
    assert codec.decode(data) == {"f1": True}


def test_reads_bodies_written_by_the_avro_package(samples: dict[str, dict[str, Any]]) -> None:
    version = default_registry().latest("callcenter")
    writer = avro.io.DatumWriter(avro.schema.parse(json.dumps(version.schema)))
    body = io.BytesIO()
    writer.write(full("callcenter", samples["callcenter"]), avro.io.BinaryEncoder(body))

    decoded = codec_for("callcenter").decode(MARKER + version.fingerprint + body.getvalue())

    assert decoded == full("callcenter", samples["callcenter"])


# --- decode failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", None])
def test_empty_value_or_tombstone(data: bytes | None) -> None:
    error = decode_error(codec_for("web"), data)

    assert isinstance(error, DecodeError)
    assert error.code == "undecodable"
    assert str(error) == (
        "value is empty: an empty message or tombstone, not an Avro single-object record; "
        + PUBLISH
    )


def test_json_value() -> None:
    error = decode_error(codec_for("web"), b'{"event_id": "e-1", "type": "page_view"}')

    assert error.code == "undecodable"
    assert str(error) == (
        "value starts with 0x7b ('{'), not the Avro single-object marker C3 01: the producer "
        "sent JSON? Publish with `touchpoint publish` or the touchpoint.publish API"
    )


def test_bad_marker() -> None:
    data = codec_for("web").encode({"event_id": "e", "type": "login", "occurred_at": 1})
    error = decode_error(codec_for("web"), b"\xc3\x02" + data[2:])

    assert error.code == "undecodable"
    assert str(error) == (
        "value starts with C3 02, not the Avro single-object marker C3 01: the producer does "
        f"not use single-object encoding; {PUBLISH}"
    )


def test_confluent_framing() -> None:
    error = decode_error(codec_for("web"), b"\x00\x00\x00\x01\x2a\x02e")

    assert error.code == "undecodable"
    assert str(error) == (
        "value starts with 0x00, the Confluent Schema Registry framing (schema id 298), not "
        f"the Avro single-object marker C3 01: {PUBLISH}"
    )


@pytest.mark.parametrize("data", [b"\xc3", b"\xc3\x01", b"\xc3\x01\xd8\xff\x28"])
def test_header_cut_short(data: bytes) -> None:
    error = decode_error(codec_for("web"), data)

    assert error.code == "undecodable"
    size = f"{len(data)} byte" + ("" if len(data) == 1 else "s")
    assert str(error) == (
        f"value is {size}, shorter than the 10-byte single-object header (C3 01 and an "
        "8-byte schema fingerprint): the value was truncated"
    )


def test_unknown_fingerprint() -> None:
    web = default_registry().latest("web")
    error = decode_error(codec_for("web"), MARKER + bytes.fromhex("efcdab9078563412") + b"\x02a")

    assert error.code == "unknown_schema"
    assert str(error) == (
        "writer schema fingerprint 0x1234567890abcdef is not one of the 1 known versions of "
        f"'web' (v1 {web.fingerprint_hex}): deploy the schema version the producer uses, or "
        "have it publish with a deployed one"
    )


def test_record_of_another_subject(samples: dict[str, dict[str, Any]]) -> None:
    data = codec_for("store").encode(samples["store"])

    error = decode_error(codec_for("web"), data)

    assert error.code == "wrong_subject"
    assert str(error) == (
        "record is a 'store' record (schema v1), this topic expects 'web': the producer "
        "published to the wrong topic"
    )


def test_truncated_body(samples: dict[str, dict[str, Any]]) -> None:
    data = codec_for("web").encode(samples["web"])

    error = decode_error(codec_for("web"), data[:-5])

    assert error.code == "undecodable"
    assert str(error) == (
        "body does not decode as a 'web' v1 record (EOFError): the value is truncated or corrupt"
    )


def test_bytes_left_over(samples: dict[str, dict[str, Any]]) -> None:
    data = codec_for("web").encode(samples["web"])

    error = decode_error(codec_for("web"), data + b"\x00\x00")

    assert error.code == "undecodable"
    assert str(error) == (
        "2 bytes left over after a 'web' v1 record: the value is corrupt, or the producer "
        "wrote a body that does not match the schema its fingerprint names"
    )


def test_corrupt_text_in_body() -> None:
    codec = codec_for("web")
    data = codec.encode({"event_id": "e-ok", "type": "login", "occurred_at": 1})
    corrupt = data.replace(b"e-ok", b"e-\xff\xfe")

    error = decode_error(codec, corrupt)

    assert error.code == "undecodable"
    assert str(error).startswith("body does not decode as a 'web' v1 record (UnicodeDecodeError: ")


def test_random_corruption_only_ever_gives_decode_errors(
    samples: dict[str, dict[str, Any]],
) -> None:
    codec = codec_for("callcenter")
    data = codec.encode(samples["callcenter"])
    rng = random.Random(20261122)
    outcomes: set[str] = set()

    for _ in range(3000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(HEADER_SIZE, len(damaged))] = rng.randrange(256)
        if rng.random() < 0.3:
            damaged = damaged[: rng.randrange(HEADER_SIZE, len(damaged))]
        try:
            codec.decode(bytes(damaged))
        except DecodeError as error:
            outcomes.add(error.code)
        else:
            outcomes.add("decoded")

    assert outcomes == {"undecodable", "decoded"}


# --- encode failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"dwell_ms": 1.5}, "dwell_ms",
         "field 'dwell_ms' is 1.5 (float), the schema wants [\"null\", \"int\"]"),
        ({"dwell_ms": 2**31}, "dwell_ms",
         "field 'dwell_ms' is 2147483648 (int), the schema wants [\"null\", \"int\"]"),
        ({"url": 404}, "url", "field 'url' is 404 (int), the schema wants [\"null\", \"string\"]"),
        ({"attributes": {"n": 1}}, "attributes",
         "field 'attributes' is {'n': 1} (dict), the schema wants "
         "{\"type\": \"map\", \"values\": \"string\"}"),
        ({"event_id": None}, "event_id",
         "field 'event_id' is None (NoneType), the schema wants \"string\""),
        ({"dwel_ms": 5}, "dwel_ms",
         "has field 'dwel_ms' that the schema does not have: fix the name, or add the field "
         "as optional in a new schema version"),
    ],
)
def test_encode_names_the_field_that_does_not_fit(
    samples: dict[str, dict[str, Any]], change: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        codec_for("web").encode(samples["web"] | change)

    assert caught.value.field == field
    assert str(caught.value) == f"'web' record (schema v1) {message}"


def test_encode_refuses_a_missing_required_field(samples: dict[str, dict[str, Any]]) -> None:
    record = samples["event"]
    del record["source_offset"]

    with pytest.raises(EncodeError) as caught:
        codec_for("event").encode(record)

    assert caught.value.field == "source_offset"
    assert str(caught.value) == (
        "'event' record (schema v1) has no 'source_offset', which is required"
    )


def test_encode_refuses_a_datetime_for_epoch_milliseconds(
    samples: dict[str, dict[str, Any]],
) -> None:
    when = datetime(2026, 11, 22, 2, 15, tzinfo=UTC)

    with pytest.raises(EncodeError) as caught:
        codec_for("event").encode(samples["event"] | {"ingested_at": when})

    assert caught.value.field == "ingested_at"
    assert str(caught.value) == (
        f"'event' record (schema v1) field 'ingested_at' is {when!r} (datetime), the schema "
        'wants {"type": "long", "logicalType": "timestamp-millis"}: pass epoch milliseconds '
        "as an int"
    )


def test_encode_refuses_float_map_values(samples: dict[str, dict[str, Any]]) -> None:
    with pytest.raises(EncodeError) as caught:
        codec_for("profile").encode(samples["profile"] | {"contacts_by_channel": {"web": 1.5}})

    assert caught.value.field == "contacts_by_channel"


def test_encode_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(EncodeError) as caught:
        codec_for("web").encode(["e-1", "page_view"])

    assert (caught.value.field, str(caught.value)) == (
        None, "'web' record (schema v1) must be a dict, not list",
    )


def test_unchecked_encoding_writes_the_same_bytes_and_still_refuses_the_unwritable() -> None:
    codec = codec_for("web")
    record = {"event_id": "e1", "type": "page_view", "occurred_at": 1, "attributes": {}}
    assert codec.encode(record, check=False) == codec.encode(record)
    with pytest.raises(EncodeError):
        codec.encode({"event_id": None, "type": "page_view", "occurred_at": 1}, check=False)


# --- the packed form between the pipeline's stages ---------------------------------------------

# a dead letter carries the rejected payload, and a hand-over (absorb) its digests, as
# bytes, which JSON cannot hold
PACKABLE = tuple(s for s in ALL_SUBJECTS
                 if codec_for(s)._packable and s not in ("deadletter", "absorb"))


@pytest.mark.parametrize("subject", PACKABLE)
def test_a_packed_record_reads_back_as_its_avro_form_does(
        subject: str, samples: dict[str, dict[str, Any]]) -> None:
    codec = codec_for(subject)
    record = samples[subject]

    packed = codec.pack(record)

    assert packed[:HEADER_SIZE] == PACKED_MARKER + codec.fingerprint
    assert codec.decode(packed) == codec.decode(codec.encode(record)) == full(subject, record)
    assert subject_of(packed) == subject


def test_the_normalized_event_is_packable_and_leaves_its_null_fields_out(
        samples: dict[str, dict[str, Any]]) -> None:
    record = full("event", samples["event"])
    packed = codec_for("event").pack(record)
    body = json.loads(packed[HEADER_SIZE:])
    assert body == {k: v for k, v in record.items() if v is not None}
    assert any(v is None for v in record.values())


def test_a_packed_record_of_an_older_version_takes_the_new_fields_defaults(
        schema_dir: Any) -> None:
    first = {"type": "record", "name": "thing", "fields": [
        {"name": "id", "type": "string"}, {"name": "gone", "type": ["null", "int"],
                                           "default": None}]}
    second = {"type": "record", "name": "thing", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": "int", "default": 7},
        {"name": "note", "type": ["null", "string"], "default": None}]}
    schema_dir.write("thing", 1, first)
    schema_dir.write("thing", 2, second)
    registry = schema_dir.load()
    old = Codec("thing", registry=registry)
    old_packed = PACKED_MARKER + registry.versions("thing")[0].fingerprint + b'{"id":"a","gone":3}'

    assert old.decode(old_packed) == {"id": "a", "n": 7, "note": None}
    assert old.decode(old.pack({"id": "b", "n": 1, "note": None})) == {
        "id": "b", "n": 1, "note": None}


def test_a_packed_record_of_an_older_version_without_a_required_field_is_incompatible(
        schema_dir: Any) -> None:
    schema_dir.write("thing", 1, {"type": "record", "name": "thing", "fields": [
        {"name": "id", "type": "string"}]})
    schema_dir.write("thing", 2, {"type": "record", "name": "thing", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": "int"}]})
    registry = schema_dir.load()
    codec = Codec("thing", registry=registry)
    data = PACKED_MARKER + registry.versions("thing")[0].fingerprint + b'{"id":"a"}'
    error = decode_error(codec, data)
    assert error.code == "incompatible_schema"
    assert "no 'n', which has no default" in str(error)


@pytest.mark.parametrize(("body", "says"), [
    (b'{"event_id": "e', "is not JSON"),
    (b"[1, 2]", "is not a JSON object"),
])
def test_a_corrupt_packed_body_is_undecodable(body: bytes, says: str) -> None:
    codec = codec_for("event")
    error = decode_error(codec, PACKED_MARKER + codec.fingerprint + body)
    assert error.code == "undecodable"
    assert says in str(error)


def test_a_packed_record_of_another_subject_or_unknown_schema_is_named_as_such() -> None:
    merge = codec_for("merge")
    other = PACKED_MARKER + merge.fingerprint + b"{}"
    assert decode_error(codec_for("event"), other).code == "wrong_subject"
    unknown = PACKED_MARKER + b"\x00" * 8 + b"{}"
    assert decode_error(codec_for("event"), unknown).code == "unknown_schema"
    assert subject_of(unknown) is None


def test_pack_refuses_what_json_cannot_hold(samples: dict[str, dict[str, Any]]) -> None:
    record = dict(samples["event"], occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(EncodeError) as caught:
        codec_for("event").pack(record)
    assert caught.value.field == "occurred_at"
    with pytest.raises(EncodeError, match="not JSON serializable: bytes"):
        codec_for("deadletter").pack(dict(samples["deadletter"], payload=b"\xc3\x01"))


def test_pack_refuses_a_subject_whose_null_fields_have_other_defaults(schema_dir: Any) -> None:
    schema_dir.write("odd", 1, {"type": "record", "name": "odd", "fields": [
        {"name": "x", "type": ["string", "null"], "default": "none"}]})
    codec = Codec("odd", registry=schema_dir.load())
    with pytest.raises(EncodeError, match="cannot leave out"):
        codec.pack({"x": None})


# --- inbound: the public form only, integers as Avro has them --------------------------------


@pytest.mark.parametrize("subject", ["web", "store", "callcenter", "campaign", "feedback"])
def test_packed_false_refuses_the_packed_form_and_reads_avro(
        subject: str, samples: dict[str, dict[str, Any]]) -> None:
    codec = codec_for(subject)
    record = samples[subject]
    packed = codec.pack(record)
    error = decode_error_with(codec, packed, packed=False)
    assert error.code == "undecodable"
    assert str(error) == (
        "value is in the pipeline's internal packed form (marker C3 4A), which this topic "
        f"does not accept: publish '{subject}' records in Avro single-object encoding "
        f"(marker C3 01); {PUBLISH}")
    assert codec.decode(codec.encode(record), packed=False) == full(subject, record)
    assert codec.decode(packed) == full(subject, record)  # the pipeline's stages still read it


def decode_error_with(codec: Codec, data: bytes, **options: Any) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, **options)
    return caught.value


from ..avro_wire import varint as zigzag_varint  # noqa: E402 - with the tests that use it


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**70 + 5, 2**9_000])
def test_a_varint_wider_than_64_bits_is_undecodable(value: int,
                                                    samples: dict[str, dict[str, Any]]) -> None:
    # fastavro's compiled reader drops the bits past 64: 2**70 + 5 would read as 5.
    codec = codec_for("event")
    record = full("event", samples["event"])
    data = codec.encode(record | {"source_offset": 1})
    assert data.endswith(b"\x02")  # source_offset is the last field
    error = decode_error(codec, data[:-1] + zigzag_varint(value))
    assert (error.code, str(error)) == ("undecodable", (
        "'source_offset' of a 'event' v1 record is an integer wider than 64 bits (a varint "
        "of more than 10 bytes), which no Avro int or long can be: the producer's Avro "
        "encoder is broken"))


def test_bodies_that_may_hold_a_wide_varint_are_those_with_nine_high_bytes_in_a_row() -> None:
    # what the decoder walks: the regular expression it used to search with, over random
    # bodies with runs of high bytes of every length around nine, anywhere (the header too)
    pattern = re.compile(rb"[\x80-\xff]{9}")
    rng = random.Random(9)
    for _ in range(3_000):
        data = bytearray(rng.randrange(0, 0x80) for _ in range(rng.randrange(0, 60)))
        for _ in range(rng.randrange(0, 3)):
            at = rng.randrange(0, len(data) + 1)
            data[at:at] = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(6, 12)))
        body = bytes(data)
        assert codec_module._maybe_wide(body) == (pattern.search(body, HEADER_SIZE) is not None)


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)])
def test_a_varint_of_64_bits_reads_exactly(value: int,
                                           samples: dict[str, dict[str, Any]]) -> None:
    codec = codec_for("event")
    record = full("event", samples["event"]) | {"source_offset": value,
                                                 "notes": "很" * 50, "url": "é" * 50}
    assert codec.decode(codec.encode(record)) == record


def test_encode_errors_show_a_short_value_whatever_its_depth_or_size() -> None:
    deep: list[Any] = []
    for _ in range(5_000):
        deep = [deep]
    for value in (deep, 10**5_000, b"x" * 1_000_000):
        with pytest.raises(EncodeError) as caught:
            codec_for("web").encode({"event_id": value, "type": "page_view", "occurred_at": 1})
        assert caught.value.field == "event_id"
        assert len(str(caught.value)) < 300, str(caught.value)
