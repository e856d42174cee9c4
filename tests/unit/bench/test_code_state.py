"""The benchmarks' code fingerprint: it changes with the code the worker runs, not with bench/.

A benchmark prints the fingerprint beside its figures so that two runs can be told apart as
runs of the same or of different code; a fingerprint blind to committed changes would label
every clean tree alike.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "profiles_bench.py"


@pytest.fixture
def bench(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("profiles_bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "REPO", tmp_path)
    return module


def git(repo: Path, *cmd: str) -> None:
    subprocess.run(["git", "-C", str(repo), *cmd], check=True, capture_output=True)


def commit(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", path)


def test_a_committed_change_outside_bench_changes_the_fingerprint(bench, tmp_path):
    git(tmp_path, "init", "-q")
    commit(tmp_path, "streams/stage.py", "one = 1\n")
    before = bench.code_state()
    commit(tmp_path, "streams/stage.py", "one = 2\n")
    after = bench.code_state()

    assert before[1] != after[1]
    assert "uncommitted" not in after[0]


def test_a_change_in_bench_leaves_the_fingerprint(bench, tmp_path):
    git(tmp_path, "init", "-q")
    commit(tmp_path, "streams/stage.py", "one = 1\n")
    before = bench.code_state()
    commit(tmp_path, "bench/run.py", "fast = True\n")
    (tmp_path / "bench" / "run.py").write_text("fast = False\n")

    assert bench.code_state()[1] == before[1]


def test_an_uncommitted_change_is_named_and_fingerprinted(bench, tmp_path):
    git(tmp_path, "init", "-q")
    commit(tmp_path, "streams/stage.py", "one = 1\n")
    before = bench.code_state()
    (tmp_path / "streams" / "stage.py").write_text("one = 3\n")
    after = bench.code_state()

    assert after[1] != before[1]
    assert after[0].endswith(f"+ uncommitted changes (code fingerprint {after[1]})")
