"""The compiled build: the same outputs as the Python sources, and never a stale extension."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from touchpoint import compiled

ROOT = Path(__file__).resolve().parents[2]


def _outputs(customers: int, seed: int, *, pure: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.rules_outputs", str(customers), str(seed)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    return done.stdout.splitlines()


@pytest.mark.parametrize("seed", [7, 11])
def test_the_compiled_modules_give_what_their_sources_give(seed: int) -> None:
    if compiled.state() != "compiled":
        pytest.skip(f"compiled modules {compiled.state()}")
    built, sources = (_outputs(300, seed, pure=pure) for pure in (False, True))
    assert len(sources) > 10_000  # ingest, identity, profiles, signals, minutes, rows
    for number, (ours, theirs) in enumerate(zip(built, sources, strict=True)):
        # the first line that differs, whole (a full diff of 10,000 lines helps no one)
        assert ours == theirs, f"line {number + 1} differs"


# --- which build runs -----------------------------------------------------------------------

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _layout(tmp_path: Path, *, built: bool = True) -> Path:
    """A repository layout: touchpoint/ beside schemas/ and streams/, every module built."""
    package = tmp_path / "touchpoint"
    package.mkdir()
    for module in compiled.MODULES:
        source = tmp_path.joinpath(*module.split(".")[1:]).with_suffix(".py")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text("")
        os.utime(source, (1_000, 1_000))
        if built:
            source.with_suffix(SUFFIX).write_bytes(b"")
            os.utime(source.with_suffix(SUFFIX), (2_000, 2_000))
    return package


def test_extensions_newer_than_every_source_are_the_build_that_runs(tmp_path: Path) -> None:
    assert compiled.decide(_layout(tmp_path), pure=False) == ("compiled", {})


def test_one_source_changed_since_the_build_runs_every_module_from_source(
        tmp_path: Path) -> None:
    package = _layout(tmp_path)
    changed = tmp_path / "streams" / "rules" / "profile.py"
    os.utime(changed, (3_000, 3_000))
    state, sources = compiled.decide(package, pure=False)
    assert state.startswith("stale: touchpoint.streams.rules.profile changed since the build")
    assert "make setup" in state
    # all of them: compiled modules call each other directly
    assert sorted(sources) == sorted(compiled.MODULES)
    assert sources["touchpoint.streams.rules.profile"] == changed


def test_a_module_added_to_the_list_but_not_built_is_stale(tmp_path: Path) -> None:
    package = _layout(tmp_path)
    (tmp_path / "schemas" / f"codec{SUFFIX}").unlink()
    state, sources = compiled.decide(package, pure=False)
    assert state.startswith("stale: touchpoint.schemas.codec") and len(sources) == len(
        compiled.MODULES)


def test_the_sources_on_request_and_nothing_to_do_when_not_built(tmp_path: Path) -> None:
    state, sources = compiled.decide(_layout(tmp_path), pure=True)
    assert state == "pure Python (TOUCHPOINT_PURE_PYTHON)" and len(sources) == len(
        compiled.MODULES)
    other = tmp_path / "plain"
    other.mkdir()
    assert compiled.decide(_layout(other, built=False), pure=False) == ("not built", {})


def test_the_installed_layout_is_found_too(tmp_path: Path) -> None:
    # a wheel puts streams/ inside touchpoint/
    (tmp_path / "touchpoint").mkdir()
    _layout(tmp_path / "touchpoint")
    assert compiled.decide(tmp_path / "touchpoint", pure=False)[0] == "compiled"


def test_this_checkout_runs_what_its_state_says() -> None:
    import touchpoint.streams.rules.profile as profile

    loaded = Path(profile.__file__ or "")
    if compiled.state() == "compiled":
        assert loaded.suffix != ".py"
    else:
        assert loaded == ROOT / "streams" / "rules" / "profile.py", compiled.state()
