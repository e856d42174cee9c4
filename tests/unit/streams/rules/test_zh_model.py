"""The character n-gram model that corrects the Chinese lexicon score (rules/zh_model.py)."""

# Chinese text is written with full-width punctuation, which RUF001 flags.
# ruff: noqa: RUF001

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from touchpoint.streams.rules import zh_model
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.sentiment import Sentiment, adjust
from touchpoint.streams.rules.zh_model import ModelError, NgramModel, ngrams

FLAG = Rules.load().negative_text.threshold


@pytest.fixture(scope="module")
def model() -> NgramModel:
    return NgramModel.load()


def moved(model: NgramModel, lexicon_score: float, text: str) -> float:
    """``lexicon_score`` of ``text`` moved by ``model``, as the analyzer does."""
    return adjust(lexicon_score, model.logit(text), model.weight, model.offset, model.cap)


@pytest.fixture(scope="module")
def lexicon() -> Sentiment:
    return Sentiment(model=False)


def test_the_shipped_model_loads_and_stays_small(model: NgramModel) -> None:
    assert zh_model.model_file().stat().st_size < 400_000
    assert len(model.weights) > 10_000
    assert model.weight > 0 and model.cap > 0


def test_ngrams_are_normalised() -> None:
    assert ngrams("好 A1") == ["好", "a", "0", "好a", "a0", "好a0"]
    assert ngrams("１２３元") == ngrams("45元")


def test_a_missing_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"absent\.tsv\.gz.*train_zh_model"):
        NgramModel.load(tmp_path / "absent.tsv.gz")


@pytest.mark.parametrize("content", [
    b"not gzip at all",
    gzip.compress(b""),
    gzip.compress(b"another-format\tweight=1\toffset=0\tcap=1\n0.1\n"),
    gzip.compress(b"touchpoint-zh-ngrams-2\toffset=0\tcap=1\n0.1\n"),  # no weight
    gzip.compress(b"touchpoint-zh-ngrams-2\tweight=1\toffset=0\n0.1\n"),  # no cap
    gzip.compress(b"touchpoint-zh-ngrams-2\tweight=1\toffset=0\tcap=1\nbias\n"),
    gzip.compress("touchpoint-zh-ngrams-2\tweight=1\toffset=0\tcap=1\n0.1\n好\n".encode()),
    gzip.compress(b"\xff\xfe"),
])
def test_a_corrupt_model_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.tsv.gz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="cannot be read"):
        NgramModel.load(path)


def test_a_written_model_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "model.tsv.gz"
    path.write_bytes(gzip.compress(
        "touchpoint-zh-ngrams-2\tweight=0.5\toffset=1\tcap=2\tl2=0.001\n-0.25\n差\t2.0\n"
        "好\t-1.5\n".encode()))
    model = NgramModel.load(path)
    assert model.logit("差差") == pytest.approx(1.75)  # each distinct n-gram once
    assert model.logit("不好") == pytest.approx(-1.75)
    assert (model.weight, model.offset, model.cap) == (0.5, 1.0, 2.0)
    assert moved(model, -0.3, "差") < -0.3 < moved(model, -0.3, "好")


def test_adjust_keeps_the_lexicon_score_at_zero_weight() -> None:
    for value in (-0.9, -0.2, 0.0, 0.4):
        assert adjust(value, 3.0, 0.0, 0.0, 1.0) == pytest.approx(value)
    assert -1 < adjust(-1.0, 50.0, 2.0, 0.0, 1.0) < -0.99
    assert 0.99 < adjust(1.0, -50.0, 2.0, 0.0, 50.0) < 1


def test_the_pull_toward_no_complaint_is_capped() -> None:
    # However sure the model is that a text is no complaint, it moves the score no more
    # than its cap allows: a construction the lexicon found keeps the text flagged.
    assert adjust(-0.5, -40.0, 0.75, 0.0, 1.0) == adjust(-0.5, -1.0, 0.75, 0.0, 1.0)
    assert adjust(-0.5, -40.0, 0.75, 0.0, 1.0) <= FLAG
    # Toward a complaint it is not capped.
    assert adjust(0.0, 40.0, 0.75, 0.0, 1.0) < adjust(0.0, 4.0, 0.75, 0.0, 1.0) < FLAG


@pytest.mark.parametrize("text", [
    "希望尽快处理",  # a polite complaint: the construction still counts
    "不是很满意",  # negation over a degree word
    "质量太差了，再也不买了",
    "充电器插上去没反应，才用了三天",  # a fact, no sentiment word
    "下单五天了物流信息一直没更新",
])
def test_complaints_are_flagged(model: NgramModel, lexicon: Sentiment, text: str) -> None:
    assert moved(model, lexicon.score(text) or 0.0, text) <= FLAG


@pytest.mark.parametrize("text", [
    "服务很好，谢谢",
    "房间干净，早餐丰富",
    "询问门店营业时间。",
    "请问退款一般几天到账？",  # a question with a loaded word
    "麻烦帮我查一下订单",  # a polite request
])
def test_praise_questions_and_requests_are_not(model: NgramModel, lexicon: Sentiment,
                                                text: str) -> None:
    assert moved(model, lexicon.score(text) or 0.0, text) > FLAG


def test_the_analyzer_reads_a_fact_the_lexicon_misses(lexicon: Sentiment) -> None:
    text = "账单里多了一笔不认识的扣费"
    assert (lexicon.score(text) or 0.0) > FLAG
    assert (Sentiment().score(text) or 0.0) <= FLAG


def test_a_logit_is_the_same_bits_in_every_process() -> None:
    # A replay reads the same text in another process, whose string hashing differs.
    texts = ("等了两个小时还没人处理，客服电话一直占线，太失望了",
             "快递显示签收了但我没收到，麻烦尽快核实一下", "房间干净，早餐丰富，前台服务也很周到")
    code = ("from touchpoint.streams.rules.zh_model import NgramModel; m = NgramModel.load(); "
            f"print([m.logit(t).hex() for t in {texts!r}])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
               for seed in ("1", "2", "3", "4")}
    assert len(outputs) == 1, outputs
