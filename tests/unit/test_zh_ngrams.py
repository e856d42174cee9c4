"""The Chinese character n-gram model measured by the sentiment bench (bench/zh_ngrams.py)."""

# Chinese text is written with full-width punctuation, which RUF001 flags.
# ruff: noqa: RUF001

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.sentiment import Sentiment

BENCH = Path(__file__).resolve().parents[2] / "bench"
FLAG = Rules.load().negative_text.threshold


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zh_ngrams", BENCH / "zh_ngrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("zh_ngrams", module)
    spec.loader.exec_module(module)
    return module


zh_ngrams = _module()


@pytest.fixture(scope="module")
def model() -> Any:
    return zh_ngrams.NgramModel.load()


@pytest.fixture(scope="module")
def analyzer() -> Sentiment:
    return Sentiment()


def test_the_committed_model_loads_and_stays_small(model: Any) -> None:
    assert zh_ngrams.MODEL_PATH.stat().st_size < 400_000
    assert len(model.weights) > 10_000
    assert model.combine_weight > 0


def test_ngrams_are_normalised() -> None:
    assert zh_ngrams.ngrams("好 A1") == ["好", "a", "0", "好a", "a0", "好a0"]
    assert zh_ngrams.ngrams("１２３元") == zh_ngrams.ngrams("45元")


def test_a_missing_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "absent.tsv.gz"
    with pytest.raises(zh_ngrams.ModelError, match=r"absent\.tsv\.gz.*train_zh_model"):
        zh_ngrams.NgramModel.load(missing)


@pytest.mark.parametrize("content", [
    b"not gzip at all",
    gzip.compress(b""),
    gzip.compress(b"another-format\tweight=1\toffset=0\n0.1\n"),
    gzip.compress(b"touchpoint-zh-ngrams-1\toffset=0\n0.1\n"),  # no weight
    gzip.compress(b"touchpoint-zh-ngrams-1\tweight=1\toffset=0\n0.1\n"),  # nor gated ones
    gzip.compress(b"touchpoint-zh-ngrams-1\tweight=1\toffset=0\nbias\n"),
    gzip.compress("touchpoint-zh-ngrams-1\tweight=1\toffset=0\n0.1\n好\n".encode()),
    gzip.compress(b"\xff\xfe"),
])
def test_a_corrupt_model_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.tsv.gz"
    path.write_bytes(content)
    with pytest.raises(zh_ngrams.ModelError, match="cannot be read"):
        zh_ngrams.NgramModel.load(path)


def test_a_written_model_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "model.tsv.gz"
    path.write_bytes(gzip.compress(
        "touchpoint-zh-ngrams-1\tweight=0.5\toffset=1\tgated_weight=2\tgated_offset=0\t"
        "l2=0.001\n-0.25\n差\t2.0\n好\t-1.5\n".encode()))
    model = zh_ngrams.NgramModel.load(path)
    assert model.logit("差差") == pytest.approx(1.75)  # each distinct n-gram once
    assert model.logit("不好") == pytest.approx(-1.75)
    assert (model.combine_weight, model.combine_offset) == (0.5, 1.0)
    assert (model.gated_weight, model.gated_offset) == (2.0, 0.0)
    assert model.gated(0.0, "差") == 0.0  # nothing for the model to strengthen
    assert model.gated(-0.3, "差") < model.combine(-0.3, "差") < -0.3


def test_combination_keeps_the_lexicon_score_at_zero_weight() -> None:
    for value in (-0.9, -0.2, 0.0, 0.4):
        assert zh_ngrams.combine(value, 3.0, 0.0, 0.0) == pytest.approx(value)
    assert -1 < zh_ngrams.combine(-1.0, 50.0, 2.0, 0.0) < -0.99
    assert 0.99 < zh_ngrams.combine(1.0, -50.0, 2.0, 0.0) < 1


@pytest.mark.parametrize("text", [
    "希望尽快处理",  # polite complaint: the construction still counts
    "不是很满意",  # negation over a degree word
    "质量太差了，再也不买了",
    "电池不耐用，用半天就没电了",
])
def test_combined_flags_complaints(model: Any, analyzer: Sentiment, text: str) -> None:
    assert model.combine(analyzer.score(text), text) <= FLAG
    assert model.gated(analyzer.score(text), text) <= FLAG


@pytest.mark.parametrize("text", ["服务很好，谢谢", "房间干净，早餐丰富", "询问门店营业时间。"])
def test_combined_leaves_praise_and_facts_alone(model: Any, analyzer: Sentiment,
                                                text: str) -> None:
    assert model.combine(analyzer.score(text), text) > FLAG
    assert model.gated(analyzer.score(text), text) > FLAG


def test_combined_flags_a_polite_request_the_lexicon_does_not(model: Any,
                                                              analyzer: Sentiment) -> None:
    # Why the model is not in the pipeline: trained on reviews, it has no neutral class
    # and reads a polite request as a complaint (docs/design/signals.md, "Text").
    text = "麻烦帮我查一下订单"
    assert analyzer.score(text) == 0.0
    assert model.combine(0.0, text) <= FLAG
    assert model.gated(0.0, text) == 0.0  # the gated way leaves it to the lexicon
