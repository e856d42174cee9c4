"""Schema evolution check: every version must stay readable by, and able to read, its neighbours.

For each subject, version N must be backward compatible with N-1 (N reads what N-1
wrote) and forward compatible (N-1 reads what N writes), so producers and workers can be
upgraded in any order. Because the codec decodes every older version straight into the
latest one, the latest version must also read every older version, not only the one
before it. The check uses the reference ``avro`` package's
``ReaderWriterCompatibilityChecker``, independent of fastavro, which the codec uses.

Run ``python -m touchpoint.schemas.compat [--root FOLDER]`` before publishing a schema:
it prints ``OK`` or one line per problem and exits 1 on problems.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from itertools import pairwise

import avro.schema
import click
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
)

from touchpoint.exceptions import SchemaError

from .registry import Registry, SchemaVersion

__all__ = ["check", "main"]

_FIELD_LOCATION = re.compile(r"/fields/(\d+)(.*)")


def check(registry: Registry) -> list[str]:
    """Return one line per compatibility problem in ``registry``; empty when all is well."""
    problems: list[str] = []
    for subject in registry.subjects():
        versions = registry.versions(subject)
        parsed: dict[int, avro.schema.Schema] = {}
        for version in versions:
            try:
                parsed[version.version] = avro.schema.parse(json.dumps(version.schema))
            except Exception as exc:  # the avro package is stricter than fastavro in places
                problems.append(f"{version.source}: the avro package cannot parse it: {exc}")
        if len(parsed) != len(versions):
            continue
        checker = ReaderWriterCompatibilityChecker()
        latest = versions[-1]
        for older, newer in pairwise(versions):
            problems += _problems(checker, parsed, reader=newer, writer=older, kind="backward")
            problems += _problems(checker, parsed, reader=older, writer=newer, kind="forward")
        for older in versions[:-2]:
            problems += _problems(checker, parsed, reader=latest, writer=older, kind="backward")
    return problems


def _problems(
    checker: ReaderWriterCompatibilityChecker,
    parsed: dict[int, avro.schema.Schema],
    *,
    reader: SchemaVersion,
    writer: SchemaVersion,
    kind: str,
) -> list[str]:
    """Describe why ``reader`` cannot read data written with ``writer``, if it cannot."""
    result: SchemaCompatibilityResult = checker.get_compatibility(
        parsed[reader.version], parsed[writer.version]
    )
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    newer = max(reader.version, writer.version)
    older = min(reader.version, writer.version)
    kinds = ", ".join(sorted({problem.value for problem in result.incompatibilities}))
    messages = "; ".join(sorted(result.messages))
    fields = [field["name"] for field in reader.schema["fields"]]
    places = sorted(result.locations - {"/"}) or ["/"]
    where = ", ".join(_place(location, fields) for location in places)
    return [
        f"{reader.subject} v{newer} is not {kind} compatible with v{older}: "
        f"v{reader.version} cannot read data written with v{writer.version}: "
        f"{kinds or 'incompatible'} ({messages}) at {where}"
    ]


def _place(location: str, fields: list[str]) -> str:
    """Turn a checker location like ``/fields/13/type/1`` into ``field 'dwell_ms' /type/1``."""
    match = _FIELD_LOCATION.fullmatch(location)
    if match is None or int(match[1]) >= len(fields):
        return location
    return f"field '{fields[int(match[1])]}'{match[2]}"


@click.command(help="Check that every schema version is compatible with the one before.")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Folder of <subject>/v<N>.avsc files to check (default: the installed schemas).",
)
def _cli(root: str | None) -> int:
    try:
        registry = Registry.load(root)
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = check(registry)
    for problem in problems:
        click.echo(problem)
    if problems:
        return 1
    click.echo(
        f"OK: {len(registry.subjects())} subjects, {len(registry)} versions, "
        "every version backward and forward compatible with the one before"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check as a command on ``argv`` (default: ``sys.argv``); return the exit status."""
    try:
        status = _cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m touchpoint.schemas.compat",
            standalone_mode=False,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
