"""Which build of the compiled modules runs: their C extensions or their Python sources.

``setup.py`` compiles the modules in :data:`MODULES` with mypyc into C extensions beside
their sources (``make setup``; docs/design/compiled.md). Python imports an extension
before a source of the same name, so an extension older than its source (the file edited
or checked out since the last build) would run code that is no longer in the file.
:func:`install`, run by ``touchpoint/__init__.py`` before any of them is imported, then
makes every one of them load from its Python source, and says so once. The compiled
modules call each other directly, not through imports, so it is all of them or none.
``TOUCHPOINT_PURE_PYTHON=1`` asks for the sources on purpose (to rule the compiled build
out when hunting a bug; every test passes both ways).

This module imports nothing of touchpoint: ``setup.py`` runs it for :data:`MODULES` and
the modules' places.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["MODULES", "PURE_ENV", "decide", "extension_of", "install", "source_path",
           "state"]

#: The compiled modules. Each must pass mypy; integers stay integers where a float is
#: annotated only if the annotation says ``int | float`` (compiled code converts them).
MODULES = (
    "touchpoint.schemas.binary",
    "touchpoint.schemas.codec",
    "touchpoint.schemas.contract",
    "touchpoint.streams.rules.aggregates",
    "touchpoint.streams.rules.attribution",
    "touchpoint.streams.rules.campaigns",
    "touchpoint.streams.rules.complaint_replay",
    "touchpoint.streams.rules.complaints",
    "touchpoint.streams.rules.identity",
    "touchpoint.streams.rules.minute_rows",
    "touchpoint.streams.rules.normalize",
    "touchpoint.streams.rules.profile",
    "touchpoint.streams.rules.profile_batches",
    "touchpoint.streams.rules.rows",
    "touchpoint.streams.rules.segments",
    "touchpoint.streams.rules.signals",
    "touchpoint.streams.runtime.partition",
)
PURE_ENV = "TOUCHPOINT_PURE_PYTHON"

log = logging.getLogger(__name__)
_state = "not built"


def state() -> str:
    """``compiled``, ``not built``, ``stale: ...`` or ``pure Python (TOUCHPOINT_PURE_PYTHON)``."""
    return _state


def source_path(module: str, package_dir: Path) -> Path | None:
    """Where ``module``'s source is: in the repository layout or the installed one."""
    relative = Path(*module.split(".")[1:]).with_suffix(".py")
    for root in (package_dir.parent, package_dir):  # streams/ beside touchpoint/, or inside
        if (root / relative).is_file():
            return root / relative
    return None


def extension_of(source: Path) -> Path | None:
    """The extension built beside ``source``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        found = source.with_suffix(suffix)
        if found.is_file():
            return found
    return None


class _Sources(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' Python sources, before any finder finds an extension."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(
            fullname, source)


def decide(package_dir: Path, *, pure: bool) -> tuple[str, dict[str, Path]]:
    """Which build runs (:func:`state`'s words), and the sources to load when not compiled."""
    sources = {m: p for m in MODULES if (p := source_path(m, package_dir)) is not None}
    built = {m: e for m, p in sources.items() if (e := extension_of(p)) is not None}
    if not built:
        return "not built", {}
    if pure:
        return f"pure Python ({PURE_ENV})", sources
    stale = sorted(m for m, e in built.items() if e.stat().st_mtime < sources[m].stat().st_mtime)
    changed = stale + sorted(set(sources) - set(built))
    if not changed:
        return "compiled", {}
    more = " and more" if len(changed) > 3 else ""
    return (f"stale: {', '.join(changed[:3])}{more} changed since the build; running the "
            "Python sources (`make setup` compiles them again)"), sources


def install(package_dir: Path) -> None:
    """Decide which build runs, and put the sources first when it is not the compiled one."""
    global _state
    _state, sources = decide(package_dir, pure=os.environ.get(PURE_ENV, "") not in ("", "0"))
    if _state.startswith("stale"):
        log.warning("compiled modules %s", _state)
    if sources:
        sys.meta_path.insert(0, _Sources(sources))
