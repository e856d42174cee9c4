"""Build hook: compile the worker's pure-Python hot modules with mypyc.

Everything else about the package is in ``pyproject.toml``. The modules in
``touchpoint.compiled.MODULES`` (business rules and the Avro codec, which every event
passes through) are compiled to C extensions next to their sources, the way black and
mypy ship themselves; the worker then spends less CPU per event
(docs/design/compiled.md). ``TOUCHPOINT_COMPILE=0`` installs them as plain Python and
removes extensions an earlier build left. ``touchpoint/compiled.py`` makes sure an
extension older than its source is never imported.

mypyc names a module after its path, and the repository keeps ``touchpoint.streams``
in ``streams/`` (``package-dir`` in pyproject.toml), so the sources are compiled from a
tree of links laid out as the installed package (``build/mypyc-src``).
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
from pathlib import Path

from setuptools import setup


def _modules() -> tuple[str, ...]:
    """``touchpoint.compiled.MODULES``, read without importing the package."""
    found: dict[str, object] = {"__name__": "touchpoint.compiled"}
    exec((Path(__file__).parent / "touchpoint" / "compiled.py").read_text(), found)
    return found["MODULES"]  # type: ignore[return-value]


#: Repository folders by the package they hold (pyproject.toml's package-dir)
_PACKAGES = {"schemas": "schemas", "streams": "streams", "sinks": "sinks"}


def _linked_tree(root: Path) -> Path:
    """``build/mypyc-src/touchpoint``: the installed package's layout, as links."""
    staging = root / "build" / "mypyc-src"
    shutil.rmtree(staging, ignore_errors=True)
    package = staging / "touchpoint"
    package.mkdir(parents=True)
    for entry in (root / "touchpoint").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in _PACKAGES.items():
        (package / name).symlink_to(root / folder)
    return staging


def _remove_built(root: Path) -> None:
    """Delete extensions an earlier build left beside the sources: they would still run."""
    folders = {root.joinpath(*module.split(".")[1:]).parent for module in _modules()}
    for folder in {*folders, root / "touchpoint"}:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            for built in folder.glob(f"*{suffix}"):
                built.unlink()


def _extensions() -> list:
    root = Path(__file__).resolve().parent
    if os.environ.get("TOUCHPOINT_COMPILE", "1") == "0":
        _remove_built(root)
        return []
    from mypyc.build import mypycify

    staging = _linked_tree(root)
    sources = [str(staging.joinpath(*module.split(".")).with_suffix(".py"))
               for module in _modules()]
    # The build environment has none of the runtime dependencies, so ignores that matter
    # with them installed (`make lint`) look unused here; no cache, so no earlier
    # build's view of other modules leaks in.
    options = ["--no-warn-unused-ignores", "--cache-dir=/dev/null"]
    return mypycify([*options, *sources], opt_level="3", group_name="touchpoint._native",
                    target_dir=str(root / "build" / "mypyc"))


setup(ext_modules=_extensions())
