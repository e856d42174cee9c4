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
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
#: The compiled modules' shared library, ``touchpoint/_native__mypyc…``
NATIVE = "touchpoint._native"


def _compiled() -> dict[str, Any]:
    """``touchpoint/compiled.py``'s names (the modules and their places), without the package."""
    found: dict[str, Any] = {"__name__": "touchpoint.compiled"}
    exec((ROOT / "touchpoint" / "compiled.py").read_text(), found)
    return found


def _linked_tree() -> Path:
    """``build/mypyc-src/touchpoint``: the installed package's layout, as links.

    The subpackages kept outside ``touchpoint/`` are pyproject.toml's package-dir.
    """
    staging = ROOT / "build" / "mypyc-src"
    shutil.rmtree(staging, ignore_errors=True)
    package = staging / "touchpoint"
    package.mkdir(parents=True)
    for entry in (ROOT / "touchpoint").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    with (ROOT / "pyproject.toml").open("rb") as fh:
        folders = tomllib.load(fh)["tool"]["setuptools"]["package-dir"]
    for name, folder in folders.items():
        if name.count(".") == 1:  # touchpoint.streams = "streams"
            (package / name.split(".")[1]).symlink_to(ROOT / folder)
    return package


def _remove_built(compiled: dict[str, Any]) -> None:
    """Delete extensions an earlier build left beside the sources: they would still run."""
    package = ROOT / "touchpoint"
    for module in compiled["MODULES"]:
        source = compiled["source_path"](module, package)
        built = source and compiled["extension_of"](source)
        if built:
            built.unlink()
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:  # the modules' shared library
        for built in package.glob(f"{NATIVE.rsplit('.', 1)[1]}__mypyc*{suffix}"):
            built.unlink()


def _extensions() -> list[Any]:
    compiled = _compiled()
    if os.environ.get("TOUCHPOINT_COMPILE", "1") == "0":
        _remove_built(compiled)
        return []
    from mypyc.build import mypycify

    package = _linked_tree()
    sources = [str(compiled["source_path"](module, package)) for module in compiled["MODULES"]]
    # The build environment has none of the runtime dependencies, so ignores that matter
    # with them installed (`make lint`) look unused here; no cache, so no earlier
    # build's view of other modules leaks in.
    options = ["--no-warn-unused-ignores", "--cache-dir=/dev/null"]
    return mypycify([*options, *sources], opt_level="3", group_name=NATIVE,
                    target_dir=str(ROOT / "build" / "mypyc"))


setup(ext_modules=_extensions())
