"""Avro single-object encoding for one subject: encode with its latest schema, decode any version.

A record on the wire is the marker ``C3 01``, the CRC-64-AVRO fingerprint of the writer
schema, then the Avro body; a decoder finds the writer schema by fingerprint and resolves
it to the subject's latest version, so producers and workers can be upgraded one at a
time. Decoding untrusted bytes raises only ``DecodeError``, whose code goes to the
dead-letter topic; encoding our own records fails loudly with ``EncodeError``.
Timestamps are plain ``int`` epoch milliseconds (Avro's physical types: fastavro has no
per-call switch for logical types, and we leave its global tables alone). Between its
own stages the pipeline uses a faster *packed* form (:meth:`Codec.pack`, marker
``C3 4A``: the record as JSON); ingest reads inbound topics with
``decode(value, packed=False)`` so no producer can send it. Why the packed form exists
is in docs/design/delivery.md.
"""

from __future__ import annotations

import copy
import json
import reprlib
from collections.abc import Mapping
from datetime import date, datetime
from functools import cache
from io import BytesIO
from typing import Any, Final

import orjson
from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import validate

from touchpoint.exceptions import DecodeError, EncodeError

from .binary import plan_for, read, write
from .registry import Registry, SchemaVersion, default_registry, format_fingerprint

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "PACKED_MARKER",
    "Codec",
    "codec_for",
    "subject_of",
    "subjects",
]

MARKER: Final = b"\xc3\x01"
"""The two bytes every single-object encoded Avro value starts with."""
PACKED_MARKER: Final = b"\xc3J"
"""The two bytes a packed record (:meth:`Codec.pack`) starts with."""
HEADER_SIZE: Final = 10
"""Marker (2 bytes) plus writer-schema fingerprint (8 bytes)."""

_PUBLISH_HINT = "publish with `touchpoint publish` or the touchpoint.publish API"
_MISSING = object()


class _ShortRepr(reprlib.Repr):
    """A value in an error message, bounded in length and depth.

    Plain ``repr()`` of a deeply nested value raises RecursionError, of a huge one takes
    its size again, and of an integer of more than 4,300 digits raises ValueError.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 80, 80, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 64:
            return f"<an integer of {x.bit_length():,} bits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()


class Codec:
    """Encode and decode one subject's records in Avro single-object encoding.

    Everything that depends on the schemas is computed here, once; ``encode`` and
    ``decode`` only look things up.
    """

    def __init__(self, subject: str, *, registry: Registry) -> None:
        """Prepare the codec for ``subject`` from ``registry`` (see also ``codec_for``)."""
        latest = registry.latest(subject)
        self.subject: Final = subject
        self.registry: Final = registry
        self.latest: Final = latest
        self._schema = latest.parsed
        self._header = MARKER + latest.fingerprint
        self._fields = frozenset(latest.field_names)
        # the latest schema's plan (binary.py): reads and writes what it can, fastavro the rest
        self._plan = plan_for(latest.parsed)
        # fingerprint -> (writer, reader or None when they are the same, version)
        self._readers: dict[bytes, tuple[dict[str, Any], dict[str, Any] | None, SchemaVersion]]
        # Same fingerprint, same wire form (versions that only change docs or defaults):
        # read those with the latest schema alone, no resolution needed.
        self._readers = {latest.fingerprint: (latest.parsed, None, latest)}
        for version in registry.versions(subject):
            entry = (version.parsed, latest.parsed, version)
            self._readers.setdefault(version.fingerprint, entry)
        #: fingerprint -> named types (records, enums, fixed) of that version, for _wide_varint
        self._named: dict[bytes, dict[str, Any]] = {}
        for version in (*registry.versions(subject), latest):
            named: dict[str, Any] = {}
            _collect_named(version.parsed, named)
            self._named[version.fingerprint] = named
        self._packed_header = PACKED_MARKER + latest.fingerprint
        fields = latest.schema["fields"]
        #: latest fields whose default is null: the ones ``pack`` leaves out when null
        self._nulls = {f["name"]: None for f in fields if "default" in f and f["default"] is None}
        #: every latest field with its default (_MISSING: required), to resolve old versions
        self._defaults = {f["name"]: f.get("default", _MISSING) for f in fields}
        # a null field without a null default would come back as its default: not packable
        self._packable = all(
            f["name"] in self._nulls or not _nullable(f["type"]) for f in fields)

    def __repr__(self) -> str:
        """Show the subject and the version the codec writes."""
        return f"<Codec {self.subject!r} v{self.latest.version} {self.latest.fingerprint_hex}>"

    @property
    def version(self) -> int:
        """The schema version ``encode`` writes and ``decode`` returns."""
        return self.latest.version

    @property
    def fingerprint(self) -> bytes:
        """Wire fingerprint (8 bytes, little-endian) of the schema ``encode`` writes."""
        return self.latest.fingerprint

    def encode(self, record: Mapping[str, Any], *, check: bool = True) -> bytes:
        """Encode ``record`` with the subject's latest schema; ``EncodeError`` if it does not fit.

        Fields with a default may be left out. Every value must have the schema's type
        exactly: no silent float-to-int truncation, no ``datetime`` for an epoch-ms
        ``long``, no keys the schema does not have.

        ``check=False`` skips that strict check (fastavro's ``validate`` is pure Python and
        costs several times the encoding) for records the pipeline built itself from
        checked input; what cannot be written at all still raises ``EncodeError``.
        """
        if check:
            try:
                # fastavro's stub lags its Cython signature, which has disable_tuple_notation.
                fits = not (record.keys() - self._fields) and validate(  # type: ignore[call-arg]
                    record, self._schema, raise_errors=False, disable_tuple_notation=True
                )
            except Exception:  # e.g. not a mapping; explained below
                fits = False
            if not fits:
                raise self._encode_error(record, None)
        if self._plan is not None:
            try:
                return self._header + write(self._plan, record)
            except Exception:  # Unfit, or a value no encoder takes: fastavro decides below
                pass
        buf = BytesIO()
        buf.write(self._header)
        try:
            schemaless_writer(buf, self._schema, record, disable_tuple_notation=True)
        except Exception as exc:
            raise self._encode_error(record, exc) from exc
        return buf.getvalue()

    def pack(self, record: Mapping[str, Any]) -> bytes:
        """The pipeline's own form of a record it built from checked input (see the module).

        Not checked against the schema, like ``encode(check=False)``; what JSON cannot
        hold (bytes, datetimes, non-text map keys) raises ``EncodeError``.
        """
        if not self._packable:
            raise EncodeError(f"'{self.subject}' records have a nullable field with a non-null "
                              "default, which the packed form cannot leave out: use encode")
        try:
            body = orjson.dumps({k: v for k, v in record.items() if v is not None},
                                option=orjson.OPT_PASSTHROUGH_DATETIME)
        except (TypeError, AttributeError) as exc:  # orjson.JSONEncodeError is a TypeError
            raise self._encode_error(record, exc) from exc
        return self._packed_header + body

    def decode(self, data: bytes | None, *, packed: bool = True) -> dict[str, Any]:
        """Decode a single-object encoded (or packed) value into a record of the latest version.

        Raises ``DecodeError`` (a ``DecodeError``) with ``code`` ``undecodable``,
        ``unknown_schema``, ``wrong_subject`` or ``incompatible_schema`` and a message
        saying what to fix. ``None`` (a Kafka tombstone) is ``undecodable``.

        ``packed=False`` accepts the public Avro form only: bytes from outside (inbound
        topics) in the packed form would skip Avro's typing, so they are ``undecodable``.
        """
        if data and data[:2] == PACKED_MARKER:
            if not packed:
                raise DecodeError(
                    f"value is in the pipeline's internal packed form (marker C3 4A), which "
                    f"this topic does not accept: publish '{self.subject}' records in Avro "
                    f"single-object encoding (marker C3 01); {_PUBLISH_HINT}",
                    code="undecodable",
                )
            return self._unpack(data)
        if not data or data[:2] != MARKER:
            raise self._header_error(data)
        entry = self._readers.get(data[2:HEADER_SIZE])
        if entry is None:
            raise self._header_error(data)
        writer, reader, version = entry
        if reader is None and self._plan is not None:
            try:
                found, end = read(self._plan, data, HEADER_SIZE)
            except Exception:  # Unfit: fastavro reads it again below, and says what is wrong
                pass
            else:
                if end == len(data):
                    record_read: dict[str, Any] = found
                    return record_read
        buf = BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record: dict[str, Any] = schemaless_reader(buf, writer, reader)  # type: ignore[assignment]
        except SchemaResolutionError as exc:
            # The record is fine; our deployed versions are not compatible. Dead-letter it
            # so it can be replayed once the schemas are fixed.
            raise DecodeError(
                f"a '{self.subject}' v{version.version} record cannot be read as "
                f"v{self.latest.version} ({_describe(exc)}): the deployed schema versions are "
                "incompatible; fix them (python -m touchpoint.schemas.compat) and replay",
                code="incompatible_schema",
            ) from exc
        except Exception as exc:  # fastavro raises many types on corrupt input; all mean the same
            raise DecodeError(
                f"body does not decode as a '{self.subject}' v{version.version} record "
                f"({_describe(exc)}): the value is truncated or corrupt",
                code="undecodable",
            ) from exc
        if _maybe_wide(data):
            wide = _wide_varint(data, writer, self._named[data[2:HEADER_SIZE]])
            if wide is not None:
                raise DecodeError(
                    f"'{wide}' of a '{self.subject}' v{version.version} record is an integer "
                    "wider than 64 bits (a varint of more than 10 bytes), which no Avro int or "
                    "long can be: the producer's Avro encoder is broken",
                    code="undecodable",
                )
        left = len(data) - buf.tell()
        if left:
            raise DecodeError(
                f"{_bytes(left)} left over after a '{self.subject}' v{version.version} record: "
                "the value is corrupt, or the producer wrote a body that does not match "
                "the schema its fingerprint names",
                code="undecodable",
            )
        return record

    def _unpack(self, data: bytes) -> dict[str, Any]:
        entry = self._readers.get(data[2:HEADER_SIZE])
        if entry is None:
            raise self._header_error(data)
        version = entry[2]
        try:
            loaded = orjson.loads(data[HEADER_SIZE:])
        except orjson.JSONDecodeError as exc:
            raise DecodeError(
                f"body of a packed '{self.subject}' v{version.version} record is not JSON "
                f"({_describe(exc)}): the value is truncated or corrupt", code="undecodable",
            ) from exc
        if not isinstance(loaded, dict):
            raise DecodeError(f"body of a packed '{self.subject}' v{version.version} record "
                              "is not a JSON object: the value is corrupt", code="undecodable")
        if entry[1] is None:  # the latest version: normally only null fields are left out
            record = dict(self._nulls)
            record.update(loaded)
            if len(record) == len(self._defaults):
                return record
        record = {}
        for name, default in self._defaults.items():
            if name in loaded:
                record[name] = loaded[name]
            elif default is not _MISSING:
                record[name] = copy.deepcopy(default)  # a default {} must not be shared
            elif entry[1] is None:
                raise DecodeError(
                    f"packed '{self.subject}' v{version.version} record has no '{name}', "
                    "which is required: the value is corrupt", code="undecodable")
            else:
                raise DecodeError(
                    f"a packed '{self.subject}' v{version.version} record cannot be read as "
                    f"v{self.latest.version}: it has no '{name}', which has no default; fix "
                    "the schema versions (python -m touchpoint.schemas.compat) and replay",
                    code="incompatible_schema")
        return record

    def _header_error(self, data: bytes | None) -> DecodeError:
        """Explain why ``data`` has no usable single-object header for this subject."""
        if not data:
            return DecodeError(
                "value is empty: an empty message or tombstone, not an Avro single-object "
                f"record; {_PUBLISH_HINT}",
                code="undecodable",
            )
        if data[:2] not in (MARKER, PACKED_MARKER) and not MARKER.startswith(data):
            return DecodeError(_not_single_object(data), code="undecodable")
        if len(data) < HEADER_SIZE:
            return DecodeError(
                f"value is {_bytes(len(data))}, shorter than the {HEADER_SIZE}-byte single-object "
                "header (C3 01 and an 8-byte schema fingerprint): the value was truncated",
                code="undecodable",
            )
        fingerprint = data[2:HEADER_SIZE]
        other = self.registry.by_fingerprint(fingerprint)
        if other is not None:
            return DecodeError(
                f"record is a '{other.subject}' record (schema v{other.version}), this topic "
                f"expects '{self.subject}': the producer published to the wrong topic",
                code="wrong_subject",
            )
        known = self.registry.versions(self.subject)
        listed = ", ".join(f"v{v.version} {v.fingerprint_hex}" for v in known)
        return DecodeError(
            f"writer schema fingerprint {format_fingerprint(fingerprint)} is not one of the "
            f"{len(known)} known versions of '{self.subject}' ({listed}): deploy the schema "
            "version the producer uses, or have it publish with a deployed one",
            code="unknown_schema",
        )

    def _encode_error(self, record: Any, exc: Exception | None) -> EncodeError:
        """Find the field of ``record`` that does not fit the latest schema and name it."""
        where = f"'{self.subject}' record (schema v{self.latest.version})"
        if not isinstance(record, Mapping):
            return EncodeError(f"{where} must be a dict, not {type(record).__name__}")
        extra = sorted(set(record) - self._fields)
        if extra:
            return EncodeError(
                f"{where} has field '{extra[0]}' that the schema does not have: fix the name, "
                "or add the field as optional in a new schema version",
                field=extra[0],
            )
        written = {field["name"]: field["type"] for field in self.latest.schema["fields"]}
        for field in self._schema["fields"]:
            name = field["name"]
            value = record.get(name, field.get("default", _MISSING))
            if value is _MISSING:
                return EncodeError(f"{where} has no '{name}', which is required", field=name)
            try:
                fits = validate(  # type: ignore[call-arg]
                    value, field["type"], raise_errors=False, disable_tuple_notation=True
                )
            except Exception:
                fits = False
            if not fits:
                hint = ""
                if isinstance(value, datetime | date):
                    hint = ": pass epoch milliseconds as an int"
                return EncodeError(
                    f"{where} field '{name}' is {_REPR.repr(value)} ({type(value).__name__}), "
                    f"the schema wants {json.dumps(written[name])}{hint}",
                    field=name,
                )
        detail = f": {_describe(exc)}" if exc is not None else ""
        return EncodeError(f"{where} does not fit the schema{detail}")


def _not_single_object(data: bytes) -> str:
    """Say what ``data`` looks like when it does not start with the single-object marker."""
    first = data[0]
    start = data.lstrip()[:1]
    if start in (b"{", b"[", b'"'):
        return (
            f"value starts with 0x{first:02x} ({chr(data[0])!r}), not the Avro single-object "
            f"marker C3 01: the producer sent JSON? {_PUBLISH_HINT[0].upper()}{_PUBLISH_HINT[1:]}"
        )
    if first == 0 and len(data) >= 5:
        schema_id = int.from_bytes(data[1:5], "big")
        return (
            f"value starts with 0x00, the Confluent Schema Registry framing (schema id "
            f"{schema_id}), not the Avro single-object marker C3 01: {_PUBLISH_HINT}"
        )
    shown = " ".join(f"{b:02X}" for b in data[:2])
    return (
        f"value starts with {shown}, not the Avro single-object marker C3 01: the producer "
        f"does not use single-object encoding; {_PUBLISH_HINT}"
    )


# fastavro's compiled reader keeps a varint in 64 bits: the bits of a longer one are
# dropped, so a crafted 11-byte varint can read as any small number. Only a body with 9
# bytes in a row that have the high bit set can hold one (text often does, e.g. Chinese
# in UTF-8); those bodies are walked by _wide_varint. They are found by mapping each
# byte to whether its high bit is set and looking for nine in a row: two passes in C,
# a fifth to a seventh of a regular expression's time on an event (113 to 450 bytes).
_HIGH_BIT: Final = bytes(1 if b >= 0x80 else 0 for b in range(256))
_NINE_HIGH: Final = b"\x01" * 9


def _maybe_wide(data: bytes) -> bool:
    """Whether the body of ``data`` has nine bytes in a row with the high bit set."""
    return data.translate(_HIGH_BIT).find(_NINE_HIGH, HEADER_SIZE) != -1


class _Wide(Exception):
    """A varint that does not fit 64 bits, in the field named."""


def _wide_varint(data: bytes, schema: Any, named: Mapping[str, Any]) -> str | None:
    """The field of a decoded body holding a varint wider than 64 bits, or ``None``.

    Walks the body as ``schema`` lays it out, reading only varints (values, lengths,
    counts, branches) and skipping everything else by its size.
    """
    try:
        _skip(data, HEADER_SIZE, schema, named, "(record)")
    except _Wide as exc:
        return str(exc)
    except (IndexError, KeyError, ValueError):
        return None  # the body is corrupt: decoding found that already, or will
    return None


def _varint(data: bytes, pos: int, where: str) -> tuple[int, int]:
    """Read a zigzag varint at ``pos``: (value, position after it); ``_Wide`` past 64 bits."""
    byte = data[pos]
    if byte < 0x80:  # most are one byte: union branches, lengths of short text, small ints
        return (byte >> 1) ^ -(byte & 1), pos + 1
    accumulated = shift = 0
    for count in range(10):
        byte = data[pos + count]
        accumulated |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if count == 9 and byte > 1:  # the 10th byte has room for bit 63 only
                break
            return (accumulated >> 1) ^ -(accumulated & 1), pos + count + 1
        shift += 7
    raise _Wide(where)


def _skip(data: bytes, pos: int, schema: Any, named: Mapping[str, Any], where: str) -> int:
    """Position after the value of ``schema`` at ``pos``."""
    if isinstance(schema, list):
        branch, pos = _varint(data, pos, where)
        if not 0 <= branch < len(schema):
            raise IndexError(branch)
        schema = schema[branch]
    if isinstance(schema, str):
        if schema in named:
            return _skip(data, pos, named[schema], named, where)
        kind = schema
    else:
        kind = schema["type"]
        if not isinstance(kind, str) or kind in named:
            return _skip(data, pos, kind, named, where)
    if kind == "string" or kind == "bytes":
        size, pos = _varint(data, pos, where)
        if size < 0:
            raise ValueError(size)
        return pos + size
    if kind == "null":
        return pos
    if kind == "int" or kind == "long" or kind == "enum":
        return _varint(data, pos, where)[1]
    fixed = {"boolean": 1, "float": 4, "double": 8}.get(kind)
    if fixed is not None:
        return pos + fixed
    if kind == "fixed":
        return pos + int(schema["size"])
    if kind == "record":
        for field in schema["fields"]:
            pos = _skip(data, pos, field["type"], named, field["name"])
        return pos
    if kind in ("array", "map"):
        items = schema["items"] if kind == "array" else schema["values"]
        while True:
            count, pos = _varint(data, pos, where)
            if count == 0:
                return pos
            if count < 0:  # a block with its size in bytes after the count
                count = -count
                pos = _varint(data, pos, where)[1]
            if count > len(data) - pos:
                raise ValueError(count)  # more items than bytes left: corrupt
            for _ in range(count):
                if kind == "map":
                    pos = _skip(data, pos, "string", named, where)
                pos = _skip(data, pos, items, named, where)
    raise ValueError(f"unknown Avro type {kind!r}")


def _collect_named(schema: Any, named: dict[str, Any]) -> None:
    """Add the named types defined in a fastavro-parsed ``schema`` to ``named``."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, named)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            named.setdefault(schema["name"], schema)
        for field in schema.get("fields", ()):
            _collect_named(field["type"], named)
        for key in ("items", "values"):
            if key in schema:
                _collect_named(schema[key], named)
        if isinstance(schema.get("type"), dict | list):
            _collect_named(schema["type"], named)


def _nullable(schema: Any) -> bool:
    """Whether a field of this Avro type can be null."""
    return schema == "null" or (isinstance(schema, list) and "null" in schema)


def _bytes(count: int) -> str:
    """Say ``1 byte`` or ``N bytes``."""
    return f"{count} byte" if count == 1 else f"{count} bytes"


def _describe(exc: BaseException) -> str:
    """One short line for an exception from a library: its type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {_clip(text)}" if text else type(exc).__name__


def _clip(text: str, limit: int = 120) -> str:
    """Shorten ``text`` for a one-line message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@cache
def codec_for(subject: str) -> Codec:
    """Return the codec for ``subject`` in the package's schemas, built once per subject."""
    return Codec(subject, registry=default_registry())


def subjects() -> tuple[str, ...]:
    """Return every subject in the package's schemas, sorted."""
    return default_registry().subjects()


def subject_of(data: bytes | None) -> str | None:
    """The subject a single-object (or packed) record was written as, or ``None`` if unknown.

    Topics that carry more than one kind of record (events and merges on
    ``<app_id>-resolved``) dispatch on this before decoding.
    """
    if not data or len(data) < HEADER_SIZE or data[:2] not in (MARKER, PACKED_MARKER):
        return None
    fingerprint = bytes(data[2:HEADER_SIZE])
    subject = _SUBJECT_BY_FINGERPRINT.get(fingerprint)
    if subject is None:
        found = default_registry().by_fingerprint(fingerprint)
        if found is None:
            return None
        subject = _SUBJECT_BY_FINGERPRINT[fingerprint] = found.subject
    return subject


#: :func:`subject_of`'s answers, as the package's registry gave them: no larger than the
#: registry (an unknown fingerprint is not kept). The registry's own lookup, through its
#: cached loader, was most of the function's cost, and it runs for every record of
#: ``<app_id>-resolved``.
_SUBJECT_BY_FINGERPRINT: dict[bytes, str] = {}
