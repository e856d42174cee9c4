"""Sentiment of call notes and feedback comments, English and Chinese."""

# Chinese notes are written with full-width punctuation, which RUF001 flags.
# ruff: noqa: RUF001

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from touchpoint.streams.rules import sentiment
from touchpoint.streams.rules.complaints import Rules
from touchpoint.streams.rules.sentiment import NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD, Sentiment

# What the complaint detector counts as negative text (complaints.toml [negative_text]).
FLAG = Rules.load().negative_text.threshold

#: Texts the shipped analyzer reads wrong and its lexicon alone reads right. The n-gram
#: model is judged on held-out text (bench/sentiment_bench.py), not on these examples.
MODEL_ERRORS = {
    "不好意思，刚才打错了": "the n-gram model reads 打错 (a wrong number) as a complaint",
}


@pytest.fixture(scope="module")
def analyzer() -> Sentiment:
    return Sentiment()


@pytest.fixture(scope="module")
def lexicon() -> Sentiment:
    """The lexicons and rules alone, without the Chinese n-gram model."""
    return Sentiment(model=False)


@pytest.fixture(scope="module", params=["lexicon", "shipped"])
def each(request: pytest.FixtureRequest, analyzer: Sentiment, lexicon: Sentiment) -> Sentiment:
    """The shipped analyzer, and its lexicons and rules alone: both must read these right."""
    return analyzer if request.param == "shipped" else lexicon


@pytest.mark.parametrize("text", [None, "", "   ", "\n\t"])
def test_empty_text_has_no_score(analyzer: Sentiment, text: str | None) -> None:
    assert analyzer.score(text) is None
    assert analyzer.label(text) is None
    assert analyzer.negative(text) is False


@pytest.mark.parametrize("text", [
    "The courier was rude and my parcel is damaged.",
    "I am not happy with this service at all.",
    "Terrible support, I want to cancel my contract.",
    "Great price but the staff were rude and unhelpful.",
    "CUSTOMER VERY ANGRY, third complaint this month",
])
def test_unhappy_english_scores_negative(analyzer: Sentiment, text: str) -> None:
    value = analyzer.score(text)
    assert value is not None and value <= NEGATIVE_THRESHOLD
    assert analyzer.label(text) == "negative"


@pytest.mark.parametrize("text", [
    "Thank you, the agent was wonderful and very helpful.",
    "Customer is happy with the new router.",
    "Not bad at all, the delivery was early.",
    "Slow start, but in the end the team was excellent.",
])
def test_happy_english_scores_positive(analyzer: Sentiment, text: str) -> None:
    value = analyzer.score(text)
    assert value is not None and value >= POSITIVE_THRESHOLD


@pytest.mark.parametrize("text", [
    "我要投诉，客服态度很差。",
    "不是很满意，包装也破了。",
    "等了太久，非常失望。",
    "送货速度还可以，但是售后服务太差了。",
    "对处理结果不满意。",
])
def test_unhappy_chinese_scores_negative(each: Sentiment, text: str) -> None:
    value = each.score(text)
    assert value is not None and value <= NEGATIVE_THRESHOLD


@pytest.mark.parametrize("text", [
    "服务很好，谢谢！",
    "客户对维修结果非常满意。",
    "店员很友好，强烈推荐。",
    "虽然等了一会儿，不过问题解决了，很满意。",
])
def test_happy_chinese_scores_positive(each: Sentiment, text: str) -> None:
    value = each.score(text)
    assert value is not None and value >= POSITIVE_THRESHOLD


@pytest.mark.parametrize("text", [
    "Customer called to change the delivery address.",
    "客户来电修改收货地址。",
    "询问门店营业时间。",
])
def test_factual_notes_are_neutral(each: Sentiment, text: str) -> None:
    assert each.label(text) == "neutral"


def test_negation_reverses_chinese_praise(each: Sentiment) -> None:
    praise = each.chinese("很满意")
    assert praise > 0
    assert each.chinese("不满意") < 0
    # Negation over a degree adverb is the milder "not very satisfied".
    assert each.chinese("很不满意") < each.chinese("不是很满意") < 0


@pytest.mark.parametrize("text", [
    # the polite complaints
    "希望尽快处理",
    "麻烦尽快",
    "请尽快给个说法",
    "麻烦尽快给我一个答复，谢谢",
    "请给我一个合理的解释。",
    "退款的事情麻烦帮忙催一下",
])
def test_polite_chinese_complaints_are_flagged(each: Sentiment, text: str) -> None:
    value = each.score(text)
    assert value is not None and value <= FLAG


@pytest.mark.parametrize("text", [
    "麻烦您帮我查一下订单",
    "麻烦帮我把地址改一下，谢谢",
    "打扰一下，请问门店几点关门？",
    "不好意思，刚才打错了",
    "希望周末能送货",
])
def test_polite_chinese_requests_are_not_flagged(each: Sentiment, analyzer: Sentiment, text: str,
                                                request: pytest.FixtureRequest) -> None:
    if each is analyzer and text in MODEL_ERRORS:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=MODEL_ERRORS[text]))
    value = each.score(text)
    assert value is not None and value > FLAG
    assert each.label(text) == "neutral"


@pytest.mark.parametrize("text", [
    "退款还没到账",
    "一直没收到货",
    "商家迟迟不发货",
    "约好的师傅到现在也没上门",
    "打了三次电话都没人处理",
    "手机开不了机",
    "上次反映的问题一直没有结果",
])
def test_chinese_service_that_has_not_happened_is_flagged(each: Sentiment,
                                                          text: str) -> None:
    value = each.score(text)
    assert value is not None and value <= FLAG


@pytest.mark.parametrize("text", [
    "这合理吗？",
    "到底什么时候才能退款？",
    "怎么又扣了我的钱？",
    "这已经是第三次出现了",
])
def test_chinese_rhetorical_questions_and_repeats_are_flagged(each: Sentiment,
                                                             text: str) -> None:
    value = each.score(text)
    assert value is not None and value <= FLAG


@pytest.mark.parametrize("text", [
    "不到一天就送到了，很快",
    "第二次购买了，还是很好",
    "快递到了，还没拆",
    "一般来说周末也送货",
])
def test_chinese_lookalikes_are_not_flagged(each: Sentiment, text: str) -> None:
    value = each.score(text)
    assert value is not None and value > FLAG


def test_emphatic_negation_is_stronger_than_plain(each: Sentiment) -> None:
    # 一点都不 is "not at all", not "a little".
    assert each.chinese("一点都不好用") < each.chinese("不好用") < 0


def test_negated_complaint_reads_as_praise(each: Sentiment) -> None:
    assert each.chinese("没什么不满意的，服务很周到") >= POSITIVE_THRESHOLD
    assert each.chinese("一点问题都没有") > 0


def test_closing_thanks_comforts_praise_but_not_a_complaint(lexicon: Sentiment) -> None:
    complaint = "麻烦尽快给我一个答复"
    assert lexicon.chinese(complaint + "，谢谢") == lexicon.chinese(complaint) < 0
    assert lexicon.chinese("东西很好，谢谢") > lexicon.chinese("东西很好") > 0


def test_contrast_weighs_the_clause_after_but(each: Sentiment) -> None:
    assert each.chinese("价格不错，但是质量太差") < 0
    assert each.chinese("质量太差，但是价格不错") > 0
    # Also inside one clause, with no punctuation before the contrast word.
    assert each.chinese("价格不错但是质量太差") < 0
    assert each.english("The price is good but the quality is bad") < 0


def test_text_without_cjk_is_scored_as_english(analyzer: Sentiment) -> None:
    text = "The refund never arrived and nobody answers."
    assert analyzer.score(text) == analyzer.english(text)


def test_chinese_with_a_latin_token_is_scored_as_chinese(analyzer: Sentiment) -> None:
    text = "APP一直闪退，很生气"
    assert analyzer.score(text) == analyzer.chinese(text)


def test_mixed_text_scores_each_language_and_weighs_by_length(lexicon: Sentiment) -> None:
    # The Chinese part carries no sentiment: the English part decides.
    neutral_zh = "客户来电说 the agent was rude and the problem is still not solved"
    assert lexicon.chinese(neutral_zh) == 0.0
    value = lexicon.score(neutral_zh)
    assert value is not None and value <= NEGATIVE_THRESHOLD
    # Both parts carry sentiment: the result lies between them.
    both = "客户非常满意 but the delivery was late and the box was damaged"
    zh = lexicon.chinese(both)
    en = lexicon.english("but the delivery was late and the box was damaged")
    assert zh > 0 > en
    value = lexicon.score(both)
    assert value is not None and en < value < zh


def test_scores_stay_within_bounds(analyzer: Sentiment) -> None:
    texts = ["awful " * 200, "great " * 200, "太差" * 200, "非常满意" * 200]
    values = [analyzer.score(text) for text in texts]
    assert all(value is not None and -1.0 <= value <= 1.0 for value in values)


def test_service_lexicon_can_be_left_out() -> None:
    general = Sentiment(domain=False)
    assert general.english("Issue unresolved.") == 0.0
    assert general.chinese("客户投诉有隐藏收费") > Sentiment().chinese("客户投诉有隐藏收费")
    # The service constructions go with it: general HowNet reads 希望 as hope.
    assert general.chinese("希望尽快处理") > 0 > Sentiment().chinese("希望尽快处理")


def test_negative_uses_the_given_threshold(analyzer: Sentiment) -> None:
    text = "The delivery was a bit slow."
    value = analyzer.score(text)
    assert value is not None and value < 0
    assert analyzer.negative(text, threshold=value) is True
    assert analyzer.negative(text, threshold=value - 0.01) is False


def test_label_boundaries() -> None:
    assert sentiment.label(NEGATIVE_THRESHOLD) == "negative"
    assert sentiment.label(0.0) == "neutral"
    assert sentiment.label(POSITIVE_THRESHOLD) == "positive"


def test_module_functions_share_one_analyzer() -> None:
    assert sentiment.shared() is sentiment.shared()
    assert sentiment.score(None) is None
    assert sentiment.negative("退款一直没到账，我要投诉") is True
    assert sentiment.negative("Thanks, all sorted!") is False


def test_concurrent_scoring_matches_sequential(analyzer: Sentiment) -> None:
    texts = ["排队太久了", "Great job, thanks", "客户说 the app crashed again，很生气",
             "Order confirmed."] * 50
    expected = [analyzer.score(text) for text in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(analyzer.score, texts)) == expected


def test_importing_the_module_loads_no_nlp_library() -> None:
    code = ("import sys, touchpoint.streams.rules.sentiment; "
            "print(sorted({'jieba', 'vader'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_chinese_parts_show_the_lexicon_and_the_model_apart(analyzer: Sentiment,
                                                            lexicon: Sentiment) -> None:
    text = "账单里多了一笔不认识的扣费"
    parts = analyzer.chinese_parts(text)
    assert parts is not None
    assert parts[0] == lexicon.chinese(text)
    assert analyzer.chinese(text) < parts[0]  # the model read a complaint the words do not show
    assert analyzer.chinese_parts("All good, thanks") is None
    assert lexicon.chinese_parts(text) is None
