"""Schema registry: every ``avro/<subject>/v<N>.avsc`` parsed once, by subject and fingerprint.

Each schema version is identified on the wire by the CRC-64-AVRO fingerprint of its
Parsing Canonical Form. The registry is built once (``default_registry()``) from the
files shipped in this package, or from any folder with the same layout
(``Registry.load(root)``) to try a schema change before it is deployed. The ``.avsc``
files keep their ``logicalType`` annotations for other readers, but
``SchemaVersion.parsed``, the schema the codec uses, has them removed, so a
``timestamp-millis`` field is an ``int`` of epoch milliseconds in and out; the
fingerprint is the same either way (the canonical form strips them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fingerprint
from fastavro.schema import to_parsing_canonical_form

from touchpoint.exceptions import SchemaError

__all__ = [
    "Registry",
    "SchemaVersion",
    "default_registry",
    "format_fingerprint",
    "physical_schema",
]

_SUBJECT = re.compile(r"[a-z][a-z0-9_]*")
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


def format_fingerprint(fingerprint: bytes) -> str:
    """Show an 8-byte wire fingerprint as the 64-bit Rabin value in hex, e.g. ``0x1f3a...``.

    The wire carries the value little-endian; this is the number Avro's Java
    ``SchemaNormalization.parsingFingerprint64`` returns, written as unsigned hex.
    """
    return f"0x{int.from_bytes(fingerprint, 'little'):016x}"


def physical_schema(schema: Any) -> Any:
    """Return a copy of a schema (JSON form) with every ``logicalType`` annotation removed.

    Only type positions are rewritten; default values and docs are copied as they are.
    """
    if isinstance(schema, list):
        return [physical_schema(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: value for key, value in schema.items() if key != "logicalType"}
    if "fields" in out:
        out["fields"] = [
            {**field, "type": physical_schema(field["type"])} if isinstance(field, dict) else field
            for field in out["fields"]
        ]
    for key in ("items", "values"):
        if key in out:
            out[key] = physical_schema(out[key])
    if isinstance(out.get("type"), dict | list):
        out["type"] = physical_schema(out["type"])
    return out


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One published version of one subject's schema, parsed and fingerprinted."""

    subject: str
    version: int
    source: str
    """Where the schema was read from (a file path), for messages."""
    schema: Mapping[str, Any]
    """The schema as written in the file (docs and logical types included)."""
    parsed: dict[str, Any]
    """fastavro-parsed physical schema (no logical types): what the codec uses."""
    canonical_form: str
    fingerprint: bytes
    """CRC-64-AVRO of ``canonical_form``: 8 bytes, little-endian, as on the wire."""

    @property
    def name(self) -> str:
        """Full name of the record, e.g. ``touchpoint.WebTouchpoint``."""
        return str(self.parsed["name"])

    @property
    def field_names(self) -> tuple[str, ...]:
        """The record's field names in schema order."""
        return tuple(field["name"] for field in self.parsed["fields"])

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as people see it in messages (``format_fingerprint``)."""
        return format_fingerprint(self.fingerprint)

    @classmethod
    def from_json(cls, subject: str, version: int, text: str, *, source: str) -> SchemaVersion:
        """Parse one schema file's text; raise ``SchemaError`` naming ``source`` if it is bad."""
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise SchemaError(f"{source}: not valid JSON: {exc}") from exc
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise SchemaError(
                f"{source}: the top-level schema must be a record "
                f'({{"type": "record", "name": ..., "fields": [...]}})'
            )
        try:
            # Canonical form and fingerprint come from the schema as written; the
            # annotation-free copy must give the same form (checked in the tests).
            canonical_form = to_parsing_canonical_form(parse_schema(schema))
            parsed = cast(dict[str, Any], parse_schema(physical_schema(schema)))
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise SchemaError(f"{source}: not a valid Avro schema: {exc}") from exc
        return cls(
            subject=subject,
            version=version,
            source=source,
            schema=schema,
            parsed=parsed,
            canonical_form=canonical_form,
            fingerprint=bytes.fromhex(_fingerprint(canonical_form, "CRC-64-AVRO")),
        )


class Registry:
    """Every version of every subject, by subject and by writer-schema fingerprint."""

    def __init__(self, versions: list[SchemaVersion], *, root: str = "") -> None:
        """Index ``versions``; raise ``SchemaError`` on gaps or a fingerprint in two subjects.

        Most callers want ``Registry.load`` or ``default_registry`` instead.
        """
        self.root = root
        by_subject: dict[str, list[SchemaVersion]] = {}
        for version in sorted(versions, key=lambda v: (v.subject, v.version)):
            by_subject.setdefault(version.subject, []).append(version)
        for subject, listed_versions in by_subject.items():
            numbers = [v.version for v in listed_versions]
            if numbers != list(range(1, len(numbers) + 1)):
                listed = ", ".join(f"v{n}" for n in numbers)
                raise SchemaError(
                    f"{root or 'registry'}: subject '{subject}' has versions {listed}; "
                    f"expected v1 to v{max(numbers)} with none missing: every published "
                    "version must be kept"
                )
        self._subjects = {subject: tuple(vs) for subject, vs in sorted(by_subject.items())}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for subject_versions in self._subjects.values():
            for version in subject_versions:
                seen = self._by_fingerprint.get(version.fingerprint)
                if seen is None:
                    self._by_fingerprint[version.fingerprint] = version
                elif seen.subject != version.subject:
                    raise SchemaError(
                        f"{version.source}: same fingerprint {version.fingerprint_hex} as "
                        f"{seen.source}, so a reader could not tell a '{version.subject}' "
                        f"record from a '{seen.subject}' one: give the records different "
                        "names or fields"
                    )
                # Within one subject, a version that only changes docs or defaults keeps
                # its predecessor's fingerprint; both decode the same, the earliest wins.

    @classmethod
    def load(cls, root: str | os.PathLike[str] | Traversable | None = None) -> Registry:
        """Read every ``<subject>/v<N>.avsc`` under ``root`` (default: this package's ``avro/``).

        Entries starting with ``.`` or ``_`` are skipped, as are files not ending in
        ``.avsc``; anything else that does not fit the layout is an error.
        """
        folder: Traversable
        if root is None:
            folder = files(__package__ or "touchpoint.schemas").joinpath("avro")
        elif isinstance(root, str | os.PathLike):
            folder = Path(root)
        else:
            folder = root
        if not folder.is_dir():
            raise SchemaError(f"{folder}: schema folder not found")
        versions: list[SchemaVersion] = []
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.startswith((".", "_")):
                continue
            if not entry.is_dir():
                if entry.name.endswith(".avsc"):
                    raise SchemaError(
                        f"{entry}: schema files go in a folder per subject, "
                        f"e.g. {folder}/<subject>/v1.avsc"
                    )
                continue
            if not _SUBJECT.fullmatch(entry.name):
                raise SchemaError(
                    f"{entry}: subject folder names are lower-case letters, digits and _"
                )
            found = 0
            for file in sorted(entry.iterdir(), key=lambda e: e.name):
                if not file.name.endswith(".avsc"):
                    continue
                match = _VERSION_FILE.fullmatch(file.name)
                if match is None:
                    raise SchemaError(f"{file}: schema files are named v1.avsc, v2.avsc, ...")
                text = file.read_text(encoding="utf-8")
                versions.append(
                    SchemaVersion.from_json(entry.name, int(match[1]), text, source=str(file))
                )
                found += 1
            if not found:
                raise SchemaError(f"{entry}: no v1.avsc in subject folder")
        if not versions:
            raise SchemaError(f"{folder}: no schemas found (expected <subject>/v1.avsc)")
        return cls(versions, root=str(folder))

    def subjects(self) -> tuple[str, ...]:
        """All subjects, sorted."""
        return tuple(self._subjects)

    def versions(self, subject: str) -> tuple[SchemaVersion, ...]:
        """Every version of ``subject``, oldest first."""
        try:
            return self._subjects[subject]
        except KeyError:
            raise SchemaError(
                f"no schema subject '{subject}' in {self.root or 'the registry'}; "
                f"known subjects: {', '.join(self._subjects)}"
            ) from None

    def latest(self, subject: str) -> SchemaVersion:
        """Return the newest version of ``subject``: the one we write with and read into."""
        return self.versions(subject)[-1]

    def get(self, subject: str, version: int) -> SchemaVersion:
        """Version ``version`` (1-based) of ``subject``."""
        found = self.versions(subject)
        if not 1 <= version <= len(found):
            raise SchemaError(
                f"subject '{subject}' has versions v1 to v{len(found)}, not v{version}"
            )
        return found[version - 1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """Return the version whose wire fingerprint is ``fingerprint`` (8 bytes), or None."""
        return self._by_fingerprint.get(fingerprint)

    def __iter__(self) -> Iterator[SchemaVersion]:
        """Every version of every subject, by subject then version."""
        for found in self._subjects.values():
            yield from found

    def __len__(self) -> int:
        """How many schema versions the registry holds."""
        return sum(len(found) for found in self._subjects.values())

    def __repr__(self) -> str:
        """Show where the registry came from and what it holds."""
        return f"<Registry {self.root!r}: {len(self._subjects)} subjects, {len(self)} versions>"


@cache
def default_registry() -> Registry:
    """Return the registry of the schemas shipped in this package, loaded on first use."""
    return Registry.load()
