"""Schema evolution: a compatible v2 reads v1 data (and back); an incompatible one is reported."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest
from fastavro import schemaless_reader

from touchpoint.exceptions import DecodeError
from touchpoint.schemas import HEADER_SIZE, Codec, codec_for
from touchpoint.schemas.compat import check, main
from touchpoint.schemas.registry import default_registry

DEVICE = {"name": "device", "type": ["null", "string"], "default": None, "doc": "Device class."}
CONSENT = {"name": "consent", "type": "string", "default": "unknown", "doc": "Tracking consent."}


def with_fields(schema: dict[str, Any], *fields: dict[str, Any]) -> dict[str, Any]:
    return schema | {"fields": [*schema["fields"], *fields]}


def replaced(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    fields = [field if f["name"] == field["name"] else f for f in schema["fields"]]
    return schema | {"fields": fields}


def test_shipped_schemas_are_compatible() -> None:
    assert check(default_registry()) == []


def test_v2_with_optional_fields_reads_v1_data_and_v1_reads_v2_data(
    schema_dir: Any, shipped: Any, samples: dict[str, dict[str, Any]]
) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, with_fields(shipped("web"), DEVICE, CONSENT))
    registry = schema_dir.load()
    v2 = Codec("web", registry=registry)
    v1 = codec_for("web")  # the shipped registry: v1 only
    record = samples["web"]
    v1_full = v1.decode(v1.encode(record))

    from_v1 = v2.decode(v1.encode(record))
    # A v1 worker cannot look up v2's fingerprint, so forward compatibility is shown
    # with fastavro directly: v2 bytes resolved to the v1 schema.
    v2_bytes = v2.encode(record | {"device": "tablet", "consent": "granted"})
    from_v2 = schemaless_reader(
        io.BytesIO(v2_bytes[HEADER_SIZE:]), registry.get("web", 2).parsed, v1.latest.parsed
    )

    assert check(registry) == []
    assert v2.version == 2
    assert from_v1 == v1_full | {"device": None, "consent": "unknown"}
    assert list(from_v1)[-2:] == ["device", "consent"]
    assert from_v2 == v1_full
    # Hence the deploy order: workers get a new schema version before producers use it.
    with pytest.raises(DecodeError) as caught:
        v1.decode(v2_bytes)
    assert caught.value.code == "unknown_schema"


def test_new_required_field_is_reported_and_old_data_is_dead_lettered_with_a_reason(
    schema_dir: Any, shipped: Any, samples: dict[str, dict[str, Any]]
) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, with_fields(shipped("web"), {"name": "device", "type": "string"}))
    registry = schema_dir.load()

    assert check(registry) == [
        "web v2 is not backward compatible with v1: v2 cannot read data written with v1: "
        "reader_field_missing_default_value (device) at field 'device'"
    ]
    with pytest.raises(DecodeError) as caught:
        Codec("web", registry=registry).decode(codec_for("web").encode(samples["web"]))
    assert caught.value.code == "incompatible_schema"
    assert str(caught.value).startswith("a 'web' v1 record cannot be read as v2 (")
    assert str(caught.value).endswith(
        "): the deployed schema versions are incompatible; fix them "
        "(python -m touchpoint.schemas.compat) and replay"
    )


def test_changed_type_is_reported_both_ways(schema_dir: Any, shipped: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, replaced(
        shipped("web"), {"name": "dwell_ms", "type": ["null", "string"], "default": None}
    ))

    assert check(schema_dir.load()) == [
        "web v2 is not backward compatible with v1: v2 cannot read data written with v1: "
        "missing_union_branch (reader union lacking writer type: INT) at field 'dwell_ms'/type/1",
        "web v2 is not forward compatible with v1: v1 cannot read data written with v2: "
        "missing_union_branch (reader union lacking writer type: STRING) at field "
        "'dwell_ms'/type/1",
    ]


def test_int_to_long_is_backward_but_not_forward_compatible(
    schema_dir: Any, shipped: Any
) -> None:
    schema_dir.write("store", 1, shipped("store"))
    schema_dir.write("store", 2, replaced(
        shipped("store"), {"name": "items", "type": ["null", "long"], "default": None}
    ))

    assert check(schema_dir.load()) == [
        "store v2 is not forward compatible with v1: v1 cannot read data written with v2: "
        "missing_union_branch (reader union lacking writer type: LONG) at field 'items'/type/1"
    ]


def test_renamed_record_is_reported(schema_dir: Any, shipped: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, shipped("web") | {"name": "WebEvent"})

    assert check(schema_dir.load()) == [
        "web v2 is not backward compatible with v1: v2 cannot read data written with v1: "
        "name_mismatch (expected: touchpoint.WebTouchpoint) at /name",
        "web v2 is not forward compatible with v1: v1 cannot read data written with v2: "
        "name_mismatch (expected: touchpoint.WebEvent) at /name",
    ]


def test_latest_must_read_every_older_version_not_only_the_previous_one(
    schema_dir: Any, shipped: Any
) -> None:
    optional_x = {"name": "x", "type": "string", "default": "none"}
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, with_fields(shipped("web"), optional_x))
    schema_dir.write("web", 3, with_fields(shipped("web"), {"name": "x", "type": "string"}))

    assert check(schema_dir.load()) == [
        "web v3 is not backward compatible with v1: v3 cannot read data written with v1: "
        "reader_field_missing_default_value (x) at field 'x'"
    ]


def test_command_prints_ok(schema_dir: Any, shipped: Any, capsys: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, with_fields(shipped("web"), DEVICE))

    assert main(["--root", str(schema_dir.root)]) == 0
    assert capsys.readouterr().out == (
        "OK: 1 subjects, 2 versions, every version backward and forward compatible with the "
        "one before\n"
    )


def test_command_prints_problems_and_fails(schema_dir: Any, shipped: Any, capsys: Any) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, replaced(shipped("web"), {"name": "url", "type": "string"}))

    assert main(["--root", str(schema_dir.root)]) == 1
    assert capsys.readouterr().out == (
        "web v2 is not backward compatible with v1: v2 cannot read data written with v1: "
        # (the avro checker loses the location when the writer side is a union)
        "type_mismatch (reader type: string not compatible with writer type: null) at /\n"
    )


def test_command_reports_a_bad_folder_in_one_line(schema_dir: Any, capsys: Any) -> None:
    path = schema_dir.write("web", 1, "{")

    assert main(["--root", str(schema_dir.root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path}: not valid JSON: ")
    assert err.count("\n") == 1


def test_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "touchpoint.schemas.compat"],
        capture_output=True, text=True, check=False, timeout=60,
    )

    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "OK: 11 subjects, 11 versions, every version backward and forward compatible with the "
        "one before\n",
        "",
    )


def test_a_docs_only_v2_shares_v1_s_fingerprint_and_reads_its_data(
    schema_dir: Any, shipped: Any, samples: dict[str, dict[str, Any]]
) -> None:
    schema_dir.write("web", 1, shipped("web"))
    schema_dir.write("web", 2, shipped("web") | {"doc": "Reworded."})
    registry = schema_dir.load()
    v1_data = codec_for("web").encode(samples["web"])

    assert check(registry) == []
    assert Codec("web", registry=registry).encode(samples["web"]) == v1_data
    assert Codec("web", registry=registry).decode(v1_data) == codec_for("web").decode(v1_data)
