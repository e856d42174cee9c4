"""The shipped schemas match the contract; the registry fingerprints and indexes them correctly."""

from __future__ import annotations

import json
from typing import Any

import avro.schema
import pytest

from touchpoint.exceptions import SchemaError
from touchpoint.schemas import contract
from touchpoint.schemas.registry import (
    Registry,
    SchemaVersion,
    default_registry,
    format_fingerprint,
    physical_schema,
)

OPT_STRING = ["null", "string"]
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
OPT_TIMESTAMP = ["null", TIMESTAMP]

RECORD_NAMES = {
    "absorb": "touchpoint.ProfileAbsorb",
    "merge": "touchpoint.CustomerMerge",
    "callcenter": "touchpoint.CallCenterTouchpoint",
    "campaign": "touchpoint.CampaignTouchpoint",
    "complaint_signal": "touchpoint.ComplaintSignal",
    "deadletter": "touchpoint.DeadLetter",
    "event": "touchpoint.TouchpointEvent",
    "feedback": "touchpoint.FeedbackTouchpoint",
    "profile": "touchpoint.CustomerProfile",
    "store": "touchpoint.StoreTouchpoint",
    "web": "touchpoint.WebTouchpoint",
}

# CONTRACT.md section 2, written out independently of the schema files.
COMMON = [
    ("event_id", "string"),
    ("type", "string"),
    ("occurred_at", ["long", "string"]),
    ("customer_id", OPT_STRING),
    ("anonymous_id", OPT_STRING),
    ("email", OPT_STRING),
    ("phone", OPT_STRING),
    ("campaign_id", OPT_STRING),
    ("attributes", {"type": "map", "values": "string"}),
]
CHANNEL_FIELDS = {
    "web": [
        ("session_id", "string"), ("url", "string"), ("referrer", "string"), ("ad_id", "string"),
        ("dwell_ms", "int"), ("amount", "double"), ("currency", "string"),
        ("error_code", "string"),
    ],
    "store": [
        ("store_id", "string"), ("staff_id", "string"), ("queue_wait_s", "int"),
        ("amount", "double"), ("currency", "string"), ("items", "int"),
    ],
    "callcenter": [
        ("call_id", "string"), ("agent_id", "string"), ("queue_wait_s", "int"),
        ("talk_s", "int"), ("transfers", "int"), ("reason", "string"), ("outcome", "string"),
        ("notes", "string"),
    ],
    "campaign": [("medium", "string"), ("variant", "string")],
    "feedback": [
        ("score", "int"), ("comment", "string"), ("about_channel", "string"),
        ("store_id", "string"), ("case_id", "string"),
    ],
}
EVENT_CHANNEL_FIELDS = [
    ("session_id", "string"), ("url", "string"), ("referrer", "string"), ("ad_id", "string"),
    ("dwell_ms", "int"), ("amount", "double"), ("currency", "string"), ("error_code", "string"),
    ("store_id", "string"), ("staff_id", "string"), ("queue_wait_s", "int"), ("items", "int"),
    ("call_id", "string"), ("agent_id", "string"), ("talk_s", "int"), ("transfers", "int"),
    ("reason", "string"), ("outcome", "string"), ("notes", "string"), ("medium", "string"),
    ("variant", "string"), ("score", "int"), ("comment", "string"),
    ("about_channel", "string"), ("case_id", "string"),
]

# Parsing Canonical Form test vectors from Apache Avro's share/test/data/schema-tests.txt
# (cross-checked by the Java implementation): input, canonical form, signed 64-bit Rabin.
SPEC_VECTORS = [
    ('{"fields":[], "type":"record", "name":"foo"}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}',
     '{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"fields":[], "type":"record", "name":"foo", "doc":"foo", "aliases":["foo","bar"]}',
     '{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"fields":[{"type":{"type":"boolean"}, "name":"f1"}], "type":"record", "name":"foo"}',
     '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
     7843277075252814651),
    # (026 with the default fixed to a JSON boolean: fastavro checks defaults)
    ('{ "fields":[{"type":"boolean", "aliases":[], "name":"f1", "default":true},'
     '{"order":"descending","name":"f2","doc":"Hello","type":"int"}],'
     ' "type":"record", "name":"foo"}',
     '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
     '{"name":"f2","type":"int"}]}', -4860222112080293046),
    ('{"name":"PigValue","type":"record",'
     '"fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}',
     '{"name":"PigValue","type":"record","fields":[{"name":"value",'
     '"type":["null","int","long","PigValue"]}]}', -1759257747318642341),
]


def fields_of(version: SchemaVersion) -> list[tuple[str, Any]]:
    return [(field["name"], field["type"]) for field in version.schema["fields"]]


def optional(fields: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    return [(name, ["null", kind]) for name, kind in fields]


def has_logical_types(schema: Any) -> bool:
    return "logicalType" in json.dumps(schema)


# --- what is shipped -------------------------------------------------------------------


def test_shipped_subjects_each_have_v1_with_the_agreed_record_name() -> None:
    registry = default_registry()

    assert registry.subjects() == tuple(sorted(RECORD_NAMES))
    assert len(registry) == 11  # one version a subject: nothing released yet
    for subject, name in RECORD_NAMES.items():
        first = registry.versions(subject)[0]
        assert (first.version, first.name, first.schema["namespace"]) == (1, name, "touchpoint")
        assert registry.latest(subject).name == name
        assert registry.get(subject, 1) is first


@pytest.mark.parametrize("channel", sorted(CHANNEL_FIELDS))
def test_inbound_schema_has_the_contract_fields(channel: str) -> None:
    version = default_registry().latest(channel)

    assert fields_of(version) == COMMON + optional(CHANNEL_FIELDS[channel])
    defaults = {f["name"]: f.get("default", "<none>") for f in version.schema["fields"]}
    assert defaults == {
        "event_id": "<none>", "type": "<none>", "occurred_at": "<none>", "attributes": {},
    } | {name: None for name, _ in COMMON[3:8] + CHANNEL_FIELDS[channel]}


@pytest.mark.parametrize("channel", sorted(CHANNEL_FIELDS))
def test_inbound_schema_agrees_with_the_contract_module(channel: str) -> None:
    avro_types = {str: "string", int: "int", float: "double"}
    spec = contract.CHANNELS[channel]
    fields = dict(fields_of(default_registry().latest(channel)))

    assert list(fields) == [*contract.COMMON_FIELDS, *spec.fields]
    assert {name: fields[name] for name in spec.fields} == {
        name: ["null", avro_types[kind]] for name, kind in spec.fields.items()
    }


def test_event_schema_is_the_normalized_event() -> None:
    version = default_registry().latest("event")

    assert fields_of(version) == [
        ("event_id", "string"),
        ("channel", "string"),
        ("type", "string"),
        ("occurred_at", TIMESTAMP),
        ("ingested_at", TIMESTAMP),
        ("customer_id", OPT_STRING),
        ("anonymous_id", OPT_STRING),
        ("email_hash", OPT_STRING),
        ("phone_hash", OPT_STRING),
        ("campaign_id", OPT_STRING),
        ("category", "string"),
        ("stage", "string"),
        ("attributes", {"type": "map", "values": "string"}),
        *optional(EVENT_CHANNEL_FIELDS),
        ("sentiment", ["null", "double"]),
        ("source_topic", "string"),
        ("source_partition", "int"),
        ("source_offset", "long"),
    ]
    names = {name for name, _ in fields_of(version)}
    assert not names & {"email", "phone"}  # PII never leaves the inbound topic in clear


def test_deadletter_schema() -> None:
    assert fields_of(default_registry().latest("deadletter")) == [
        ("payload", "bytes"),
        ("key", ["null", "bytes"]),
        ("source_topic", "string"),
        ("source_partition", "int"),
        ("source_offset", "long"),
        ("source_timestamp", OPT_TIMESTAMP),
        ("reason_code", "string"),
        ("reason", "string"),
        ("rejected_at", TIMESTAMP),
        ("worker", "string"),
    ]


def test_output_schemas_have_the_contract_columns() -> None:
    strings = {"type": "array", "items": "string"}
    assert fields_of(default_registry().latest("complaint_signal")) == [
        ("signal_id", "string"),
        ("customer_id", "string"),
        ("detected_at", TIMESTAMP),
        ("first_evidence_at", TIMESTAMP),
        ("severity", "string"),
        ("score", "double"),
        ("reasons", strings),
        ("evidence_event_ids", strings),
        ("channels", strings),
        ("status", "string"),
        ("escalated_at", OPT_TIMESTAMP),
        ("emitted_at", TIMESTAMP),
        ("due_at", OPT_TIMESTAMP),
        ("revision", "long"),
    ]
    # v2 adds optional fields after the contract's (CONTRACT §4 columns first, unchanged)
    assert fields_of(default_registry().latest("profile"))[:11] == [
        ("customer_id", "string"),
        ("first_seen", TIMESTAMP),
        ("last_seen", TIMESTAMP),
        ("lifecycle_stage", "string"),
        ("value_tier", "string"),
        ("total_spend", "double"),
        ("orders", "int"),
        ("contacts_by_channel", {"type": "map", "values": "long"}),
        ("avg_satisfaction", ["null", "double"]),
        ("open_signals", "int"),
        ("updated_at", TIMESTAMP),
    ]


def test_every_record_and_field_is_documented() -> None:
    undocumented = [
        f"{version.subject}.{field['name']}"
        for version in default_registry()
        for field in version.schema["fields"]
        if not field.get("doc")
    ]
    assert undocumented == []
    assert all(version.schema.get("doc") for version in default_registry())


# --- fingerprints ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "canonical", "rabin"), SPEC_VECTORS)
def test_fingerprint_matches_the_avro_spec_test_vectors(
    text: str, canonical: str, rabin: int
) -> None:
    version = SchemaVersion.from_json("t", 1, text, source="vector")

    assert version.canonical_form == canonical
    assert version.fingerprint == rabin.to_bytes(8, "little", signed=True)
    assert version.fingerprint_hex == f"0x{rabin & 0xFFFF_FFFF_FFFF_FFFF:016x}"


@pytest.mark.parametrize("subject", sorted(RECORD_NAMES))
def test_fingerprint_matches_the_avro_package(subject: str) -> None:
    version = default_registry().latest(subject)
    # Canonical form drops logicalType ([STRIP] in the spec), so the physical schema
    # must have the very same fingerprint; that is what the avro package can compute.
    reference = avro.schema.parse(json.dumps(physical_schema(version.schema)))

    assert version.fingerprint == reference.fingerprint("CRC-64-AVRO")
    assert version.canonical_form == reference.canonical_form


@pytest.mark.parametrize(
    "subject",
    sorted(s for s in RECORD_NAMES if not has_logical_types(default_registry().latest(s).schema)),
)
def test_fingerprint_matches_the_avro_package_on_the_file_as_written(subject: str) -> None:
    version = default_registry().latest(subject)

    assert version.fingerprint == avro.schema.parse(json.dumps(version.schema)).fingerprint()


@pytest.mark.xfail(
    strict=True,
    reason="avro (Python) 1.12 keeps {'type': 'long'} for a logical-typed long in the "
    "canonical form, where the spec and Java give 'long'; remove this mark once fixed",
)
def test_avro_package_canonical_form_of_logical_types_follows_the_spec() -> None:
    version = default_registry().latest("event")

    assert avro.schema.parse(json.dumps(version.schema)).fingerprint() == version.fingerprint


def test_logical_types_are_kept_in_files_but_not_in_what_the_codec_uses() -> None:
    event = default_registry().latest("event")

    assert dict(fields_of(event))["occurred_at"] == TIMESTAMP
    assert "logicalType" not in json.dumps(event.parsed, default=str)
    assert [s for s in RECORD_NAMES if has_logical_types(default_registry().latest(s).schema)] == [
        "merge", "complaint_signal", "deadletter", "event", "profile",
    ]


def test_physical_schema_leaves_defaults_and_docs_alone() -> None:
    schema = {
        "type": "record", "name": "R", "doc": "has a logicalType word",
        "fields": [
            {"name": "t", "type": ["null", TIMESTAMP], "default": None},
            {"name": "m", "type": {"type": "map", "values": "string"},
             "default": {"logicalType": "kept"}},
            {"name": "a",
             "type": {"type": "array", "items": {"type": "int", "logicalType": "date"}}},
        ],
    }

    assert physical_schema(schema) == {
        "type": "record", "name": "R", "doc": "has a logicalType word",
        "fields": [
            {"name": "t", "type": ["null", {"type": "long"}], "default": None},
            {"name": "m", "type": {"type": "map", "values": "string"},
             "default": {"logicalType": "kept"}},
            {"name": "a", "type": {"type": "array", "items": {"type": "int"}}},
        ],
    }


def test_by_fingerprint_finds_every_version_and_nothing_else() -> None:
    registry = default_registry()

    for version in registry:
        assert registry.by_fingerprint(version.fingerprint) is version
    assert registry.by_fingerprint(b"\x00" * 8) is None
    assert format_fingerprint(bytes.fromhex("0102030405060708")) == "0x0807060504030201"


# --- loading errors ------------------------------------------------------------------------


def test_custom_root_loads_only_what_is_there(schema_dir: Any) -> None:
    schema_dir.copy("web")
    schema_dir.copy("store")

    registry = schema_dir.load()

    assert registry.subjects() == ("store", "web")
    assert registry.latest("web").fingerprint == default_registry().latest("web").fingerprint
    assert registry.root == str(schema_dir.root)


def test_malformed_json_names_the_file(schema_dir: Any) -> None:
    path = schema_dir.write("web", 1, '{"type": "record", "name": ')

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    assert str(caught.value).startswith(f"{path}: not valid JSON: ")


def test_invalid_avro_names_the_file(schema_dir: Any) -> None:
    path = schema_dir.write(
        "web", 1, {"type": "record", "name": "W", "fields": [{"name": "a", "type": "strng"}]}
    )

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid Avro schema: ")
    assert "strng" in message


def test_top_level_must_be_a_record(schema_dir: Any) -> None:
    path = schema_dir.write("web", 1, '"string"')

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    assert str(caught.value) == (
        f'{path}: the top-level schema must be a record '
        f'({{"type": "record", "name": ..., "fields": [...]}})'
    )


def test_same_fingerprint_in_two_subjects_is_refused(schema_dir: Any, shipped: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    copy = schema_dir.write("web_copy", 1, shipped("web") | {"doc": "only the doc differs"})

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    fingerprint = default_registry().latest("web").fingerprint_hex
    assert str(caught.value) == (
        f"{copy}: same fingerprint {fingerprint} as {schema_dir.root / 'web' / 'v1.avsc'}, so a "
        "reader could not tell a 'web_copy' record from a 'web' one: give the records "
        "different names or fields"
    )


def test_a_version_that_only_changes_docs_keeps_the_earlier_version_s_identity(
    schema_dir: Any, shipped: Any
) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, shipped("web") | {"doc": "reworded"})

    registry = schema_dir.load()

    v1, v2 = registry.versions("web")
    assert v1.fingerprint == v2.fingerprint
    assert registry.by_fingerprint(v2.fingerprint) is v1


def test_a_missing_version_is_refused(schema_dir: Any, shipped: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 3, shipped("web"))

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    assert str(caught.value) == (
        f"{schema_dir.root}: subject 'web' has versions v1, v3; expected v1 to v3 with none "
        "missing: every published version must be kept"
    )


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("web/version1.avsc", "schema files are named v1.avsc, v2.avsc, ..."),
        ("web/v01.avsc", "schema files are named v1.avsc, v2.avsc, ..."),
        ("web.avsc", "schema files go in a folder per subject, e.g. {root}/<subject>/v1.avsc"),
        ("Web/v1.avsc", "subject folder names are lower-case letters, digits and _"),
    ],
)
def test_a_file_out_of_place_is_refused(
    schema_dir: Any, shipped: Any, relative: str, problem: str
) -> None:
    path = schema_dir.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(shipped("web")), encoding="utf-8")
    reported = path.parent if relative.startswith("Web/") else path

    with pytest.raises(SchemaError) as caught:
        schema_dir.load()

    assert str(caught.value) == f"{reported}: {problem.format(root=schema_dir.root)}"


def test_hidden_entries_and_other_files_are_ignored(schema_dir: Any, shipped: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    (schema_dir.root / "web" / "README.md").write_text("notes", encoding="utf-8")
    (schema_dir.root / "__pycache__").mkdir()
    (schema_dir.root / ".git").mkdir()

    assert schema_dir.load().subjects() == ("web",)


def test_empty_folders_are_refused(schema_dir: Any) -> None:
    with pytest.raises(SchemaError) as caught:
        schema_dir.load()
    assert str(caught.value) == f"{schema_dir.root}: no schemas found (expected <subject>/v1.avsc)"

    (schema_dir.root / "web").mkdir()
    with pytest.raises(SchemaError) as caught:
        schema_dir.load()
    assert str(caught.value) == f"{schema_dir.root / 'web'}: no v1.avsc in subject folder"


def test_unknown_subject_and_version_name_what_exists() -> None:
    registry = default_registry()

    with pytest.raises(SchemaError) as caught:
        registry.versions("wbe")
    assert str(caught.value) == (
        f"no schema subject 'wbe' in {registry.root}; known subjects: absorb, callcenter, "
        "campaign, complaint_signal, deadletter, event, feedback, merge, profile, store, web"
    )
    with pytest.raises(SchemaError) as caught:
        registry.get("web", 2)
    assert str(caught.value) == "subject 'web' has versions v1 to v1, not v2"


def test_registry_from_versions_directly() -> None:
    a = SchemaVersion.from_json("a", 1, SPEC_VECTORS[0][0], source="a.avsc")

    registry = Registry([a])

    assert (registry.subjects(), registry.latest("a"), len(registry)) == (("a",), a, 1)
    assert repr(registry) == "<Registry '': 1 subjects, 1 versions>"
